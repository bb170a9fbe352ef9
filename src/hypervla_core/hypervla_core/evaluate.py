"""`hypervla eval`: closed-loop success in Meta-World through the same TaskPolicy path the robot runs.

Episodes use seeds from EVAL_SEED_OFFSET on, which gen-data never uses, so object and goal positions are
unseen. Writes eval.json, a bar chart (success per task with 95% Wilson intervals) and one GIF per task.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import math
import multiprocessing as mp
import pathlib
import time

import numpy as np
from tqdm import tqdm

from . import checkpoint as ckpt
from .sim import MetaWorldTask, camera_name, camera_views, load_tasks, suite_tasks

EVAL_SEED_OFFSET = 900_000_000
_WORKER: dict = {}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def task_figures(rs: list[dict]) -> dict:
    """One task's episodes -> success rate, 95 % Wilson interval, per-episode success and steps (to success,
    or the episode length on failure)."""
    n_ok = sum(r["success"] for r in rs)
    lo, hi = wilson(n_ok, len(rs))
    return {"success_rate": n_ok / len(rs), "ci95": [round(lo, 3), round(hi, 3)], "episodes": len(rs),
            "successes": [bool(r["success"]) for r in rs], "steps": [int(r["steps"]) for r in rs]}


def _init(checkpoint: str, threads: int, limits=None) -> None:
    import torch

    from .runtime import Generator, Runtime

    torch.set_num_threads(threads)
    _WORKER["limits"] = limits
    _WORKER["gen"] = Generator.load(checkpoint)
    _WORKER["rt"] = Runtime.load(checkpoint)
    _WORKER["sims"] = {}
    atexit.register(_close_sims)


def _close_sims() -> None:
    for sim in _WORKER.pop("sims", {}).values():
        sim.close()  # explicit close, or EGL complains at interpreter exit


def run_episode(job) -> dict:
    task, seed, instruction, max_steps, keep_frames, tasks_file, camera = job
    sims = _WORKER["sims"]
    if task not in sims:
        sims[task] = MetaWorldTask(task, image_size=_WORKER["rt"].model.cfg.image_size, camera=camera,
                                   max_steps=max_steps, tasks_file=tasks_file)
    sim = sims[task]
    obs = sim.reset(seed)
    policy = limited(_WORKER["gen"].generate(instruction, obs.image).bind(_WORKER["rt"]), _WORKER["limits"])
    frames, success, step_ms = [], False, []
    while not sim.done:
        if keep_frames:
            frames.append(obs.image)
        t = time.perf_counter()
        action = policy.step(obs.image, obs.proprio)
        step_ms.append((time.perf_counter() - t) * 1000)
        obs, success, _ = sim.step(action)
        if success:
            frames.append(obs.image)
            break
    return {"task": task, "seed": seed, "instruction": instruction, "success": success, "steps": sim.steps,
            "limited_steps": getattr(policy, "limited", 0), "policy_step_ms_p50": float(np.median(step_ms)),
            "frames": frames if keep_frames else None}


def limited(policy, limits):
    """The policy as the controller runs it (behind its SafetyFilter) when eval was given --limits."""
    from .safety import LimitedPolicy

    return policy if limits is None else LimitedPolicy(policy, limits)


def limit_figures(results: list[dict], limits) -> dict:
    """What the safety layer did in an eval: the limits, and the share of steps it changed the action."""
    if limits is None:
        return {"limits": None}
    steps = sum(r["steps"] for r in results)
    return {"limits": dataclasses.asdict(limits),
            "limited_fraction": round(sum(r["limited_steps"] for r in results) / max(1, steps), 4)}


def check_phrasings(table: dict, tasks: list[str], phrasings: str) -> None:
    """Every task asked about has the phrasing list asked for, or the error names those that lack it."""
    missing = [t for t in tasks if phrasings not in table["tasks"][t]]
    if missing:
        raise ValueError(f"no {phrasings!r} phrasings for {missing} in the tasks file (pick a --suite of tasks "
                         f"that have them)")


def evaluate(checkpoint: str, out_dir: str, suite: str = "mt10", episodes: int = 50, seed: int = 0,
             phrasings: str = "train", workers: int = 2, max_steps: int = 200, tasks_file=None,
             gifs: bool = True, camera: str | None = None, threads: int | None = None, limits=None) -> dict:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = suite_tasks(suite, tasks_file)
    table = load_tasks(tasks_file)
    # Default view: the one the checkpoint was trained on (recorded by train), else the tasks file's.
    loaded = ckpt.load(checkpoint, prefixes=())
    camera = camera_name(camera or loaded.meta.get("extra", {}).get("camera"), table)
    if len(camera_views(camera, table)) != loaded.cfg.views:
        raise ValueError(f"{checkpoint} takes {loaded.cfg.views} camera view(s) per frame; camera {camera!r} "
                         f"renders {len(camera_views(camera, table))} (pick one with --camera)")
    check_phrasings(table, tasks, phrasings)
    rng = np.random.default_rng(seed)
    jobs = []
    for ti, task in enumerate(tasks):
        options = table["tasks"][task][phrasings]
        for k in range(episodes):
            jobs.append((task, EVAL_SEED_OFFSET + seed * 100_000 + ti * 1000 + k,
                         options[rng.integers(len(options))], max_steps, gifs and k == 0, tasks_file, camera))
    start = time.time()
    threads = threads or max(1, 2 // workers)  # torch threads per worker
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(checkpoint, threads, limits)) as pool:
            results = list(tqdm(pool.imap(run_episode, jobs, chunksize=1), total=len(jobs), desc="episodes", unit="ep"))
    else:
        _init(checkpoint, threads, limits)
        results = [run_episode(j) for j in tqdm(jobs, desc="episodes", unit="ep")]
        _close_sims()
    per_task = {}
    for task in tasks:
        rs = [r for r in results if r["task"] == task]
        per_task[task] = task_figures(rs)
        frames = next((r["frames"] for r in rs if r["frames"]), None)
        if frames:
            import imageio.v2 as imageio

            imageio.mimsave(out / f"{task}.gif", [np.kron(f, np.ones((2, 2, 1), np.uint8)) for f in frames[::2]],
                            duration=0.08)
    n = len(results)
    n_ok = sum(r["success"] for r in results)
    report = {
        "checkpoint": str(checkpoint), "suite": suite, "phrasings": phrasings, "camera": camera,
        "episodes_per_task": episodes,
        "seed": seed, "mean_success": n_ok / n, "mean_ci95": [round(v, 3) for v in wilson(n_ok, n)],
        "min_task_success": min(v["success_rate"] for v in per_task.values()), "per_task": per_task,
        "policy_step_ms_p50": float(np.median([r["policy_step_ms_p50"] for r in results])),
        **limit_figures(results, limits), "wall_time_s": round(time.time() - start, 1),
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    _bar_chart(report, out / "success.png")
    print(f"mean success {report['mean_success']:.3f} (95% CI {report['mean_ci95']}) over {n} episodes")
    for task, v in per_task.items():
        print(f"  {task:28s} {v['success_rate']:.2f}  [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]")
    return report


def _bar_chart(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["per_task"])
    rates = [report["per_task"][t]["success_rate"] for t in tasks]
    lo = [r - report["per_task"][t]["ci95"][0] for t, r in zip(tasks, rates)]
    hi = [report["per_task"][t]["ci95"][1] - r for t, r in zip(tasks, rates)]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(range(len(tasks)), rates, yerr=[lo, hi], capsize=3, color="#4C72B0")
    ax.set_xticks(range(len(tasks)), [t.replace("-v3", "") for t in tasks], rotation=35, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(f"{report['suite']} ({report['phrasings']} phrasings): mean {report['mean_success']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
