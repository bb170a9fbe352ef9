"""What an arm driver does with incoming end-effector commands, without ROS (the bridge's decisions).

Two inputs, as on a real arm: a per-step delta (EndEffectorAction: metres and radians for one control period)
and a velocity in MoveIt Servo's convention (TwistStamped on ~/delta_twist_cmds: m/s and rad/s, in the frame
its header names). A delta moves the arm for one period; a twist keeps moving it until it is replaced or
older than `timeout_s` (Servo's incoming_command_timeout). With no fresh command the arm holds: no motion,
the grip kept, so a stopped teleoperator or a dead controller never leaves the arm moving or drops an object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

BASE_FRAMES = ("", "base", "world", "panda_link0", "robot0_base")
EE_FRAMES = ("ee", "eef", "panda_hand", "tool0", "robot0_eef")


def twist_to_action(linear, angular, period_s: float, frame: str, ee_quat_xyzw=None,
                    gripper: float = 0.0) -> np.ndarray:
    """A twist held for one period -> a 7-D delta action in the base frame (rotation as roll-pitch-yaw)."""
    v, w = np.asarray(linear, np.float64), np.asarray(angular, np.float64)
    if v.shape != (3,) or w.shape != (3,) or not (np.isfinite(v).all() and np.isfinite(w).all()):
        raise ValueError("twist needs 3 finite linear and 3 finite angular values")
    if frame in EE_FRAMES:
        if ee_quat_xyzw is None:
            raise ValueError(f"twist in frame {frame!r} before the end-effector pose is known")
        r = Rotation.from_quat(ee_quat_xyzw)
        v, w = r.apply(v), r.apply(w)
    elif frame not in BASE_FRAMES:
        raise ValueError(f"twist frame {frame!r} unknown: use one of {BASE_FRAMES[1:] + EE_FRAMES}")
    rpy = Rotation.from_rotvec(w * period_s).as_euler("xyz")
    return np.concatenate([v * period_s, rpy, [gripper]]).astype(np.float32)


@dataclass
class _Command:
    action: np.ndarray
    received_s: float
    persistent: bool  # a twist: applies every period until the timeout


class ServoInput:
    def __init__(self, timeout_s: float = 0.1):
        self.timeout_s = timeout_s
        self.command: _Command | None = None
        self.gripper = 0.0  # the last commanded grip, kept while holding

    def clear(self) -> None:
        """A new episode: no command, the grip open."""
        self.command, self.gripper = None, 0.0

    def on_delta(self, action, now_s: float) -> None:
        a = np.asarray(action, np.float32)
        if a.shape != (7,) or not np.isfinite(a).all():
            raise ValueError(f"action needs 7 finite values, got {a.shape}")
        self.command = _Command(a, now_s, persistent=False)
        self.gripper = float(a[6])

    def on_twist(self, linear, angular, period_s: float, frame: str, now_s: float, ee_quat_xyzw=None) -> None:
        a = twist_to_action(linear, angular, period_s, frame, ee_quat_xyzw, self.gripper)
        self.command = _Command(a, now_s, persistent=True)

    def set_gripper(self, value: float) -> None:
        self.gripper = float(np.clip(value, 0.0, 1.0))
        if self.command is not None:
            self.command.action[6] = self.gripper

    def take(self, now_s: float) -> np.ndarray | None:
        """The action for the period starting now, or None: hold (no fresh command)."""
        cmd = self.command
        if cmd is None or now_s - cmd.received_s > self.timeout_s:
            self.command = None
            return None
        if not cmd.persistent:
            self.command = None
        return cmd.action.copy()

    def hold_action(self) -> np.ndarray:
        return np.array([0, 0, 0, 0, 0, 0, self.gripper], np.float32)
