"""LIBERO demonstrations without ROS (`hypervla gen-data --suite libero_goal`): the scripted experts drive the
arm in process and the episodes are written in bag-to-dataset's layout. Physics first, rendering once: each
attempt runs without cameras, keeping the simulator state before every action; only a successful one is
rendered, by loading those states into a second arm with cameras (no physics is stepped again). The ROS path
(demonstrator + bridge + record + bag-to-dataset) gives the same episodes (test_libero_bridge checks it).
Episodes start from sampled placements (init index SAMPLED_INITS and up), never from the standard initial
states that evaluation uses.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pathlib
import time

import numpy as np

from .data import write_camera_demo
from .libero_env import CAMERAS, SAMPLED_INITS, LiberoArm, LiberoConfig
from .libero_experts import PLANS, Expert, Push
from .sim import load_tasks, tasks_file


def expert_noise(task: str, noise: float) -> float:
    """The push for `task`: a goal may set its own (lower, or none) expert_noise in config/libero_tasks.yaml; no
    noise asked, none given."""
    if not noise:
        return 0.0
    return float(load_tasks(tasks_file("libero_tasks.yaml"))["tasks"].get(task, {}).get("expert_noise", noise))


def demonstrate(arm: LiberoArm, shadow: LiberoArm, task: str, init: int, max_steps: int, rng=None,
                noise: float = 0.0):
    """One attempt: (actions (T, 7), simulator states each action was computed from (T, n), success, goals
    reached at the end). The expert sees the scene through a shadow copy loaded from the arm's state each
    step, exactly as the demonstrator node does over ROS. With `noise` (m per step) the executed translation
    is pushed off course (`Push`) while the expert's clean action is recorded."""
    arm.reset(task, init)
    expert = Expert(shadow, task)
    push = Push(noise, rng if rng is not None else np.random.default_rng(0))
    actions, states, ok = [], [], False
    while len(actions) < max_steps and not ok:
        state = arm.sim_state()
        view = shadow.load_state(state, task, arm.fixture_poses())
        if expert.done:
            break
        a = expert.act(view)
        actions.append(a)
        states.append(state)
        _, ok = arm.step(push(a))
    return np.array(actions, np.float32).reshape(-1, 7), states, ok, arm.goals_reached()


def render(arm: LiberoArm, task: str, init: int, states: list[np.ndarray]):
    """The observations of an episode from its states: (images per camera (T, H, W, 3), joints (T, 9))."""
    arm.reset(task, init)  # the fixtures of this init state
    images = {c: [] for c in arm.cfg.cameras}
    joints = []
    for state in states:
        obs = arm.load_state(state)
        for c in arm.cfg.cameras:
            images[c].append(obs.images[c])
        joints.append(obs.joints)
    return {c: np.stack(v) for c, v in images.items()}, np.stack(joints)


_ARMS: tuple | None = None  # this process's (physics, shadow, cameras) arms, made once for all its tasks


def _arms(suite: str, image_size: int) -> tuple:
    global _ARMS
    if _ARMS is None:
        _ARMS = (LiberoArm(LiberoConfig(suite=suite, cameras=())), LiberoArm(LiberoConfig(suite=suite, cameras=())),
                 LiberoArm(LiberoConfig(suite=suite, cameras=CAMERAS, image_size=image_size)))
    return _ARMS


def _close_arms() -> None:
    global _ARMS
    for arm in _ARMS or ():
        arm.close()
    _ARMS = None


def _one_raster_thread() -> None:
    # One software-GL raster thread per worker (read when its GL context is made): with a thread per core in
    # each, two workers contend (10 % slower).
    os.environ["LP_NUM_THREADS"] = "1"


def _task(job) -> tuple[str, dict]:
    """One task's file: attempts from consecutive init indices until `episodes` succeeded (at most 3x)."""
    out, suite, task, episodes, first_init, image_size, max_steps, noise, seed = job
    physics, shadow, cameras = _arms(suite, image_size)
    index = physics.task_index_of(task)
    rng = np.random.default_rng([seed, index])
    path = pathlib.Path(out) / f"{task}.hdf5.part"
    path.unlink(missing_ok=True)
    kept, attempted = 0, []
    init = first_init
    while kept < episodes and len(attempted) < 3 * episodes:
        actions, states, ok, goals = demonstrate(physics, shadow, task, init, max_steps, rng, noise)
        attempted.append(init)
        if ok:
            images, joints = render(cameras, task, init, states)
            write_camera_demo(path, images, joints, actions,
                              {"language_instruction": physics.tasks[index].language, "task": task, "success": True,
                               "source": "gen-data", "init_index": init, "goals": json.dumps(goals),
                               "expert_noise": noise},
                              physics.cfg.control_freq, "gen-data")
            kept += 1
        init += 1
    if kept:
        path.rename(path.with_suffix(""))  # a task's file appears whole or not at all (resumable)
    return task, {"kept": kept, "attempted_inits": attempted}


def generate(out: str, suite: str = "libero_goal", episodes: int = 50, tasks=None, first_init: int = SAMPLED_INITS,
             image_size: int = 128, max_steps: int = 300, noise: float = 0.0, seed: int = 0, workers: int = 2) -> dict:
    outdir = pathlib.Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    names = list(tasks) if tasks else list(PLANS)
    done = [t for t in names if (outdir / f"{t}.hdf5").exists()]
    todo = [t for t in names if t not in done]  # resumable: finished tasks are kept
    start = time.time()
    jobs = [(out, suite, task, episodes, first_init, image_size, max_steps, expert_noise(task, noise), seed)
            for task in todo]
    report = {}
    if workers <= 1 or len(jobs) <= 1:
        try:
            report.update(map(_task, jobs))
        finally:
            _close_arms()
    else:
        # A task at a time to whichever worker is free: a fixed split left one worker idle for minutes.
        with mp.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_one_raster_thread) as pool:
            report.update(pool.imap_unordered(_task, jobs, chunksize=1))
        report = {t: report[t] for t in todo}
    summary = {"tasks": report, "skipped_existing": done, "wall_time_s": round(time.time() - start, 1)}
    (outdir / "gen_data_report.json").write_text(json.dumps(summary, indent=2))
    return summary
