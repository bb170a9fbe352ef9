"""bag-to-dataset on bags written by the test (no DDS): episode splitting at the bridge's events, two cameras
stamped a little apart, and the errors a user meets (cameras out of step, an episode without commands)."""
import json

import h5py
import numpy as np
import pytest
from hypervla_ros.bag_to_dataset import convert
from hypervla_ros.bags import BagError, add_topic, open_writer, qos
from hypervla_ros.image_conversion import rgb_to_image
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from test_bags import _stamp

from hypervla_msgs.msg import EndEffectorAction

CAMS = ["/cameras/front/image_raw", "/cameras/wrist/image_raw"]


def arm_bag(path, episodes=(("success", 4),), wrist_lag_ns=5_000_000, commands=True, labels=None):
    """Per episode: a reset event, then per step: joints + both cameras (the wrist `wrist_lag_ns` late) and the
    action for that frame; then the end event. With `labels` (a step -> bool), a perturbing teacher's intended
    action too, for the steps it says (its translation.y = 1 + the step)."""
    w = open_writer(path)
    cams = [add_topic(w, t, "sensor_msgs/msg/Image", qos(False, False)) for t in CAMS]
    joints = add_topic(w, "/joint_states", "sensor_msgs/msg/JointState", qos(False, False))
    events = add_topic(w, "/libero_bridge/events", "std_msgs/msg/String", qos(True, True))
    act = add_topic(w, "/hypervla/action", "hypervla_msgs/msg/EndEffectorAction", qos(True, False))
    label = labels and add_topic(w, "/demonstrator/expert_action", "hypervla_msgs/msg/EndEffectorAction",
                                 qos(True, False))
    t = 1_700_000_000_000_000_000
    sent = []
    for e, (end, steps) in enumerate(episodes):
        t += 10_000_000
        w.write(events, t, serialize_message(String(data=json.dumps(
            {"event": "reset", "task": "put_the_bowl_on_the_stove", "instruction": "put the bowl on the stove",
             "init_index": e}))))
        for k in range(steps):
            t += 50_000_000
            js = JointState(name=[f"joint{i}" for i in range(9)], position=[float(k)] * 9, velocity=[0.0] * 9,
                            effort=[0.0] * 9)
            js.header.stamp = _stamp(t)
            w.write(joints, t, serialize_message(js))
            for i, cam in enumerate(cams):
                stamp = t + (wrist_lag_ns if i else 0)
                w.write(cam, stamp, serialize_message(rgb_to_image(np.full((8, 8, 3), 10 * k + i, np.uint8),
                                                                   _stamp(stamp))))
            if commands:
                a = EndEffectorAction(gripper=1.0)
                a.header.stamp = _stamp(t)
                a.translation.x = 0.001 * (k + 1)
                w.write(act, t + 2_000_000, serialize_message(a))
                sent.append(a.translation.x)
                if labels and labels(k):
                    a.translation.y = 1.0 + k
                    w.write(label, t + 1_000_000, serialize_message(a))
        w.write(events, t + 3_000_000, serialize_message(String(data=json.dumps(
            {"event": end, "success": end == "success"}))))
    w.close()
    return sent


def test_episodes_split_and_cameras_paired_within_the_skew(tmp_path):
    sent = arm_bag(tmp_path / "bag", episodes=(("success", 4), ("timeout", 3), ("success", 2)))
    report = convert([tmp_path / "bag"], tmp_path / "ds")
    assert report["episodes"] == 2 and report["dropped_unsuccessful"] == 1 and report["frames"] == 6
    assert report["cameras"] == ["front", "wrist"]
    with h5py.File(tmp_path / "ds" / "put_the_bowl_on_the_stove.hdf5") as f:
        d = f["data/demo_0"]
        np.testing.assert_allclose(d["actions"][:, 0], sent[:4])
        np.testing.assert_array_equal(d["obs/joint_states"][:, 0], [0, 1, 2, 3])
        # the wrist frame 5 ms after the front one belongs to the same step
        assert [int(d["obs/wrist_rgb"][k, 0, 0, 0]) for k in range(4)] == [1, 11, 21, 31]
        assert [int(d["obs/front_rgb"][k, 0, 0, 0]) for k in range(4)] == [0, 10, 20, 30]
        assert f["data/demo_1"].attrs["init_index"] == 2


def test_a_perturbing_teachers_intended_actions_are_kept(tmp_path):
    arm_bag(tmp_path / "bag", labels=lambda k: True)
    convert([tmp_path / "bag"], tmp_path / "ds")
    with h5py.File(tmp_path / "ds" / "put_the_bowl_on_the_stove.hdf5") as f:
        np.testing.assert_array_equal(f["data/demo_0/actions"][:, 1], [1, 2, 3, 4])
    convert([tmp_path / "bag"], tmp_path / "executed", label_topic="")  # asked for what was executed instead
    with h5py.File(tmp_path / "executed" / "put_the_bowl_on_the_stove.hdf5") as f:
        np.testing.assert_array_equal(f["data/demo_0/actions"][:, 1], [0, 0, 0, 0])
    # a step the teacher's record lacks is not filled in with the perturbed action: an error, nothing written
    arm_bag(tmp_path / "gap", labels=lambda k: k != 2)
    with pytest.raises(BagError, match="teacher's actions but none for the step"):
        convert([tmp_path / "gap"], tmp_path / "ds_gap")
    assert not list((tmp_path / "ds_gap").glob("*.hdf5"))


def test_cameras_out_of_step_are_an_error(tmp_path):
    arm_bag(tmp_path / "bag", wrist_lag_ns=40_000_000)
    with pytest.raises(BagError, match="cannot be synchronized"):
        convert([tmp_path / "bag"], tmp_path / "ds", max_skew_s=0.02)


def test_an_episode_that_ended_without_commands_is_an_error(tmp_path):
    arm_bag(tmp_path / "bag", commands=False)
    with pytest.raises(BagError, match="without a single command"):
        convert([tmp_path / "bag"], tmp_path / "ds")
