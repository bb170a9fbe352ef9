"""Action post-processing on the robot side: bounded actions and a rate limit. Pure numpy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SafetyLimits:
    max_translation: float = 0.02  # metres per step, per axis
    max_rotation: float = 0.1  # radians per step, per axis
    max_step_change: float = 0.01  # largest change of any continuous dim between consecutive steps

    def bounds(self) -> np.ndarray:
        return np.array([self.max_translation] * 3 + [self.max_rotation] * 3, np.float32)


LIMIT_KEYS = ("max_translation", "max_rotation", "max_step_change")


def controller_limits(params_file) -> SafetyLimits:
    """The limits the robot runs under: config/hypervla.yaml's policy_controller parameters with `params_file`'s
    over them (a whole params file, or an overrides file such as config/libero_demo.yaml)."""
    import yaml

    from .sim import tasks_file

    values = {}
    for path in (tasks_file("hypervla.yaml"), params_file):
        section = (yaml.safe_load(open(path)) or {}).get("policy_controller", {}).get("ros__parameters", {})
        values.update({k: float(section[k]) for k in LIMIT_KEYS if k in section})
    missing = [k for k in LIMIT_KEYS if k not in values]
    if missing:
        raise ValueError(f"{params_file}: no policy_controller {missing} here or in config/hypervla.yaml")
    return SafetyLimits(**values)


class LimitedPolicy:
    """A task policy behind the controller's SafetyFilter, as `hypervla eval --limits` runs it: in process, the
    actions the robot would get. Counts the steps whose action the filter changed (`limited`)."""

    def __init__(self, policy, limits: SafetyLimits):
        self.policy, self.filter, self.limited = policy, SafetyFilter(limits), 0

    def step(self, image, proprio=None) -> np.ndarray:
        raw = self.policy.step(image, proprio)
        action = self.filter(raw)  # the limits never change mid-episode here, so never None
        self.limited += bool(np.abs(action[:6] - raw[:6]).max() > 1e-6)
        return action


class SafetyFilter:
    """Clamp each dimension, limit the change from the previous command, snap the gripper to {0, 1}.

    Raises ValueError on NaN/inf: such an action is never published. Returns None when no command can
    satisfy both the clamps and the step limit from the previous command (the limits were just lowered below
    it): the caller then stops the arm, and the next command ramps up from rest.
    """

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self._bounds = limits.bounds()
        self._step = limits.max_step_change
        self._last: np.ndarray | None = None

    def reset(self) -> None:
        """After a stop: the next command starts from rest."""
        self._last = None

    def set_limits(self, limits: SafetyLimits) -> None:
        """New limits (an operator's `ros2 param set`): the next command obeys both the old and the new ones."""
        self._bounds = np.minimum(self._bounds, limits.bounds())
        self._step = min(self._step, limits.max_step_change)
        self.limits = limits

    def __call__(self, action: np.ndarray) -> np.ndarray | None:
        action = np.asarray(action, np.float32)
        if action.shape != (7,):
            raise ValueError(f"action must have 7 entries, got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError("action holds NaN or inf")
        last = np.zeros(6, np.float32) if self._last is None else self._last
        lo = np.maximum(-self._bounds, last - self._step)
        hi = np.minimum(self._bounds, last + self._step)
        self._bounds, self._step = self.limits.bounds(), self.limits.max_step_change  # any old limits are spent
        if (lo > hi).any():
            return None
        cont = np.clip(action[:6], lo, hi).astype(np.float32)
        self._last = cont
        return np.concatenate([cont, [1.0 if action[6] >= 0.5 else 0.0]]).astype(np.float32)
