"""Ed25519 signatures over task policies: only a generator holding a trusted key can move the arm.

The content hash in a TaskPolicy catches corruption; it cannot tell the real generator from any other
process on the DDS domain that serves the same service. The generator signs (policy id, model id,
instruction) with its private key; the controller accepts only signatures by keys in its trusted list.

Files: `hypervla keygen OUT` writes OUT (private key, PEM PKCS#8, mode 0600) and OUT.pub (one line,
`ed25519 <64 hex digits> <comment>`). A trusted-keys file holds any number of such lines.
"""
from __future__ import annotations

import hashlib
import os
import pathlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .task_policy import PolicyFormatError

DOMAIN = b"hypervla task policy v1\0"  # so a signature over a policy can never be taken for anything else


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(out: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Write a new key pair; refuses to overwrite an existing private key."""
    out = pathlib.Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first or choose another name")
    out.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = out.with_name(out.name + ".pub")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub.write_text(f"ed25519 {raw.hex()} hypervla-{key_id(key.public_key())}\n")
    return out, pub


def load_private(path: str | pathlib.Path) -> Ed25519PrivateKey:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"signing key {path} not found (make one with `hypervla keygen {path}`)")
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"signing key {path} is readable by others (chmod 600 {path})")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key {path} is not an Ed25519 key")
    return key


def load_trusted(path: str | pathlib.Path) -> dict[str, Ed25519PublicKey]:
    """Trusted public keys by key id, from lines `ed25519 <hex> [comment]` (# comments and blanks skipped)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trusted keys file {path} not found")
    keys = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        try:
            if words[0] != "ed25519" or len(words) < 2:
                raise ValueError("expected `ed25519 <64 hex digits> [comment]`")
            public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(words[1]))
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: not a public key ({exc})") from exc
        keys[key_id(public)] = public
    if not keys:
        raise ValueError(f"trusted keys file {path} holds no key")
    return keys


def message(policy_id: str, model_id: str, instruction: str) -> bytes:
    return DOMAIN + b"\0".join(s.encode() for s in (policy_id, model_id, instruction))


def sign(key: Ed25519PrivateKey, policy) -> tuple[str, bytes]:
    """(key id, signature) over the policy's content id, model id and instruction."""
    return key_id(key.public_key()), key.sign(message(policy.policy_id, policy.model_id, policy.instruction))


def verify(trusted: dict[str, Ed25519PublicKey], signer: str, signature: bytes, policy) -> None:
    """Raises PolicyFormatError unless a trusted key signed exactly this policy (its content id is the hash
    the TaskPolicy already checked, so the signature covers the weights too)."""
    if not signature:
        raise PolicyFormatError("policy is unsigned (require_signed_policies is on)")
    public = trusted.get(signer)
    if public is None:
        raise PolicyFormatError(f"policy is signed by unknown key {signer[:16]!r}")
    try:
        public.verify(signature, message(policy.policy_id, policy.model_id, policy.instruction))
    except InvalidSignature:
        raise PolicyFormatError("policy signature does not match its content, model or instruction") from None
