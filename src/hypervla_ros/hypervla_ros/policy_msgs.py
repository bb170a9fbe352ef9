"""hypervla_msgs/TaskPolicy <-> hypervla_core TaskPolicy (validation: hash, shapes, version, is the core's), and
EndEffectorAction <-> the 7-D action vector (xyz m, roll-pitch-yaw rad, gripper 0..1)."""
from __future__ import annotations

import array
import json

import numpy as np
from hypervla_core.task_policy import (
    DTYPES,
    FORMAT_VERSION,
    PolicyFormatError,
    TaskPolicy,
)

from hypervla_msgs.msg import EndEffectorAction
from hypervla_msgs.msg import TaskPolicy as TaskPolicyMsg
from hypervla_msgs.msg import Tensor


def to_msg(policy: TaskPolicy, stamp=None) -> TaskPolicyMsg:
    msg = TaskPolicyMsg()
    msg.format_version = FORMAT_VERSION
    msg.policy_id, msg.instruction, msg.model_id = policy.policy_id, policy.instruction, policy.model_id
    msg.architecture = json.dumps(policy.architecture, sort_keys=True)
    tensors = []
    for name, arr in policy.tensors.items():
        arr = np.ascontiguousarray(arr)
        # array.array takes rclpy's fast path; a bytes object would be checked element by element.
        tensors.append(Tensor(name=name, shape=list(arr.shape), dtype=arr.dtype.name,
                              data=array.array("B", arr.tobytes())))
    msg.tensors = tensors
    msg.action_horizon, msg.action_dim = policy.action_horizon, policy.action_dim
    msg.action_mean = policy.action_mean.tolist()
    msg.action_std = policy.action_std.tolist()
    msg.generation_time_ms = float(policy.generation_time_ms)
    if stamp is not None:
        msg.stamp = stamp
    return msg


def from_msg(msg: TaskPolicyMsg) -> TaskPolicy:
    """Rebuild and validate; raises PolicyFormatError naming what is wrong."""
    if msg.format_version != FORMAT_VERSION:
        raise PolicyFormatError(f"policy message format {msg.format_version} is not supported (expected {FORMAT_VERSION})")
    tensors = {}
    for t in msg.tensors:
        if t.dtype not in DTYPES:
            raise PolicyFormatError(f"tensor {t.name}: dtype {t.dtype!r} not in {DTYPES}")
        shape = tuple(int(s) for s in t.shape)
        expected = int(np.prod(shape)) * np.dtype(t.dtype).itemsize
        if len(t.data) != expected:
            raise PolicyFormatError(f"tensor {t.name}: {len(t.data)} bytes for shape {shape} {t.dtype} (expected {expected})")
        if t.name in tensors:
            raise PolicyFormatError(f"tensor {t.name} appears twice")
        tensors[t.name] = np.frombuffer(bytes(t.data), dtype=t.dtype).reshape(shape)
    try:
        architecture = json.loads(msg.architecture)
    except json.JSONDecodeError as exc:
        raise PolicyFormatError(f"architecture is not valid JSON: {exc}") from exc
    if architecture.get("action_horizon") != msg.action_horizon or architecture.get("action_dim") != msg.action_dim:
        raise PolicyFormatError("action horizon/dimension disagree with the architecture")
    return TaskPolicy(
        tensors=tensors, architecture=architecture, instruction=msg.instruction, model_id=msg.model_id,
        action_mean=np.asarray(msg.action_mean, np.float32), action_std=np.asarray(msg.action_std, np.float32),
        generation_time_ms=msg.generation_time_ms, policy_id=msg.policy_id,
    )


def action_msg(action, stamp_ns: int, policy_id: str = "") -> EndEffectorAction:
    """A 7-D action stamped with the frame it was computed from, in the base frame."""
    msg = EndEffectorAction(gripper=float(action[6]), policy_id=policy_id)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = "base"
    msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in action[:3])
    msg.rotation.x, msg.rotation.y, msg.rotation.z = (float(v) for v in action[3:6])
    return msg


def action_vector(msg) -> np.ndarray:
    """EndEffectorAction (rclpy or rosbags) -> the 7-D action."""
    t, r = msg.translation, msg.rotation
    return np.array([t.x, t.y, t.z, r.x, r.y, r.z, msg.gripper], np.float32)
