"""The LIBERO Panda bridge as a 7-DoF arm driver: real robosuite/MuJoCo physics and rendering over DDS.

Separate camera topics with one stamp per step, joint states and the end-effector pose; a Servo twist held for
one period moves the arm exactly like the same EndEffectorAction; with no fresh command the arm holds."""
import json
import os
import subprocess
import sys

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from hypervla_core.libero_env import SAMPLED_INITS
from hypervla_msgs.msg import EndEffectorAction
from hypervla_ros.bringup import Stack
from hypervla_ros.node_config import LATCHED, stamp_ns
from hypervla_ros.policy_msgs import action_msg
from ros_helpers import ROOT, Spinner, wait_until, write_config

CAMERAS = ("agentview", "robot0_eye_in_hand")
TASK = "put the bowl on the stove"


class ArmProbe(Node):
    """The other side of the driver: records what the bridge publishes, sends commands for its newest frame."""

    def __init__(self):
        super().__init__("arm_probe")
        self.frames = {c: [] for c in CAMERAS}
        self.joints, self.poses, self.events = [], [], []
        for c in CAMERAS:
            self.create_subscription(Image, f"/cameras/{c}/image_raw", lambda m, c=c: self.frames[c].append(m),
                                     qos_profile_sensor_data)
        self.create_subscription(JointState, "/joint_states", self.joints.append, qos_profile_sensor_data)
        self.create_subscription(PoseStamped, "/ee_pose", self.poses.append, qos_profile_sensor_data)
        self.create_subscription(String, "/libero_bridge/events", lambda m: self.events.append(json.loads(m.data)),
                                 LATCHED)
        self.action_pub = self.create_publisher(EndEffectorAction, "/hypervla/action", 10)
        self.twist_pub = self.create_publisher(TwistStamped, "/libero_bridge/delta_twist_cmds", 10)
        self.reset_client = self.create_client(Trigger, "/libero_bridge/reset")
        self.params = self.create_client(SetParameters, "/libero_bridge/set_parameters")

    def newest_stamp(self) -> int:
        return stamp_ns(self.joints[-1].header.stamp) if self.joints else 0

    def reset_to(self, init_index: int) -> None:
        assert self.params.wait_for_service(20) and self.reset_client.wait_for_service(20)
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=init_index)
        fut = self.params.call_async(SetParameters.Request(parameters=[Parameter(name="init_index", value=value)]))
        assert wait_until(fut.done, 20) and fut.result().results[0].successful
        before = self.newest_stamp()
        fut = self.reset_client.call_async(Trigger.Request())
        assert wait_until(fut.done, 60) and fut.result().success, fut.result()
        assert json.loads(fut.result().message)["init_index"] == init_index
        assert wait_until(lambda: self.newest_stamp() > before, 20)

    def step_with(self, send) -> np.ndarray:
        """Send one command for the newest frame; wait for the frame after it; return its joint positions."""
        before = self.newest_stamp()
        send(before)
        assert wait_until(lambda: self.newest_stamp() > before, 30), "the bridge did not step"
        return np.array(self.joints[-1].position)

    def action(self, stamp: int, a) -> None:
        self.action_pub.publish(action_msg(a, stamp))

    def twist(self, linear, angular, frame="base") -> None:
        msg = TwistStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = frame
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in angular)
        self.twist_pub.publish(msg)


def test_cameras_joint_states_and_twist_equals_the_same_action(ros, tmp_path):
    config = write_config(tmp_path, "unused", libero_bridge={"task": TASK, "image_size": 48, "real_time": False})
    with Stack(config, log_dir=str(tmp_path / "logs")) as stack:
        stack.start("libero")
        probe = ArmProbe()
        spinner = Spinner(probe)
        try:
            assert wait_until(lambda: all(probe.frames.values()) and probe.poses, 120), "no frames from the bridge"
            assert probe.events[0]["event"] == "reset" and probe.events[0]["instruction"] == TASK
            # one image per camera per step: its own frame_id, the same stamp as the joints and the pose
            stamp = probe.newest_stamp()
            assert wait_until(lambda: all(any(stamp_ns(m.header.stamp) == stamp for m in probe.frames[c])
                                          for c in CAMERAS), 10)
            for c in CAMERAS:
                m = next(m for m in probe.frames[c] if stamp_ns(m.header.stamp) == stamp)
                assert m.header.frame_id == c and (m.width, m.height, m.encoding) == (48, 48, "rgb8")
            assert len(probe.joints[-1].name) == 9 and probe.joints[-1].name[0] == "panda_joint1"
            views = [np.frombuffer(probe.frames[c][-1].data, np.uint8) for c in CAMERAS]
            assert not np.array_equal(*views)  # two different cameras, not one image twice

            delta = np.array([0.01, -0.006, -0.008, 0.0, 0.0, 0.08, 0.0])
            period = 1 / 20
            probe.reset_to(3)
            start = np.array(probe.joints[-1].position)
            by_action = [probe.step_with(lambda s: probe.action(s, delta)) for _ in range(4)]
            probe.reset_to(3)
            np.testing.assert_allclose(probe.joints[-1].position, start, atol=1e-6)  # the same initial state
            by_twist = [probe.step_with(lambda s: probe.twist(delta[:3] / period, [0, 0, delta[5] / period]))
                        for _ in range(4)]
            assert np.abs(by_action[-1] - start).max() > 0.01  # the arm moved
            np.testing.assert_allclose(by_twist, by_action, atol=1e-5)
            # a twist in a frame the driver does not know is refused: no step
            before = probe.newest_stamp()
            probe.twist([0.1, 0, 0], [0, 0, 0], frame="camera_link")
            assert not wait_until(lambda: stamp_ns(probe.joints[-1].header.stamp) > before
                                  and not np.allclose(probe.joints[-1].position, by_twist[-1]), 2.0)
            assert stack.alive("libero")
        finally:
            spinner.close()


def test_the_arm_holds_when_commands_stop(ros, tmp_path):
    config = write_config(tmp_path, "unused", libero_bridge={"task": TASK, "image_size": 32, "real_time": True})
    with Stack(config, log_dir=str(tmp_path / "logs")) as stack:
        stack.start("libero")
        probe = ArmProbe()
        spinner = Spinner(probe)
        try:
            assert wait_until(lambda: len(probe.poses) > 3, 120), "no pose from the bridge"

            def x():
                return probe.poses[-1].pose.position.x

            x0 = x()
            for _ in range(60):  # 3 s of a 0.1 m/s twist at 20 Hz: the arm moves
                probe.twist([0.1, 0, 0], [0, 0, 0])
                wait_until(lambda: False, 0.05)
            moved = x() - x0
            assert moved > 0.001, moved
            stopped = len(probe.poses)
            assert wait_until(lambda: len(probe.poses) > stopped + 5, 30)  # the driver goes on stepping (holding)
            x1, n1 = x(), len(probe.poses)
            assert wait_until(lambda: len(probe.poses) > n1 + 10, 30)
            assert abs(x() - x1) < max(0.0005, 0.25 * moved), (moved, x1, x())  # no motion without a fresh command
        finally:
            spinner.close()


def test_demonstrations_recorded_as_a_bag_become_a_training_set(ros, tmp_path):
    """bridge + record over DDS, one episode driven by EndEffectorActions and one by twists, converted."""
    import h5py
    import pytest

    from hypervla_core.servo import twist_to_action
    from hypervla_ros.bag_to_dataset import convert
    from hypervla_ros.bags import BagError

    topics = [f"/cameras/{c}/image_raw" for c in CAMERAS] + [
        "/joint_states", "/ee_pose", "/hypervla/action", "/libero_bridge/delta_twist_cmds", "/libero_bridge/events"]
    config = write_config(tmp_path, "unused",
                          libero_bridge={"task": TASK, "image_size": 32, "real_time": False, "max_steps": 5},
                          record={"output": str(tmp_path / "bag"), "topics": topics})
    rng = np.random.default_rng(0)
    sent = {"action": [], "twist": []}
    with Stack(config, log_dir=str(tmp_path / "logs")) as stack:
        stack.start("libero", "record")
        probe = ArmProbe()
        spinner = Spinner(probe)
        try:
            assert wait_until(lambda: all(probe.frames.values()), 120), "no frames from the bridge"
            wait_until(lambda: False, 3.0)  # the recorder discovers the topics
            probe.reset_to(2)
            stamps = []
            for k in range(5):
                a = np.concatenate([rng.uniform(-0.01, 0.01, 6), [1.0]]).astype(np.float32)
                sent["action"].append(a)
                stamps.append(probe.newest_stamp())
                if k < 4:
                    probe.step_with(lambda s, a=a: probe.action(s, a))
                else:  # the last one ends the episode: no frame follows
                    probe.action(stamps[-1], a)
            assert wait_until(lambda: probe.events[-1]["event"] == "timeout", 30), probe.events[-1]
            probe.reset_to(4)
            for k in range(5):
                lin, ang = rng.uniform(-0.2, 0.2, 3), rng.uniform(-1, 1, 3)
                sent["twist"].append(twist_to_action(lin, ang, 0.05, "base", gripper=0.0))
                if k < 4:
                    probe.step_with(lambda s: probe.twist(lin, ang))
                else:
                    probe.twist(lin, ang)
            assert wait_until(lambda: probe.events[-1]["event"] == "timeout", 30), probe.events[-1]
            wait_until(lambda: False, 1.0)
        finally:
            spinner.close()
            stack.stop("record")
    frames_by_stamp = {c: {stamp_ns(m.header.stamp): np.frombuffer(m.data, np.uint8).reshape(32, 32, 3)
                           for m in probe.frames[c]} for c in CAMERAS}

    with pytest.raises(BagError, match="no episode to write"):  # both attempts timed out: dropped, and said so
        convert([tmp_path / "bag"], tmp_path / "ds_ok")
    report = convert([tmp_path / "bag"], tmp_path / "ds", keep_failed=True)
    assert report["episodes"] == 2 and report["frames"] == 10 and report["cameras"] == list(CAMERAS)
    task = "put_the_bowl_on_the_stove"
    with h5py.File(tmp_path / "ds" / f"{task}.hdf5") as f:
        assert json.loads(f.attrs["cameras"]) == list(CAMERAS) and f.attrs["rate_hz"] == 20.0
        assert json.loads(f.attrs["sources"]) == [str(tmp_path / "bag")]
        demos = [f["data/demo_0"], f["data/demo_1"]]
        assert [d.attrs["init_index"] for d in demos] == [2, 4]
        assert all(d.attrs["success"] == False for d in demos)  # noqa: E712 (h5py gives numpy bools)
        assert demos[0].attrs["language_instruction"] == TASK
        np.testing.assert_allclose(demos[0]["actions"][:], np.stack(sent["action"]), atol=1e-7)
        np.testing.assert_allclose(demos[1]["actions"][:], np.stack(sent["twist"]), atol=1e-6)
        for d in demos:
            assert d["obs/joint_states"].shape == (5, 9)
            for c in CAMERAS:
                assert d[f"obs/{c}_rgb"].shape == (5, 32, 32, 3)
        # each action sits beside the frames and joints it was computed from (the ones its stamp names)
        joints_by_stamp = {stamp_ns(m.header.stamp): np.array(m.position, np.float32) for m in probe.joints}
        for k, s in enumerate(stamps):
            for c in CAMERAS:
                np.testing.assert_array_equal(demos[0][f"obs/{c}_rgb"][k], frames_by_stamp[c][s])
            np.testing.assert_array_equal(demos[0]["obs/joint_states"][k], joints_by_stamp[s])
        assert not np.array_equal(demos[0][f"obs/{CAMERAS[0]}_rgb"][0], demos[0][f"obs/{CAMERAS[0]}_rgb"][4])
    with pytest.raises(BagError, match="missing"):
        convert([tmp_path / "bag"], tmp_path / "ds2", cameras=["/cameras/side/image_raw"])


TINY_TRAIN = """
model: {hn_layers: 1, base_layers: 1, image_size: 32, proprio_dim: 4}
train: {steps: 8, batch_size: 8, warmup_steps: 2, checkpoint_every: 0, threads: 1}
"""


def test_demonstrator_bag_dataset_train_and_run_on_the_arm(ros, tmp_path):
    """The user's path: the scripted teleoperator drives the bridge while `record` writes the bag ->
    bag-to-dataset -> a tiny train -> the controller (two camera topics, 9 joints) runs it on the bridge. The
    teacher is pushed off course (noise) and its clean actions are what the dataset keeps, as gen-data's."""
    import h5py

    from hypervla_core.cli import main as cli
    from hypervla_ros.bag_to_dataset import convert

    topics = [f"/cameras/{c}/image_raw" for c in CAMERAS] + [
        "/joint_states", "/hypervla/action", "/libero_bridge/applied", "/hypervla/instruction", "/libero_bridge/events",
        "/demonstrator/expert_action"]
    bridge = {"image_size": 32, "real_time": False, "max_steps": 160, "publish_sim_state": True}
    config = write_config(tmp_path, "unused", libero_bridge=bridge,
                          record={"output": str(tmp_path / "bag"), "topics": topics},
                          demonstrator={"tasks": ["put_the_bowl_on_the_stove"], "episodes_per_task": 2,
                                        "noise": 0.01})
    sent = {}
    with Stack(config, log_dir=str(tmp_path / "logs")) as stack:
        probe = ArmProbe()
        probe.create_subscription(EndEffectorAction, "/hypervla/action",
                                  lambda m: sent.setdefault(stamp_ns(m.header.stamp), m), 100)
        spinner = Spinner(probe)
        try:
            stack.start("libero", "record")
            assert probe.params.wait_for_service(120), "the bridge did not come up"
            wait_until(lambda: False, 2.0)  # the recorder discovers the topics
            stack.start("demonstrator")
            assert wait_until(lambda: not stack.alive("demonstrator"), 400), probe.events[-3:]
            assert stack.procs["demonstrator"].returncode == 0
            ends = [e for e in probe.events if e["event"] in ("success", "timeout", "aborted")]
            assert [e["event"] for e in ends] == ["success", "success"], ends
        finally:
            spinner.close()
            stack.stop("record")

    report = convert([tmp_path / "bag"], tmp_path / "ds")
    assert report["episodes"] == 2 and report["tasks"] == {"put_the_bowl_on_the_stove": 2}
    with h5py.File(tmp_path / "ds" / "put_the_bowl_on_the_stove.hdf5") as f:
        for k, end in enumerate(ends):
            d = f[f"data/demo_{k}"]
            n = end["steps"]  # every step the bridge took was one demonstrator command
            assert d["actions"].shape == (n, 7) and d["obs/joint_states"].shape == (n, 9)
            assert all(d[f"obs/{c}_rgb"].shape == (n, 32, 32, 3) for c in CAMERAS)
            assert d.attrs["init_index"] == SAMPLED_INITS + k  # sampled placements: never evaluation's states
        actions = f["data/demo_0/actions"][:]
    # the recorded actions are ones the demonstrator sent, rotation included (matched by value: on a busy
    # machine this probe may miss a message the bridge got, which would shift a match by position)
    mine = np.array([[m.rotation.x, m.rotation.y, m.rotation.z] for m in sent.values()])
    gap = np.abs(actions[:, None, 3:6] - mine[None]).max(axis=2).min(axis=1)
    assert gap.max() < 1e-7 and np.abs(actions[:, 3:6]).max() > 1e-3, gap.max()
    assert np.abs(actions[:, :3]).max() > 0.01 and set(np.unique(actions[:, 6])) == {0.0, 1.0}
    # what the arm executed (the bag's ~/applied) is the same action pushed off course in translation only
    convert([tmp_path / "bag"], tmp_path / "executed", label_topic="")
    with h5py.File(tmp_path / "executed" / "put_the_bowl_on_the_stove.hdf5") as f:
        executed = f["data/demo_0/actions"][:]
    assert executed.shape == actions.shape and np.abs(executed[:, :3] - actions[:, :3]).max() > 1e-3
    np.testing.assert_array_equal(executed[:, 3:], actions[:, 3:])

    # The same episodes made directly, without ROS (physics first, then one rendering replay): identical.
    direct = subprocess.run(
        [sys.executable, "-m", "hypervla_core.cli", "gen-data", "--suite", "libero_goal:put_the_bowl_on_the_stove",
         "--out", str(tmp_path / "direct"), "--episodes", "2", "--image-size", "32",
         "--max-steps", "160", "--workers", "1", "--noise", "0.01"], capture_output=True, text=True, timeout=600)
    assert direct.returncode == 0, direct.stderr[-2000:]
    with h5py.File(tmp_path / "ds" / "put_the_bowl_on_the_stove.hdf5") as a, \
            h5py.File(tmp_path / "direct" / "put_the_bowl_on_the_stove.hdf5") as b:
        for k in range(2):
            x, y = a[f"data/demo_{k}"], b[f"data/demo_{k}"]
            assert x.attrs["success"] and y.attrs["success"] and x.attrs["init_index"] == y.attrs["init_index"]
            for key in ["actions", "obs/joint_states", *(f"obs/{c}_rgb" for c in CAMERAS)]:
                np.testing.assert_array_equal(x[key][:], y[key][:], err_msg=f"demo {k} {key}")

    (tmp_path / "train.yaml").write_text(TINY_TRAIN)
    assert cli(["train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "ck"),
                "--config", str(tmp_path / "train.yaml")]) == 0
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["model"]["views"] == 2 and cfg["model"]["proprio_dim"] == 9
    assert cfg["extra"]["cameras"] == list(CAMERAS)  # the order camera_topics must follow (hypervla info)

    config = write_config(tmp_path, tmp_path / "ck", libero_bridge={**bridge, "max_steps": 12},
                          policy_controller={"camera_topics": [f"/cameras/{c}/image_raw" for c in CAMERAS],
                                             "proprio_topic": "/joint_states"})
    with Stack(config, log_dir=str(tmp_path / "logs2")) as stack:
        probe = ArmProbe()
        said = probe.create_publisher(String, "/hypervla/instruction", LATCHED)
        runs = []
        probe.create_subscription(EndEffectorAction, "/hypervla/action", runs.append, 100)
        spinner = Spinner(probe)
        try:
            stack.start("libero", "generator", "controller")
            assert probe.params.wait_for_service(120), "the bridge did not come up"
            said.publish(String(data="put the bowl on the stove"))
            assert wait_until(lambda: any(e["event"] in ("success", "timeout") for e in probe.events), 240), \
                probe.events[-2:]
            end = next(e for e in probe.events if e["event"] in ("success", "timeout"))
            assert end["steps"] >= 1 and end["e2e_samples"] >= 1
            assert runs and all(m.policy_id not in ("", "demonstrator") for m in runs)
        finally:
            spinner.close()


def test_demo_runs_the_libero_scene_with_its_overrides(tmp_path, libero_checkpoint):
    """`make demo DEMO_SUITE=libero_goal`: config/libero_demo.yaml over the configuration, the Panda bridge and
    the checkpoint's two camera topics; one episode per task and a summary with the goals reached."""
    import yaml

    config = write_config(tmp_path, libero_checkpoint)
    demo = yaml.safe_load((ROOT / "config" / "libero_demo.yaml").read_text())
    for node in ("policy_generator", "policy_controller"):
        demo[node]["ros__parameters"]["checkpoint"] = str(libero_checkpoint)
    demo["libero_bridge"]["ros__parameters"]["max_steps"] = 5
    demo["demo"]["ros__parameters"]["output"] = str(tmp_path / "out")
    (tmp_path / "libero_demo.yaml").write_text(yaml.safe_dump(demo))
    env = {**os.environ, "HYPERVLA_CONFIG": str(config), "DEMO_SUITE": "libero_goal", "DEMO_EPISODES": "2",
           "DEMO_TASKS": "turn_on_the_stove,put_the_bowl_on_the_plate"}
    run = subprocess.run([sys.executable, "-m", "hypervla_ros.demo"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["suite"] == "libero_goal" and summary["checkpoint"] == str(libero_checkpoint)
    # episode k of each task from LIBERO's standard initial state k, as `hypervla eval` runs them
    assert [(e["task"], e["init_index"]) for e in summary["episodes"]] == [
        ("turn_on_the_stove", 0), ("turn_on_the_stove", 1), ("put_the_bowl_on_the_plate", 0),
        ("put_the_bowl_on_the_plate", 1)]
    for e in summary["episodes"]:
        assert e["completed"] and e["steps"] == 5 and e["goals_reached"] == []  # 5 steps of an untrained policy
        assert not e["wrong_goal"]
        assert e["instruction"] in yaml.safe_load((ROOT / "config" / "libero_tasks.yaml").read_text())["tasks"][
            e["task"]]["train"]
    assert summary["control_loop_latency_ms"]["p50"] > 0 and summary["wrong_goal_rate"] == 0.0
