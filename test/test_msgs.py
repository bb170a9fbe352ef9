"""Interfaces: every message and service round-trips through rclpy serialization; policy messages
convert to and from the core TaskPolicy and tampering is caught."""
import numpy as np
import pytest
from hypervla_core.runtime import Generator, Runtime
from hypervla_core.task_policy import PolicyFormatError
from hypervla_ros.image_conversion import rgb_to_image
from hypervla_ros.policy_msgs import from_msg, to_msg
from rclpy.serialization import deserialize_message, serialize_message

from hypervla_msgs.msg import (
    ActionChunk,
    ControllerStatus,
    EndEffectorAction,
    TaskPolicy,
    Tensor,
)
from hypervla_msgs.srv import GeneratePolicy


def _roundtrip(msg):
    again = deserialize_message(serialize_message(msg), type(msg))
    assert again == msg
    return again


def test_all_messages_round_trip():
    t = Tensor(name="b0.qkv.w", shape=[2, 3], dtype="float32", data=np.arange(24, dtype=np.uint8).tobytes())
    _roundtrip(t)
    _roundtrip(TaskPolicy(format_version=1, policy_id="ab" * 8, instruction="open the drawer", model_id="cd" * 8,
                          architecture='{"a": 1}', tensors=[t], action_horizon=4, action_dim=7,
                          action_mean=[0.1] * 6, action_std=[1.0] * 6, generation_time_ms=12.5))
    a = EndEffectorAction(gripper=1.0, policy_id="x")
    a.translation.x, a.rotation.z = 0.01, -0.2
    a.header.frame_id = "base"
    _roundtrip(a)
    _roundtrip(ActionChunk(policy_id="x", horizon=4, action_dim=7, actions=list(np.linspace(0, 1, 28)), step_period=0.02))
    _roundtrip(ControllerStatus(state=ControllerStatus.ESTOP, state_name="ESTOP", reason="e-stop latched",
                                deadline_misses=3, latency_p50_ms=1.5, latency_p99_ms=4.0))
    req = GeneratePolicy.Request(instruction="push the puck", has_first_image=True,
                                 first_image=rgb_to_image(np.zeros((4, 4, 3), np.uint8)))
    _roundtrip(req)
    _roundtrip(GeneratePolicy.Response(success=False, message="instruction is empty"))


def test_status_constants():
    assert [ControllerStatus.IDLE, ControllerStatus.WAITING_POLICY, ControllerStatus.RUNNING, ControllerStatus.STALE,
            ControllerStatus.ESTOP, ControllerStatus.FAULT] == list(range(6))


@pytest.fixture(scope="module")
def policy_pair(tiny_checkpoints):
    folder = tiny_checkpoints["hypervla"]
    return Generator.load(folder).generate("open the drawer"), Runtime.load(folder)


def test_policy_message_round_trip_through_the_wire(policy_pair):
    policy, rt = policy_pair
    msg = deserialize_message(serialize_message(to_msg(policy)), TaskPolicy)
    again = from_msg(msg).bind(rt)
    assert again.policy_id == policy.policy_id
    img = np.full((64, 64, 3), 100, np.uint8)
    np.testing.assert_array_equal(again.predict_chunk(img), policy.bind(rt).predict_chunk(img))


def test_tampered_policy_messages_are_rejected(policy_pair):
    policy, _ = policy_pair
    cases = {
        "altered": lambda m: m.tensors[0].data.__setitem__(0, (m.tensors[0].data[0] + 1) % 256),
        "bytes for shape": lambda m: setattr(m.tensors[0], "data", m.tensors[0].data[:-4]),
        "dtype": lambda m: setattr(m.tensors[0], "dtype", "float64"),
        "not supported": lambda m: setattr(m, "format_version", 2),
        "missing": lambda m: m.tensors.pop(),
        "not valid JSON": lambda m: setattr(m, "architecture", "{"),
        "disagree": lambda m: setattr(m, "action_horizon", 9),
        "appears twice": lambda m: m.tensors.append(m.tensors[0]),
    }
    for expected, tamper in cases.items():
        msg = deserialize_message(serialize_message(to_msg(policy)), TaskPolicy)
        tamper(msg)
        with pytest.raises(PolicyFormatError, match=expected):
            from_msg(msg)
