"""Checkpoint folders: config.json + model.safetensors + stats.json. Nothing is ever unpickled.

The model id is a content hash of the three files, so a generator and a controller can tell whether they
hold the same model, and any edit to a checkpoint changes its id.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig

CHECKPOINT_VERSION = 1
FILES = ("config.json", "model.safetensors", "stats.json")


class CheckpointError(RuntimeError):
    """A checkpoint folder that is missing, corrupt, or does not match the code loading it."""


NUMERIC_STATS = ("action_mean", "action_std", "proprio_mean", "proprio_std")


@dataclass
class Stats:
    """Dataset statistics stored with the checkpoint: continuous action dims and proprio.

    `active_dims` says which continuous action dims the training data moved; the runtime commands exactly 0
    on the others (Meta-World's data never rotates, so a Meta-World model must never command rotation)."""

    action_mean: np.ndarray
    action_std: np.ndarray
    proprio_mean: np.ndarray
    proprio_std: np.ndarray
    active_dims: np.ndarray | None = None  # bool per continuous action dim; None: infer (older checkpoints)

    def active(self) -> np.ndarray:
        if self.active_dims is not None:
            return np.asarray(self.active_dims, bool)
        # Older checkpoints: a dim the data never moved got the placeholder mean 0, std 1 (std floored).
        return ~((self.action_std == 1.0) & (self.action_mean == 0.0))

    def to_dict(self) -> dict:
        d = {k: np.asarray(getattr(self, k), np.float32).tolist() for k in NUMERIC_STATS}
        d["active_dims"] = [bool(v) for v in self.active()]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Stats":
        s = cls(**{k: np.asarray(d[k], np.float32) for k in NUMERIC_STATS})
        for name in NUMERIC_STATS:
            if not np.isfinite(getattr(s, name)).all():
                raise CheckpointError(f"stats.json: {name} holds NaN or inf")
        if (s.action_std <= 0).any() or (s.proprio_std <= 0).any():
            raise CheckpointError("stats.json: std must be > 0")
        if "active_dims" in d:
            active = d["active_dims"]
            if not isinstance(active, list) or len(active) != len(s.action_std) or \
                    not all(isinstance(v, bool) for v in active):
                raise CheckpointError(f"stats.json: active_dims must be {len(s.action_std)} true/false values")
            s.active_dims = np.array(active, bool)
        else:
            warnings.warn("stats.json has no active_dims record (older checkpoint): action dims with mean 0 and "
                          f"std 1 are taken as never moved by the data and commanded as 0 ({_names(s.active())})",
                          stacklevel=2)
        return s

    @classmethod
    def identity(cls, cfg: ModelConfig) -> "Stats":
        n = cfg.action_dim - 1
        return cls(np.zeros(n), np.ones(n), np.zeros(cfg.proprio_dim), np.ones(cfg.proprio_dim), np.ones(n, bool))


ACTION_DIM_NAMES = ("x", "y", "z", "roll", "pitch", "yaw")


def _names(active: np.ndarray) -> str:
    names = ACTION_DIM_NAMES if len(active) == len(ACTION_DIM_NAMES) else [str(i) for i in range(len(active))]
    off = [n for n, a in zip(names, active) if not a]
    return "inactive: " + (", ".join(off) if off else "none")


def model_id(folder: pathlib.Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def save(folder: str | pathlib.Path, cfg: ModelConfig, lang_dim: int, state: dict[str, torch.Tensor],
         stats: Stats, extra: dict | None = None) -> str:
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"checkpoint_version": CHECKPOINT_VERSION, "lang_dim": lang_dim, "model": json.loads(cfg.to_json())}
    if extra:
        meta["extra"] = extra
    tmp = folder / "model.safetensors.tmp"  # write then rename: a crash never leaves a half checkpoint
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    tmp.replace(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    (folder / "stats.json").write_text(json.dumps(stats.to_dict(), indent=2))
    return model_id(folder)


@dataclass
class Loaded:
    cfg: ModelConfig
    lang_dim: int
    state: dict[str, torch.Tensor]
    stats: Stats
    model_id: str
    meta: dict


def load(folder: str | pathlib.Path, prefixes: tuple[str, ...] | None = None) -> Loaded:
    """Read a checkpoint; with `prefixes`, only tensors whose names start with one of them are read."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder}: no such folder")
    for name in FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder}: missing {name}")
    try:
        meta = json.loads((folder / "config.json").read_text())
        stats = Stats.from_dict(json.loads((folder / "stats.json").read_text()))
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: corrupt config.json or stats.json ({exc})") from exc
    if meta.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {folder}: version {meta.get('checkpoint_version')!r}, "
                              f"this code reads version {CHECKPOINT_VERSION}")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: config does not match this code ({exc})") from exc
    state = {}
    try:
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            for key in f.keys():
                if prefixes is None or key.startswith(prefixes):
                    state[key] = f.get_tensor(key)
    except Exception as exc:  # safetensors raises its own error types for truncated or garbled files
        raise CheckpointError(f"checkpoint {folder}: corrupt model.safetensors ({exc})") from exc
    for key, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"checkpoint {folder}: tensor {key} holds NaN or inf")
    return Loaded(cfg, int(meta["lang_dim"]), state, stats, model_id(folder), meta)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict with an error that names what does not match."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{where}: weights do not match the config (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]})")
    module.load_state_dict(state)
