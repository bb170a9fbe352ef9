"""The task policy: what the hypernetwork hands to the robot, and how the robot runs it.

A TaskPolicy is plain data (generated tensors, architecture spec, normalization, ids) plus, once bound to a
Runtime (shared vision encoder + base-policy function, no hypernetwork, no language model), a `step` that
turns camera frames into 7-D end-effector actions with temporal ensembling over overlapping chunks.
"""
from __future__ import annotations

import hashlib
import json
import struct
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import safetensors.numpy

FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
MAX_POLICY_BYTES = 256 * 1024 * 1024


class PolicyFormatError(ValueError):
    """A serialized or received policy that must not be run (corrupt, tampered, or for another model)."""


def _digest(architecture: dict, model_id: str, tensors: dict[str, np.ndarray], mean: np.ndarray,
            std: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(architecture, sort_keys=True).encode())
    h.update(model_id.encode())
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{t.dtype.name}|{t.shape}".encode())
        h.update(t.tobytes())
    h.update(np.asarray(mean, np.float32).tobytes())
    h.update(np.asarray(std, np.float32).tobytes())
    return h.hexdigest()[:16]


@dataclass
class TaskPolicy:
    tensors: dict[str, np.ndarray]
    architecture: dict  # {"model_type", "tensors": {name: shape}, "action_horizon", "action_dim", ...}
    instruction: str
    model_id: str
    action_mean: np.ndarray
    action_std: np.ndarray
    generation_time_ms: float = 0.0
    policy_id: str = ""
    runtime: "object | None" = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.action_mean = np.asarray(self.action_mean, np.float32)
        self.action_std = np.asarray(self.action_std, np.float32)
        self.validate()  # structure first: its errors say more than a hash mismatch
        content_id = self.content_id()
        if self.policy_id and self.policy_id != content_id:
            raise PolicyFormatError(f"policy id {self.policy_id} does not match its content ({content_id}): "
                                    "the policy was altered in transit")
        self.policy_id = content_id
        self._ensembler: ChunkEnsembler | None = None
        self._task = None

    @property
    def action_horizon(self) -> int:
        return int(self.architecture["action_horizon"])

    @property
    def action_dim(self) -> int:
        return int(self.architecture["action_dim"])

    def content_id(self) -> str:
        return _digest(self.architecture, self.model_id, self.tensors, self.action_mean, self.action_std)

    def validate(self) -> None:
        spec = self.architecture.get("tensors")
        if not isinstance(spec, dict):
            raise PolicyFormatError("architecture has no tensor spec")
        if set(spec) != set(self.tensors):
            missing, extra = sorted(set(spec) - set(self.tensors)), sorted(set(self.tensors) - set(spec))
            raise PolicyFormatError(f"tensor names do not match the architecture (missing {missing}, extra {extra})")
        for name, shape in spec.items():
            t = self.tensors[name]
            if tuple(t.shape) != tuple(shape):
                raise PolicyFormatError(f"tensor {name}: shape {tuple(t.shape)} != architecture {tuple(shape)}")
            if t.dtype.name not in DTYPES:
                raise PolicyFormatError(f"tensor {name}: dtype {t.dtype.name} not in {DTYPES}")
            if not np.isfinite(t).all():
                raise PolicyFormatError(f"tensor {name} holds NaN or inf")
        n = self.action_dim - 1
        if self.action_mean.shape != (n,) or self.action_std.shape != (n,):
            raise PolicyFormatError(f"normalization must have {n} entries per statistic")
        if not (np.isfinite(self.action_mean).all() and np.isfinite(self.action_std).all()) or (self.action_std <= 0).any():
            raise PolicyFormatError("normalization statistics must be finite with std > 0")

    # -- serialization: a safetensors blob; metadata holds everything else; the content hash is checked on load.

    def to_bytes(self) -> bytes:
        meta = {
            "format_version": str(FORMAT_VERSION), "policy_id": self.policy_id, "instruction": self.instruction,
            "model_id": self.model_id, "architecture": json.dumps(self.architecture, sort_keys=True),
            "action_mean": json.dumps(self.action_mean.tolist()), "action_std": json.dumps(self.action_std.tolist()),
            "generation_time_ms": repr(float(self.generation_time_ms)),
        }
        return safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in self.tensors.items()}, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes, runtime=None) -> "TaskPolicy":
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyFormatError(f"policy blob of {len(data)} bytes exceeds {MAX_POLICY_BYTES}")
        try:
            (n,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8:8 + n])
            meta = header.get("__metadata__") or {}
            if not isinstance(meta, dict):
                raise TypeError("__metadata__ is not a mapping")
            tensors = safetensors.numpy.load(data)
        except Exception as exc:  # the library raises several types for a corrupt blob
            raise PolicyFormatError(f"corrupt policy blob: {exc}") from exc
        version = meta.get("format_version")
        if version != str(FORMAT_VERSION):
            raise PolicyFormatError(f"policy format version {version!r} is not supported (expected {FORMAT_VERSION})")
        try:
            policy = cls(
                tensors=tensors, architecture=json.loads(meta["architecture"]), instruction=meta["instruction"],
                model_id=meta["model_id"], action_mean=json.loads(meta["action_mean"]),
                action_std=json.loads(meta["action_std"]), generation_time_ms=float(meta["generation_time_ms"]),
                policy_id=meta["policy_id"],
            )
        except PolicyFormatError:
            raise
        except (KeyError, ValueError, TypeError, AttributeError) as exc:  # ValueError covers JSON and float parsing
            raise PolicyFormatError(f"policy metadata incomplete or malformed: {exc}") from exc
        if runtime is not None:
            policy.bind(runtime)
        return policy

    # -- execution

    def bind(self, runtime) -> "TaskPolicy":
        """Attach to a Runtime; rejects a policy made by another model or for another architecture."""
        runtime.check_compatible(self)
        self.runtime = runtime
        self._task = runtime.prepare(self.tensors)
        self._ensembler = ChunkEnsembler(self.action_horizon)
        return self

    def reset(self) -> None:
        """Start of an episode or a task switch: forget earlier chunks."""
        if self._ensembler is not None:
            self._ensembler.reset()

    def predict_chunk(self, image: np.ndarray, proprio: np.ndarray | None = None) -> np.ndarray:
        """One forward pass: (horizon, action_dim) in robot units, gripper as close probability."""
        if self.runtime is None:
            raise RuntimeError("TaskPolicy is not bound to a Runtime: call bind(runtime) first")
        chunk, grip = self.runtime.act(self._task, image, proprio)
        # Dims the training data never moved are commanded as exactly 0 (the runtime's checkpoint says which).
        cont = np.where(self.runtime.active_dims, chunk[0] * self.action_std + self.action_mean, 0.0)
        prob = 1.0 / (1.0 + np.exp(-grip[0]))
        return np.concatenate([cont, prob[:, None]], axis=1).astype(np.float32)

    def step(self, image: np.ndarray, proprio: np.ndarray | None = None) -> np.ndarray:
        """Camera frame (H, W, 3) uint8 RGB -> 7-D action (xyz m, rpy rad, gripper 0 open / 1 closed)."""
        return self.step_with_chunk(image, proprio)[0]

    def step_with_chunk(self, image, proprio=None) -> tuple[np.ndarray, np.ndarray]:
        chunk = self.predict_chunk(image, proprio)
        action = self._ensembler.push(chunk)
        action[-1] = 1.0 if action[-1] >= 0.5 else 0.0
        return action, chunk


class ChunkEnsembler:
    """Temporal ensembling: the action for step t is the uniform mean of every stored chunk's prediction for t."""

    def __init__(self, horizon: int):
        self.horizon = horizon
        self.chunks: deque[np.ndarray] = deque(maxlen=horizon)

    def reset(self) -> None:
        self.chunks.clear()

    def push(self, chunk: np.ndarray) -> np.ndarray:
        self.chunks.append(chunk)
        # chunks[-1 - age] was predicted `age` steps ago; its entry `age` is for now.
        preds = [self.chunks[-1 - age][age] for age in range(len(self.chunks))]
        return np.mean(preds, axis=0).astype(np.float32)
