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


class SafetyFilter:
    """Clamp each dimension, limit the change from the previous command, snap the gripper to {0, 1}.

    Raises ValueError on NaN/inf: such an action is never published.
    """

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self._bounds = limits.bounds()
        self._last: np.ndarray | None = None

    def reset(self) -> None:
        """After a stop: the next command starts from rest."""
        self._last = None

    def __call__(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, np.float32)
        if action.shape != (7,):
            raise ValueError(f"action must have 7 entries, got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError("action holds NaN or inf")
        cont = np.clip(action[:6], -self._bounds, self._bounds)
        last = np.zeros(6, np.float32) if self._last is None else self._last
        step = self.limits.max_step_change
        cont = np.clip(cont, last - step, last + step)
        self._last = cont
        return np.concatenate([cont, [1.0 if action[6] >= 0.5 else 0.0]]).astype(np.float32)
