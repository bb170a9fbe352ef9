"""`hypervla gen-data`: language-conditioned demonstrations from Meta-World's scripted experts.

Each attempt is one episode with random object/goal positions (seeded, so the same seed gives the same
episode). The executed action gets Gaussian noise while the clean expert action is recorded (DART-style),
so the data shows how to recover from small mistakes. Only successful episodes are kept. Files are
appended task by task; a re-run skips the seeds already attempted (resumable), and a task still short
after a round of attempts gets another one.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import pathlib
import time

import h5py
import numpy as np
from tqdm import tqdm

from .data import write_demo
from .sim import MetaWorldTask, camera_name, load_tasks, render_settings, suite_tasks

_SIMS: dict[str, MetaWorldTask] = {}


def run_episode(task: str, seed: int, image_size: int, noise: float, max_steps: int, tasks_file=None,
                camera: str | None = None, settle_steps: int = 10):
    """One expert episode; returns arrays or None when the expert failed."""
    sim = _SIMS.get(task)
    if sim is None:
        sim = _SIMS[task] = MetaWorldTask(task, image_size=image_size, camera=camera, max_steps=max_steps,
                                          tasks_file=tasks_file)
    rng = np.random.default_rng(seed)
    obs = sim.reset(seed)
    images, props, acts = [], [], []
    success_at = None
    while not sim.done:
        clean = sim.expert_action()
        images.append(obs.image)
        props.append(obs.proprio)
        acts.append(clean)
        executed = clean.copy()
        executed[:3] += rng.normal(0.0, noise, 3) * 0.01  # noise in Meta-World units (1 = 1 cm)
        obs, success, _ = sim.step(executed)
        if success and success_at is None:
            success_at = sim.steps
        if success_at is not None and sim.steps >= success_at + settle_steps:
            break
    if success_at is None:
        return None
    return np.stack(images), np.stack(props), np.stack(acts)


def _worker(job):
    task, seed = job[:2]
    return task, seed, run_episode(*job)


def _init_worker():
    import torch

    torch.set_num_threads(1)


def generate(out_dir: str, suite: str = "mt10", episodes: int = 40, seed: int = 0, workers: int = 2,
             image_size: int = 64, noise: float = 0.3, max_steps: int = 200, tasks_file=None,
             camera: str | None = None, max_rounds: int = 20) -> dict:
    """Top every task up to `episodes` kept episodes. Each round attempts about 30 % more fresh seeds than
    are missing (the experts with noisy execution sometimes fail) and a task still short gets another
    round, up to max_rounds; a round is the same as running the command again, so the data does not depend
    on how often it was interrupted."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = suite_tasks(suite, tasks_file)
    table = load_tasks(tasks_file)
    phrasings = table["tasks"]
    camera = camera_name(camera, table)
    render = {task: render_settings(task, camera, table) for task in tasks}
    kept: dict[str, int] = {}
    attempted: dict[str, set] = {}
    for task in tasks:
        path = out / f"{task}.hdf5"
        kept[task], attempted[task] = 0, set()
        if path.exists():
            with h5py.File(path, "r") as f:
                # Files from before settings were recorded were made with the corner camera.
                made_with = json.loads(f.attrs.get("render", '{"camera": "corner"}'))
                if "data" in f and made_with != render[task]:
                    differ = sorted(k for k in made_with.keys() | render[task].keys()
                                    if made_with.get(k) != render[task].get(k))
                    raise ValueError(f"{path} was made with {made_with}; topping it up with {render[task]} "
                                     f"would mix episodes that differ in {', '.join(differ)} "
                                     "(use another --out, or --camera)")
                attempted[task] = set(int(s) for s in f.attrs.get("attempted_seeds", []))
                kept[task] = len(f["data"].keys()) if "data" in f else 0
    start = time.time()
    rounds = 0
    while rounds < max_rounds and any(kept[t] < episodes for t in tasks):
        rounds += 1
        jobs = []
        for ti, task in enumerate(tasks):
            missing = episodes - kept[task]
            if missing <= 0:
                continue
            # Seeds are disjoint per task and far from evaluation seeds (see evaluate.EVAL_SEED_OFFSET).
            base = seed * 1_000_000 + ti * 10_000
            fresh = (base + k for k in range(10_000) if base + k not in attempted[task])
            task_noise = float(phrasings[task].get("expert_noise", noise))  # some experts fail too often with noise
            jobs += [(task, next(fresh), image_size, task_noise, max_steps, tasks_file, camera)
                     for _ in range(int(missing * 1.3) + 2)]
        _run_jobs(jobs, out, episodes, kept, attempted, render, phrasings, workers, rounds)
    summary = {"suite": suite, "tasks": kept, "episodes_per_task": episodes, "seed": seed, "camera": camera,
               "rounds": rounds, "wall_time_s": round(time.time() - start, 1)}
    short = {t: n for t, n in kept.items() if n < episodes}
    print(f"kept {sum(kept.values())} episodes over {len(tasks)} tasks in {summary['wall_time_s']} s, {rounds} round(s)")
    for t, n in kept.items():
        print(f"  {t:28s} {n:4d}" + (f"  (short after {max_rounds} rounds: run again to top up)" if t in short else ""))
    return summary


def _run_jobs(jobs, out: pathlib.Path, episodes: int, kept: dict, attempted: dict, render: dict, phrasings: dict,
              workers: int, round_no: int) -> None:
    """Run attempts in parallel; append the successes (in seed order, so runs are deterministic)."""
    files = {}
    try:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool, \
                tqdm(total=len(jobs), desc=f"episodes (round {round_no})", unit="ep") as bar:
            for task, s, result in pool.imap(_worker, jobs, chunksize=1):
                bar.update(1)
                if task not in files:
                    files[task] = h5py.File(out / f"{task}.hdf5", "a")
                    files[task].attrs["render"] = json.dumps(render[task], sort_keys=True)
                f = files[task]
                attempted[task].add(s)  # every seed simulated, kept or not: a re-run does not repeat it
                f.attrs["attempted_seeds"] = sorted(attempted[task])
                if result is not None and kept[task] < episodes:
                    images, props, acts = result
                    write_demo(f, images, props, acts, phrasings[task]["train"], task, s)
                    kept[task] += 1
                f.flush()
    finally:
        for f in files.values():
            f.close()
