"""`hypervla eval --suite libero_goal...`: closed loop on the Panda from LIBERO's standard initial states.

Episode k of a task starts from init state k (0-49, which no demonstration starts from: gen-data samples its
own placements), runs at most `max_steps` commands and succeeds when the instructed task's goal holds (LIBERO's
own predicates). After every step every goal of the suite is checked: a goal that comes to hold and is not the
instructed one is a wrong goal, the case where the words did not decide the task. With `inits="others"` an
instruction is given in the other tasks' initial states instead (episode k: the k-th of the others in turn,
its init state k), as the instruction x achieved-goal confusion matrix asks.
"""
from __future__ import annotations

import atexit
import json
import multiprocessing as mp
import os
import pathlib
import time

import numpy as np
from tqdm import tqdm

from . import checkpoint as ckpt
from .evaluate import check_phrasings, limit_figures, limited, task_figures, wilson
from .sim import load_tasks, tasks_file

_WORKER: dict = {}
NO_GOAL = "(none)"


def libero_tasks(spec: str, table: dict) -> tuple[str, list[str]]:
    """'libero_goal', a suite of config/libero_tasks.yaml, or 'libero_goal:task,task' -> (benchmark, tasks)."""
    suite, _, names = spec.partition(":")
    if names:
        tasks = [t for t in names.split(",") if t]
    elif suite in table["suites"]:
        tasks = list(table["suites"][suite])
    else:
        raise ValueError(f"unknown LIBERO suite {suite!r}; known: {sorted(table['suites'])} (or {suite}:task,task)")
    unknown = [t for t in tasks if t not in table["tasks"]]
    if unknown:
        raise ValueError(f"unknown LIBERO task(s) {unknown}; known: {sorted(table['tasks'])}")
    return "libero_goal" if suite.startswith("libero_goal") else suite, tasks


def tile(images: dict[str, np.ndarray], cameras) -> np.ndarray:
    """The cameras side by side in the checkpoint's order: the frame layout the model reads."""
    return np.concatenate([images[c] for c in cameras], axis=1)


def _pool_init(*args) -> None:
    os.environ["LP_NUM_THREADS"] = "1"  # one software-GL raster thread per worker (as libero_data's)
    _init(*args)


def _init(checkpoint: str, cameras: tuple[str, ...], benchmark: str, threads: int, max_steps: int,
          limits=None) -> None:
    import torch

    from .libero_env import LiberoArm, LiberoConfig
    from .runtime import Generator, Runtime

    torch.set_num_threads(threads)
    _WORKER["gen"] = Generator.load(checkpoint)
    _WORKER["rt"] = rt = Runtime.load(checkpoint)
    _WORKER["cameras"] = cameras
    _WORKER["limits"] = limits
    _WORKER["arm"] = LiberoArm(LiberoConfig(suite=benchmark, cameras=cameras, image_size=rt.model.cfg.image_size,
                                            max_steps=max_steps))
    atexit.register(_close)


def _close() -> None:
    arm = _WORKER.pop("arm", None)
    if arm is not None:
        arm.close()  # explicit close, or EGL complains at interpreter exit


def episode(arm, task: str, scene_task: str, init: int, act, cameras, keep_frames: bool = False) -> dict:
    """One episode of `task` from `scene_task`'s init state `init`; act(image, observation) -> action."""
    obs = arm.reset(scene_task, init)
    arm.set_task(task)
    before = set(arm.goals_reached())  # goals that already hold do not count as reached
    image = tile(obs.images, cameras)
    frames, reached, success = [], [], False
    while not arm.done and not success:
        if keep_frames:
            frames.append(image)
        obs, success = arm.step(act(image, obs))
        image = tile(obs.images, cameras)
        reached += [g for g in arm.goals_reached() if g not in before and g not in reached]
    if keep_frames:
        frames.append(image)
    return {"task": task, "scene_task": scene_task, "init_index": init, "success": success, "steps": arm.steps,
            "reached": reached, "wrong_goal": any(g != task for g in reached), "frames": frames or None}


def run_episode(job) -> dict:
    task, scene_task, init, instruction, keep_frames = job
    gen, rt = _WORKER["gen"], _WORKER["rt"]
    policy, step_ms = None, []

    def act(image, obs):
        nonlocal policy
        if policy is None:  # the hypernetwork reads the instruction and the episode's first frame
            policy = limited(gen.generate(instruction, image).bind(rt), _WORKER["limits"])
        t = time.perf_counter()
        action = policy.step(image, obs.joints)
        step_ms.append((time.perf_counter() - t) * 1000)
        return action

    result = episode(_WORKER["arm"], task, scene_task, init, act, _WORKER["cameras"], keep_frames)
    return {**result, "instruction": instruction, "limited_steps": getattr(policy, "limited", 0),
            "policy_step_ms_p50": float(np.median(step_ms))}


def jobs_for(tasks: list[str], all_tasks: list[str], table: dict, episodes: int, phrasings: str, inits: str,
             seed: int, gifs: bool) -> list[tuple]:
    rng = np.random.default_rng(seed)
    jobs = []
    for task in tasks:
        options = table["tasks"][task][phrasings]
        others = [t for t in all_tasks if t != task]
        for k in range(episodes):
            scene = task if inits == "own" else others[k % len(others)]
            jobs.append((task, scene, k, options[rng.integers(len(options))], gifs and k == 0))
    return jobs


def evaluate_libero(checkpoint: str, out_dir: str, suite: str = "libero_goal_train", episodes: int = 50,
                    seed: int = 0, phrasings: str = "train", inits: str = "own", workers: int = 2,
                    max_steps: int = 300, tasks_file_path=None, gifs: bool = True, threads: int | None = None,
                    limits=None) -> dict:
    if inits not in ("own", "others"):
        raise ValueError(f"inits must be 'own' or 'others', got {inits!r}")
    table = load_tasks(tasks_file_path or tasks_file("libero_tasks.yaml"))
    benchmark, tasks = libero_tasks(suite, table)
    check_phrasings(table, tasks, phrasings)
    if not 1 <= episodes <= 50:
        raise ValueError(f"episodes per task must be 1-50 (LIBERO's standard initial states), got {episodes}")
    loaded = ckpt.load(checkpoint, prefixes=())
    cameras = loaded.meta.get("extra", {}).get("cameras")
    if not cameras or len(cameras) != loaded.cfg.views:
        raise ValueError(f"{checkpoint} does not record its {loaded.cfg.views} camera(s) by name (trained on LIBERO "
                         f"data, `hypervla info` lists them); it cannot run on the Panda")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(tasks, list(table["suites"].get(benchmark, tasks)), table, episodes, phrasings, inits, seed, gifs)
    start = time.time()
    threads = threads or max(1, 2 // workers)
    args = (checkpoint, tuple(cameras), benchmark, threads, max_steps, limits)
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_pool_init, initargs=args) as pool:
            results = list(tqdm(pool.imap(run_episode, jobs, chunksize=1), total=len(jobs), desc="episodes", unit="ep"))
    else:
        _init(*args)
        try:
            results = [run_episode(j) for j in tqdm(jobs, desc="episodes", unit="ep")]
        finally:
            _close()
    report = summarize(results, tasks, checkpoint, suite, phrasings, inits, episodes, seed)
    report.update(limit_figures(results, limits))
    report["wall_time_s"] = round(time.time() - start, 1)
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    for task in tasks:
        frames = next((r["frames"] for r in results if r["task"] == task and r["frames"]), None)
        if frames:
            import imageio.v2 as imageio

            imageio.mimsave(out / f"{task}.gif", frames[::2], duration=0.1)
    print(f"mean success {report['mean_success']:.3f} (95% CI {report['mean_ci95']}), wrong goal "
          f"{report['wrong_goal_rate']:.3f}, over {len(results)} episodes ({inits} initial states)")
    for task, v in report["per_task"].items():
        print(f"  {task:45s} {v['success_rate']:.2f}  [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]  "
              f"wrong goal {v['wrong_goal']}")
    return report


def summarize(results: list[dict], tasks: list[str], checkpoint: str, suite: str, phrasings: str, inits: str,
              episodes: int, seed: int) -> dict:
    per_task, confusion = {}, {}
    goals = sorted({g for r in results for g in r["reached"]})
    for task in tasks:
        rs = [r for r in results if r["task"] == task]
        per_task[task] = {**task_figures(rs), "wrong_goal": sum(r["wrong_goal"] for r in rs),
                          "scenes": [[r["scene_task"], r["init_index"]] for r in rs]}
        # instruction x achieved goal: episodes in which each goal came to hold (an episode can reach several)
        row = {g: sum(g in r["reached"] for r in rs) for g in goals}
        row[NO_GOAL] = sum(not r["reached"] for r in rs)
        confusion[task] = row
    n = len(results)
    n_ok = sum(r["success"] for r in results)
    return {
        "checkpoint": str(checkpoint), "suite": suite, "phrasings": phrasings, "inits": inits,
        "episodes_per_task": episodes, "seed": seed,
        "mean_success": n_ok / n, "mean_ci95": [round(v, 3) for v in wilson(n_ok, n)],
        "min_task_success": min(v["success_rate"] for v in per_task.values()),
        "wrong_goal_rate": sum(r["wrong_goal"] for r in results) / n,
        "per_task": per_task, "confusion": confusion,
        "policy_step_ms_p50": float(np.median([r["policy_step_ms_p50"] for r in results])),
    }
