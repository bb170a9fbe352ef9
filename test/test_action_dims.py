"""Action dimensions the training data never moved are commanded as exactly 0: in step, in the published
chunk and in the twist output. Meta-World's data never rotates, so the shipped model must never rotate."""
import json
import time

import h5py
import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped
from hypervla_ros.bringup import Stack
from ros_helpers import ROOT, Probe, Spinner, wait_until, write_config

from hypervla_core import checkpoint as ckpt
from hypervla_core.cli import main as cli
from hypervla_core.runtime import Generator, Runtime
from hypervla_core.sim import MetaWorldTask

from hypervla_msgs.msg import ActionChunk

SHIPPED = ROOT / "models" / "hypervla-mt10"


def test_older_stats_are_read_by_the_placeholder_rule_with_a_warning():
    d = ckpt.load(SHIPPED).stats.to_dict()
    assert d["active_dims"] == [True, True, True, False, False, False]  # the shipped model records them
    del d["active_dims"]  # as in checkpoints made before the record (v15 and older)
    with pytest.warns(UserWarning, match="no active_dims record"):
        stats = ckpt.Stats.from_dict(d)
    assert stats.active().tolist() == [True, True, True, False, False, False]
    # A record, when present, wins over the rule; a malformed one is refused.
    d = stats.to_dict()
    assert d["active_dims"] == [True, True, True, False, False, False]
    d["active_dims"] = [True] * 6
    assert ckpt.Stats.from_dict(d).active().all()
    d["active_dims"] = [1, 1, 1, 0, 0, 0]
    with pytest.raises(ckpt.CheckpointError, match="active_dims"):
        ckpt.Stats.from_dict(d)


@pytest.fixture(scope="module")
def shipped():
    return Generator.load(SHIPPED), Runtime.load(SHIPPED, backend="onnxruntime")


def test_shipped_model_commands_no_rotation_on_sim_frames_and_noise(shipped):
    generator, runtime = shipped
    task = MetaWorldTask("drawer-open-v3")
    try:
        obs = task.reset(3)
        policy = generator.generate("open the drawer", obs.image).bind(runtime)
        actions, chunks = [], []
        for _ in range(40):
            action, chunk = policy.step_with_chunk(obs.image, obs.proprio)
            actions.append(action)
            chunks.append(chunk)
            obs, _, _ = task.step(action)
    finally:
        task.close()
    actions, chunks = np.array(actions), np.array(chunks)
    assert (actions[:, 3:6] == 0).all() and (chunks[:, :, 3:6] == 0).all()
    assert np.abs(actions[:, :3]).max() > 1e-3  # translation still flows: only the untaught dims are zero
    rng = np.random.default_rng(0)
    noise_policy = generator.generate("open the drawer").bind(runtime)
    for _ in range(20):
        image = rng.integers(0, 256, obs.image.shape, dtype=np.uint8)
        action, chunk = noise_policy.step_with_chunk(image, obs.proprio)
        assert (action[3:6] == 0).all() and (chunk[:, 3:6] == 0).all()


def test_a_model_trained_on_rotating_data_keeps_its_rotation(tmp_path, capsys):
    """Data that moves roll/pitch but never yaw: roll/pitch stay active, yaw is recorded inactive and is 0."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    with h5py.File(data / "turn_the_knob_demo.hdf5", "w") as f:
        f.create_group("data").attrs["problem_info"] = json.dumps({"language_instruction": "turn the knob"})
        for k in range(3):
            n = 12
            act = rng.normal(0, 0.01, (n, 7)).astype(np.float32)
            act[:, 5] = 0.0  # yaw never moves
            act[:, 6] = np.where(np.arange(n) % 2, 1.0, -1.0)
            f.create_dataset(f"data/demo_{k}/obs/agentview_rgb", data=rng.integers(0, 256, (n, 32, 32, 3), np.uint8))
            f.create_dataset(f"data/demo_{k}/obs/proprio", data=rng.normal(0, 1, (n, 4)).astype(np.float32))
            f.create_dataset(f"data/demo_{k}/actions", data=act)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: {hn_layers: 1, base_layers: 1, image_size: 32}\n"
                   "train: {steps: 4, batch_size: 8, warmup_steps: 1, threads: 1}\n")
    out = tmp_path / "ck"
    assert cli(["train", "--data", str(data), "--out", str(out), "--config", str(cfg)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["active_dims"] == [True, True, True, True, True, False]
    assert cli(["info", str(out)]) == 0
    assert "commanded as 0: yaw" in capsys.readouterr().out
    generator, runtime = Generator.load(out), Runtime.load(out)
    policy = generator.generate("turn the knob").bind(runtime)
    actions = np.array([policy.step(rng.integers(0, 256, (32, 32, 3), np.uint8), np.zeros(4)) for _ in range(5)])
    assert (np.abs(actions[:, 3:5]) > 0).all() and (actions[:, 5] == 0).all()


def test_shipped_model_publishes_zero_rotation_on_actions_chunks_and_twists(ros, tmp_path):
    config = write_config(tmp_path, SHIPPED.resolve(), policy_controller={"twist_topic": "/servo/delta_twist_cmds"})
    with Stack(config, log_dir=str(tmp_path / "logs")) as stack:
        stack.start("generator", "controller")
        probe = Probe("rotation_probe")
        twists, chunks = [], []
        probe.create_subscription(TwistStamped, "/servo/delta_twist_cmds", twists.append, 100)
        probe.create_subscription(ActionChunk, "/hypervla/action_chunk", chunks.append, 100)
        spinner = Spinner(probe)
        try:
            probe.camera_on()
            probe.say("open the drawer")
            assert wait_until(lambda: len(probe.actions) >= 20 and len(twists) >= 20 and len(chunks) >= 20, 120), \
                probe.latest_status()
            time.sleep(0.2)
        finally:
            spinner.close()
    assert all(a.rotation.x == a.rotation.y == a.rotation.z == 0.0 for _, a in probe.actions)
    assert all(t.twist.angular.x == t.twist.angular.y == t.twist.angular.z == 0.0 for t in twists)
    for c in chunks:
        assert (np.asarray(c.actions).reshape(c.horizon, c.action_dim)[:, 3:6] == 0).all()
    assert max(abs(t.twist.linear.x) + abs(t.twist.linear.y) + abs(t.twist.linear.z) for t in twists) > 0


def test_replay_eval_scores_only_the_dims_the_model_commands(tmp_path):
    from hypervla_ros.replay_eval import evaluate_bag
    from test_bags import write_bag

    bag = write_bag(tmp_path / "bag", episodes=1, frames=6)
    report = evaluate_bag(str(bag), str(SHIPPED), str(tmp_path / "out"), plots=False)
    assert report["unscored_dims"] == ["roll", "pitch", "yaw"]
    assert set(report["overall"]["mse"]) == {"x", "y", "z"}
    assert "not scored (the training data never moved them" in (tmp_path / "out" / "report.md").read_text()
