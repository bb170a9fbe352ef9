"""The training pipeline for real, at toy size: gen-data -> train (also under torchrun, 2 CPU processes,
gloo) -> resume -> finetune -> eval, plus LIBERO/robomimic-layout HDF5 files and `hypervla info`."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from hypervla_core import checkpoint as ckpt
from hypervla_core.cli import main as cli
from hypervla_core.data import DemoDataset, index_files
from hypervla_core.evaluate import evaluate
from hypervla_core.sim import camera_views, load_tasks, tasks_file

TINY_TRAIN = """
model: {hn_layers: 1, base_layers: 1, mono_layers: 1, mono_dim: 64, mono_mlp: 128}
train: {steps: 6, batch_size: 8, warmup_steps: 2, checkpoint_every: 3, threads: 1}
"""


def test_set_overrides_the_recipe_and_refuses_what_it_cannot_place(tmp_path, capsys):
    from hypervla_core.cli import _configs, build_parser

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAIN)
    base = ["train", "--data", "d", "--out", "o", "--config", str(cfg), "--set"]
    model, train, raw = _configs(build_parser().parse_args(base + ["model.lang_pool=mean", "train.lr=1e-4",
                                                                   "train.steps=2"]))
    assert model.lang_pool == "mean" and model.hn_layers == 1 and train.lr == 1e-4 and train.steps == 2
    assert train.batch_size == 8 and raw["train"]["steps"] == 2  # the rest of the recipe as the file says
    # --set given twice: both apply (a second one used to drop the first silently)
    model, train, _ = _configs(build_parser().parse_args(base + ["train.steps=3", "--set", "train.checkpoint_every=1"]))
    assert train.steps == 3 and train.checkpoint_every == 1
    for bad, said in (("model.lang_pool", "model.KEY=VALUE"), ("optim.lr=1", "model.KEY=VALUE"),
                      ("model.bogus=1", "unknown model config keys"), ("train.lr=fast", "takes a number"),
                      ("model.lang_pool=true", "none, mean or both")):
        assert cli(base + [bad]) == 2 and said in capsys.readouterr().err


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    assert cli(["gen-data", "--out", str(out), "--suite", "reach-v3", "--episodes", "1", "--workers", "1",
                "--max-steps", "150"]) == 0
    return out


@pytest.fixture(scope="session")
def one_view_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos1")
    assert cli(["gen-data", "--out", str(out), "--suite", "reach-v3", "--episodes", "1", "--workers", "1",
                "--max-steps", "150", "--camera", "workspace"]) == 0
    return out


def test_gen_data_is_resumable_and_deterministic(demos, tmp_path):
    refs = index_files([demos])
    assert len(refs) == 1 and refs[0].task == "reach-v3" and refs[0].instruction == "reach the goal position"
    with h5py.File(demos / "reach-v3.hdf5") as f:
        demo = f["data/demo_0"]
        views = len(camera_views(None, load_tasks()))  # the tasks file's default camera, views side by side
        assert demo["obs/agentview_rgb"].shape[1:] == (64, 64 * views, 3) and demo["actions"].shape[1] == 7
        actions = demo["actions"][:]
        seeds = list(f.attrs["attempted_seeds"])
        # every phrasing of the task is recorded, and every seed simulated (one round: 1 missing * 1.3 + 2)
        assert json.loads(demo.attrs["phrasings"]) == load_tasks()["tasks"]["reach-v3"]["train"]
        assert len(seeds) == 3
    # A second run with the same target adds nothing (resumable); a fresh run reproduces the episode.
    assert cli(["gen-data", "--out", str(demos), "--suite", "reach-v3", "--episodes", "1", "--workers", "1"]) == 0
    assert len(index_files([demos])) == 1
    assert cli(["gen-data", "--out", str(tmp_path), "--suite", "reach-v3", "--episodes", "1", "--workers", "1",
                "--max-steps", "150"]) == 0
    with h5py.File(tmp_path / "reach-v3.hdf5") as f:
        np.testing.assert_array_equal(f["data/demo_0/actions"][:], actions)
        assert list(f.attrs["attempted_seeds"]) == seeds


def test_gen_data_tops_up_in_rounds_and_stops_at_max_rounds(tmp_path, capsys):
    """A task still short after a round gets a round of fresh seeds; an expert that cannot succeed (2 steps)
    stops after max_rounds with the shortfall reported, not an endless loop."""
    assert cli(["gen-data", "--out", str(tmp_path), "--suite", "reach-v3", "--episodes", "1", "--workers", "1",
                "--max-steps", "2", "--max-rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 round(s)" in out and "short after 2 rounds" in out
    with h5py.File(tmp_path / "reach-v3.hdf5") as f:
        assert "data" not in f or len(f["data"]) == 0
        assert len(f.attrs["attempted_seeds"]) == 2 * 3  # each round: 30 % more than the one missing, + 2


# The tasks file's default camera (two views side by side) for one model type, one view for the other.
@pytest.mark.parametrize("kind,data", [("hypervla", "demos"), ("monolithic", "one_view_demos")])
def test_train_resume_finetune_eval(request, tmp_path, kind, data):
    demos = request.getfixturevalue(data)
    camera = "workspace" if data == "one_view_demos" else load_tasks()["camera"]
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAIN)
    out = tmp_path / "ck"
    assert cli(["train", "--data", str(demos), "--out", str(out), "--config", str(cfg), "--model-type", kind,
                "--eval-every", "6"]) == 0
    loaded = ckpt.load(out)
    assert loaded.cfg.model_type == kind and loaded.meta["extra"]["step"] == 6
    # The model takes as many views as the data's frames tile, and remembers the camera for eval.
    assert loaded.meta["extra"]["camera"] == camera and loaded.cfg.views == len(camera_views(camera, {}))
    history = loaded.meta["extra"]["history"]
    assert any("eval_mean_success" in h for h in history)  # the periodic closed-loop evaluation ran
    assert (out / "eval_step6" / "eval.json").exists()
    # Resume continues from the saved step instead of starting over.
    resume = ["train", "--data", str(demos), "--out", str(out), "--config", str(cfg), "--steps", "9", "--resume"]
    other = "monolithic" if kind == "hypervla" else "hypervla"
    assert cli(resume + ["--model-type", other]) == 2  # resuming another model type is refused, clearly
    assert cli(resume + ["--model-type", kind]) == 0
    resumed = ckpt.load(out).meta["extra"]
    assert resumed["step"] == 9
    # The continued checkpoint records the run it continued, and keeps that run's loss curve.
    assert resumed["resumed_from"] == [{"step": 6, "model_id": loaded.model_id, "steps": 6}]
    assert resumed["history"][:len(history)] == history and resumed["history"][-1]["step"] == 9
    ft = tmp_path / "ft"
    assert cli(["finetune", str(out), "--data", str(demos), "--out", str(ft), "--config", str(cfg), "--steps", "3",
                "--threads", "2"]) == 0
    assert ckpt.load(ft).model_id != loaded.model_id and torch.get_num_threads() == 2  # --threads over the config
    ev = tmp_path / "ev"
    assert cli(["eval", str(ft), "--suite", "reach-v3", "--episodes", "1", "--workers", "1", "--max-steps", "10",
                "--out", str(ev), "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    report = json.loads((ev / "eval.json").read_text())
    assert report["per_task"]["reach-v3"]["episodes"] == 1 and 0 <= report["mean_success"] <= 1
    (steps,), (ok,) = report["per_task"]["reach-v3"]["steps"], report["per_task"]["reach-v3"]["successes"]
    assert 1 <= steps <= 10 and (ok or steps == 10)  # steps to success, or the whole episode
    assert report["camera"] == camera
    if loaded.cfg.views > 1:  # a view setup the checkpoint cannot take is refused before any episode runs
        with pytest.raises(ValueError, match="camera view"):
            evaluate(str(ft), str(tmp_path / "ev1"), "reach-v3", 1, workers=1, camera="corner")
    assert (ev / "success.png").exists() and (ev / "reach-v3.gif").exists()
    assert report["limits"] is None
    # --limits: every action through the controller's filter; no translation allowed changes every step.
    still = tmp_path / "still.yaml"
    still.write_text("policy_controller:\n  ros__parameters:\n    max_translation: 0.0\n")
    assert cli(["eval", str(ft), "--suite", "reach-v3", "--episodes", "1", "--workers", "1", "--max-steps", "5",
                "--out", str(ev), "--limits", str(still), "--no-gifs"]) == 0
    report = json.loads((ev / "eval.json").read_text())
    assert report["limits"]["max_translation"] == 0.0 and report["limited_fraction"] == 1.0


def test_torchrun_two_processes_gloo(demos, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAIN)
    out = tmp_path / "ddp"
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port),
           "-m", "hypervla_core.cli", "train", "--data", str(demos), "--out", str(out), "--config", str(cfg),
           "--steps", "4"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert '"world_size": 2' in res.stdout
    assert ckpt.load(out).meta["extra"]["step"] == 4


def _write_libero_like(path, robomimic=False):
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if not robomimic:
            data.attrs["problem_info"] = json.dumps({"language_instruction": "put the bowl on the plate"})
        for k in range(2):
            g = data.create_group(f"demo_{k}")
            n = 5 + k
            key = "agentview_image" if robomimic else "agentview_rgb"
            g.create_dataset(f"obs/{key}", data=np.full((n, 32, 32, 3), 10 * k, np.uint8))
            g.create_dataset("obs/ee_states", data=np.zeros((n, 6), np.float32))
            g.create_dataset("obs/gripper_states", data=np.zeros((n, 2), np.float32))
            act = np.zeros((n, 7), np.float32)
            act[:, 6] = np.where(np.arange(n) % 2, 1.0, -1.0)  # LIBERO gripper: -1 open, +1 close
            g.create_dataset("actions", data=act)


@pytest.mark.parametrize("robomimic", [False, True])
def test_libero_and_robomimic_layouts_load(tmp_path, robomimic):
    path = tmp_path / "put_the_bowl_on_the_plate_demo.hdf5"
    _write_libero_like(path, robomimic)
    ds = DemoDataset([path], horizon=4, proprio_keys=("ee_states", "gripper_states"))
    assert len(ds) == 11 and ds.refs[0].instruction == "put the bowl on the plate"
    batch = ds.sample(np.random.default_rng(0), 16)
    assert batch["images"].shape == (16, 32, 32, 3) and batch["proprio"].shape == (16, 8)
    assert batch["actions"].shape == (16, 4, 7)
    assert batch["mask"].dtype == bool and not batch["mask"].all()  # chunks past an episode's end are masked
    stats = ds.statistics()
    assert stats["action_std"].shape == (6,) and (stats["action_std"] > 0).all()


def test_task_balanced_sampling(tmp_path):
    """balance_tasks draws each task equally often however many frames it has, and every frame of it; the
    default draws frames uniformly, so a task with more data dominates the batch."""
    from hypervla_core.data import write_demo

    with h5py.File(tmp_path / "big.hdf5", "w") as f:
        for seed in range(6):
            write_demo(f, np.zeros((20, 8, 8, 3), np.uint8), np.zeros((20, 4)), np.zeros((20, 7)), ["big"], "big", seed)
    with h5py.File(tmp_path / "small.hdf5", "w") as f:
        act = np.zeros((10, 7))
        act[:, 0] = np.arange(10)  # the frame index, to see which frames are drawn
        write_demo(f, np.zeros((10, 8, 8, 3), np.uint8), np.zeros((10, 4)), act, ["small"], "small", 0)
    ds = DemoDataset([tmp_path], horizon=1)
    share = {}
    for balance in (False, True):
        batch = ds.sample(np.random.default_rng(0), 4000, balance_tasks=balance)
        small = np.array(batch["instructions"]) == "small"
        share[balance] = small.mean()
        assert set(batch["actions"][small, 0, 0].astype(int)) == set(range(10))
    assert abs(share[False] - 10 / 130) < 0.02 and abs(share[True] - 0.5) < 0.03


@pytest.mark.parametrize("cameras", [False, True])
def test_cached_demos_give_the_batches_read_from_disk(tmp_path, cameras):
    """Demos kept in RAM after their first read give exactly the batches the disk gives (frames, first frames,
    proprio, chunks, masks, words), for one tiled view and for one dataset per camera; the cache holds only
    what its budget allows, the rest is still read per batch."""
    from hypervla_core.data import write_camera_demo, write_demo

    rng = np.random.default_rng(0)
    for k in range(4):
        n = 6 + k
        images = rng.integers(0, 256, (n, 8, 8, 3), np.uint8)
        proprio, actions = rng.normal(size=(n, 3)), rng.normal(size=(n, 7))
        if cameras:
            write_camera_demo(tmp_path / "arm.hdf5", {"front": images, "wrist": images[::-1].copy()}, proprio,
                              actions, {"language_instruction": "pick", "task": "pick"}, 10.0, "test")
        else:
            with h5py.File(tmp_path / "arm.hdf5", "a") as f:
                write_demo(f, images, proprio, actions, ["pick"], "pick", k)
    disk = DemoDataset([tmp_path], horizon=4)
    frame = 8 * (16 if cameras else 8) * 3
    budget = frame * 13  # demos of 6 - 9 frames: the first drawn always fits, never all four
    for cache in (1 << 30, budget):
        ram = DemoDataset([tmp_path], horizon=4, cache_bytes=cache)
        for seed in range(5):
            a, b = disk.sample(np.random.default_rng(seed), 32), ram.sample(np.random.default_rng(seed), 32)
            for key in a:
                assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
        if cache == budget:
            assert 1 <= len(ram._cache) < 4 and ram._cached_bytes <= budget
        else:
            assert len(ram._cache) == 4


def test_random_shift_moves_each_image_by_at_most_pad_pixels():
    """The augmentation translates each sample on its own, never further than `pad`, and covers every offset."""
    import torch

    from hypervla_core.train import random_shift

    x = torch.zeros(400, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0  # one bright pixel, far enough from the edge that replicate padding cannot copy it
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    ys, xs = [], []
    for img in out[:, 0]:
        (y, xx), = torch.nonzero(img == 1.0).tolist()  # exactly one bright pixel survives
        ys.append(y - 8)
        xs.append(xx - 8)
    assert set(ys) == set(range(-2, 3)) and set(xs) == set(range(-2, 3))


def test_instruction_mix_blends_toward_another_sample_but_stays_nearer_its_own(demos, tmp_path):
    """instruction_mix: each sample's instruction tokens move toward another sample's by at most the given
    share, so they stay nearer their own instruction than any other; the padding mask covers both."""
    import torch

    from hypervla_core.config import ModelConfig, TrainConfig
    from hypervla_core.train import Trainer

    cfg = ModelConfig(hn_layers=1, base_layers=1)
    batches = {}
    for mix in (0.0, 0.5):  # same seed: the same samples, once plain and once mixed
        trainer = Trainer(cfg, TrainConfig(batch_size=64, instruction_mix=mix, threads=1), [str(demos)], str(tmp_path))
        batches[mix] = trainer._batch()
    cache = trainer.lang_cache
    names = sorted(cache)
    assert len(names) == 3  # reach's three training phrasings
    nearest = {}
    for mix, b in batches.items():
        dist = torch.stack([(b["tokens"] - cache[n][0]).flatten(1).norm(dim=1) for n in names], 1)
        nearest[mix] = dist.argmin(1)
        if not mix:
            assert (dist.min(1).values == 0).all()  # unmixed: exactly the sample's own instruction
    assert torch.equal(nearest[0.5], nearest[0.0])
    own = torch.stack([cache[names[i]][0] for i in nearest[0.0].tolist()])
    own_mask = torch.stack([cache[names[i]][1] for i in nearest[0.0].tolist()])
    assert (batches[0.5]["lang_mask"] >= own_mask).all()
    moved = (batches[0.5]["tokens"] - own).flatten(1).norm(dim=1) > 1e-4
    assert 0.4 < moved.float().mean() < 0.95  # a third of partners say the same thing


def test_unreadable_demo_file_is_named(tmp_path):
    bad = tmp_path / "broken.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="broken.hdf5"):
        index_files([bad])


def test_fit_report_falls_as_training_fits_the_demonstrations(demos, tmp_path):
    """`hypervla fit`: teacher-forced action error per task; training on the demonstrations lowers it."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: {hn_layers: 1, base_layers: 1}\n"
                   "train: {batch_size: 16, lr: 0.001, warmup_steps: 1, ema_decay: 0.0, threads: 1, checkpoint_every: 0}\n")
    errors = []
    for steps in ("1", "80"):
        out = tmp_path / f"ck{steps}"
        assert cli(["train", "--data", str(demos), "--out", str(out), "--config", str(cfg), "--steps", steps]) == 0
        report = tmp_path / f"fit{steps}.json"
        assert cli(["fit", str(out), "--data", str(demos / "reach-v3.hdf5"), "--batches", "2", "--json", str(report)]) == 0
        errors.append(json.loads(report.read_text())["reach-v3"]["mse"])
    assert errors[1] < 0.5 * errors[0]
    assert cli(["fit", str(tmp_path / "ck1"), "--data", str(tmp_path / "missing.hdf5")]) == 2


def test_info_cli(tiny_checkpoints, capsys):
    assert cli(["info", str(tiny_checkpoints["hypervla"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["activated_per_step"] == info["shared_vision_encoder"] + info["generated_per_task"]
    assert cli(["info", "/nonexistent"]) == 2


def test_goal_marker_and_recolor_come_from_the_tasks_file(tmp_path):
    """config/tasks.yaml goal_marker_m and recolor: a larger goal sphere and a yellow puck in the image;
    physics and the expert are untouched."""
    import mujoco
    import yaml
    from hypervla_core.sim import MetaWorldTask, load_tasks

    tasks = load_tasks()
    options = tasks["tasks"]["push-v3"]
    radius, rgba = options["goal_marker_m"], options["recolor"]["objGeom"]
    plain = {k: v for k, v in options.items() if k not in ("goal_marker_m", "recolor")}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({**tasks, "tasks": {**tasks["tasks"], "push-v3": plain}}))

    def pixels(sim):
        image = sim.reset(7).image.astype(int)
        green = (image[..., 1] > 150) & (image[..., 0] < 100) & (image[..., 2] < 100)  # push's goal sphere
        yellow = (image[..., 0] > 150) & (image[..., 1] > 120) & (image[..., 2] < 60)
        return int(green.sum()), int(yellow.sum())

    marked = MetaWorldTask("push-v3")
    unmarked = MetaWorldTask("push-v3", tasks_file=tmp_path / "tasks.yaml")  # the file gen-data/eval were given
    model = marked.env.model
    goal = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    puck = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "objGeom")
    assert model.site_size[goal][0] == pytest.approx(radius) and radius > 0.02
    assert unmarked.env.model.site_size[goal][0] == pytest.approx(0.02)
    np.testing.assert_allclose(model.geom_rgba[puck], rgba)
    assert model.geom_matid[puck] == -1 and unmarked.env.model.geom_matid[puck] >= 0
    (green, yellow), (green0, yellow0) = pixels(marked), pixels(unmarked)
    assert green > green0 and yellow >= 3 and yellow0 == 0
    marked.reset(3)
    unmarked.reset(3)
    for _ in range(5):  # same seed, same expert actions, same physics
        act = marked.expert_action()
        np.testing.assert_allclose(act, unmarked.expert_action())
        np.testing.assert_allclose(marked.step(act)[0].state, unmarked.step(act)[0].state)
    marked.close()
    unmarked.close()
    bad = {**tasks, "tasks": {**tasks["tasks"], "push-v3": {**plain, "recolor": {"nope": [1, 1, 1, 1]}}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="recolor names geom 'nope'"):
        MetaWorldTask("push-v3", tasks_file=tmp_path / "bad.yaml")


def test_grip_effort_comes_from_the_tasks_file(tmp_path):
    """config/tasks.yaml grip_effort: the force a closed gripper squeezes with in Meta-World (peg-insert's
    expert uses 0.6); open is always -1. It changes the physics, so gen-data records it with the view."""
    import yaml

    from hypervla_core.sim import MetaWorldTask, render_settings

    tasks = load_tasks()
    effort = tasks["tasks"]["peg-insert-side-v3"]["grip_effort"]
    plain = {k: v for k, v in tasks["tasks"]["peg-insert-side-v3"].items() if k != "grip_effort"}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({**tasks, "tasks": {**tasks["tasks"],
                                                                            "peg-insert-side-v3": plain}}))
    assert render_settings("peg-insert-side-v3", None, tasks)["grip_effort"] == effort < 1.0
    assert "grip_effort" not in render_settings("peg-insert-side-v3", None, load_tasks(tmp_path / "tasks.yaml"))
    gentle = MetaWorldTask("peg-insert-side-v3")
    full = MetaWorldTask("peg-insert-side-v3", tasks_file=tmp_path / "tasks.yaml")
    close = np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32)
    for sim, squeeze in ((gentle, effort), (full, 1.0)):
        sim.reset(3)
        sim.step(close)
        np.testing.assert_allclose(sim.env.data.ctrl[-2:], [squeeze, -squeeze])
        sim.step(np.zeros(7, np.float32))  # open
        np.testing.assert_allclose(sim.env.data.ctrl[-2:], [-1.0, 1.0])
        sim.close()


def test_camera_views_come_from_the_tasks_file(demos, capsys):
    """config/tasks.yaml `camera`/`cameras`: "a+b" tiles views left to right, the default is recorded in
    gen-data's files, and a file is never topped up with another view's images."""
    from hypervla_core.sim import MetaWorldTask

    tasks = load_tasks()
    assert tasks["camera"] == "workspace+gripperPOV"  # a free view of the table + Meta-World's wrist camera
    sims = [MetaWorldTask("reach-v3"), MetaWorldTask("reach-v3", camera="corner"),
            MetaWorldTask("reach-v3", camera="workspace+front")]
    sims += [MetaWorldTask("reach-v3", camera=view) for view in ("workspace", "front", "gripperPOV")]
    default, corner, tiled, workspace, front, wrist = [s.reset(5).image.astype(int) for s in sims]
    assert corner.shape == (64, 64, 3) and default.shape == tiled.shape == (64, 128, 3)
    assert np.abs(workspace - corner).mean() > 10 and np.abs(wrist - front).mean() > 10
    # each tile is exactly that view's own image
    np.testing.assert_array_equal(tiled[:, :64], workspace)
    np.testing.assert_array_equal(tiled[:, 64:], front)
    np.testing.assert_array_equal(default, np.concatenate([workspace, wrist], axis=1))
    for s in sims:
        s.close()
    with pytest.raises(ValueError, match="unknown camera 'nope'.*corner"):
        MetaWorldTask("reach-v3", camera="workspace+nope")

    path = demos / "reach-v3.hdf5"
    with h5py.File(path) as f:
        assert json.loads(f.attrs["render"]) == {"camera": tasks["camera"],
                                                 "goal_marker_m": tasks["tasks"]["reach-v3"]["goal_marker_m"]}
    before = path.read_bytes()
    assert cli(["gen-data", "--out", str(demos), "--suite", "reach-v3", "--episodes", "2", "--workers", "1",
                "--camera", "corner"]) == 2
    assert "would mix episodes that differ in camera (" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_finetune_rehearses_the_checkpoints_own_demonstrations(demos, tmp_path, capsys):
    """A few-shot fine-tune mixes the checkpoint's recorded training data into every batch (the old tasks
    keep working), and says what to do when that data is not on this machine."""
    import shutil

    from hypervla_core.config import TrainConfig
    from hypervla_core.train import Trainer

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAIN)
    old = tmp_path / "old"
    shutil.copytree(demos, old)
    ck = tmp_path / "ck"
    assert cli(["train", "--data", str(old), "--out", str(ck), "--config", str(cfg)]) == 0
    assert ckpt.load(ck).meta["extra"]["data"] == [str(old)]
    new = tmp_path / "new"
    assert cli(["gen-data", "--out", str(new), "--suite", "door-close-v3", "--episodes", "1", "--workers", "1",
                "--max-steps", "150"]) == 0
    ft = tmp_path / "ft"
    assert cli(["finetune", str(ck), "--data", str(new), "--out", str(ft), "--config", str(cfg), "--steps", "2",
                "--rehearsal", "0.5"]) == 0
    assert ckpt.load(ft).meta["extra"]["data"] == sorted([str(old), str(new)])  # a later fine-tune keeps both

    # The old tasks are rehearsed in the words they were trained with: the checkpoint's phrasings file and its
    # rule-made phrasings, which the fine-tune recipe does not set.
    words = tmp_path / "words.yaml"
    shutil.copy(tasks_file(), words)
    ck7 = tmp_path / "ck7"
    assert cli(["train", "--data", str(old), "--out", str(ck7), "--config", str(cfg), "--steps", "1",
                "--set", "train.template_phrasings=7", "--tasks-file", str(words)]) == 0
    ft7 = tmp_path / "ft7"
    assert cli(["finetune", str(ck7), "--data", str(new), "--out", str(ft7), "--config", str(cfg), "--steps", "1",
                "--rehearsal", "0.5"]) == 0
    extra = ckpt.load(ft7).meta["extra"]
    assert extra["tasks_file"] == str(words) and extra["train_config"]["template_phrasings"] == 7

    trainer = Trainer(ckpt.load(ck).cfg, TrainConfig(batch_size=16, rehearsal=0.25, threads=1), [str(new)],
                      str(tmp_path / "t"), init_from=str(ck), rehearse_paths=[str(old)])
    said = trainer._sample()["instructions"]
    phrasings = load_tasks()["tasks"]
    assert len(said) == 16 and sum(s in phrasings["reach-v3"]["train"] for s in said) == 4
    assert sum(s in phrasings["door-close-v3"]["train"] for s in said) == 12

    shutil.rmtree(old)  # the recorded training data is gone: refused, with what to pass instead
    capsys.readouterr()
    assert cli(["finetune", str(ck), "--data", str(new), "--out", str(tmp_path / "ft2"), "--config", str(cfg),
                "--steps", "2", "--rehearsal", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--rehearse" in err and "--rehearsal 0" in err and str(old) in err
    # the shipped recipe rehearses by default: without the old data it refuses rather than forgets
    recipe = str(pathlib.Path(__file__).resolve().parents[1] / "config" / "finetune.yaml")
    assert cli(["finetune", str(ck), "--data", str(new), "--out", str(tmp_path / "ft4"), "--config", recipe,
                "--steps", "2"]) == 2
    assert "--rehearse" in capsys.readouterr().err
    assert cli(["finetune", str(ck), "--data", str(new), "--out", str(tmp_path / "ft3"), "--config", str(cfg),
                "--steps", "2", "--rehearsal", "0"]) == 0
