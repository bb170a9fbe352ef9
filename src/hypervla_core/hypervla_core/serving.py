"""One generator for many robots: cache, bounded queue, batched generation. No ROS; the generator node wraps it.

A request is answered at once from the cache, joins an identical request already waiting, is refused with
"busy: N requests queued, retry" when `max_queued` are waiting, or waits for the worker thread. The worker
takes up to `max_batch` waiting requests and generates them in one pass (`Generator.generate_batch`), so
requests that arrive during a generation are served by the next one together.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .runtime import InputError, check_instruction
from .task_policy import TaskPolicy


class Busy(RuntimeError):
    """The queue is full: the caller should retry later."""


@dataclass
class ServeConfig:
    cache_size: int = 64  # generated policies kept (LRU)
    max_queued: int = 64  # waiting requests beyond this are refused as busy
    max_batch: int = 16  # requests generated together in one pass (1 = one at a time)


@dataclass
class _Job:
    key: tuple
    instruction: str
    first_image: np.ndarray | None
    future: Future
    waiters: int = 1


class PolicyServer:
    """Thread-safe: `submit` from any thread; `serve_forever` (or `serve_once`) on the worker thread."""

    def __init__(self, generator, cfg: ServeConfig):
        if cfg.max_batch < 1 or cfg.max_queued < 0 or cfg.cache_size < 0:
            raise ValueError(f"bad ServeConfig {cfg}")
        self.generator, self.cfg = generator, cfg
        self.cache: OrderedDict[tuple, TaskPolicy] = OrderedDict()
        self.waiting: OrderedDict[tuple, _Job] = OrderedDict()
        self.running: dict[tuple, _Job] = {}
        self.lock = threading.Condition()
        self.closed = False
        self.counts = {"cache_hits": 0, "queued": 0, "joined": 0, "refused_busy": 0, "answered": 0, "failed": 0,
                       "batches": 0, "batched_requests": 0}
        self.generation_ms: deque[float] = deque(maxlen=500)  # recent generations, for diagnostics

    def key(self, instruction: str, first_image: np.ndarray | None) -> tuple:
        image_key = b"" if first_image is None else hashlib.sha256(first_image.tobytes()).digest() + \
            np.asarray(first_image.shape).tobytes()
        return (check_instruction(instruction), image_key, self.generator.model_id)

    def submit(self, instruction: str, first_image: np.ndarray | None = None) -> Future:
        """A future of the TaskPolicy (or of the InputError/failure). Raises InputError or Busy at once."""
        key = self.key(instruction, first_image)
        with self.lock:
            if self.closed:
                raise Busy("generator is shutting down")
            policy = self.cache.get(key)
            if policy is not None:
                self.cache.move_to_end(key)
                self.counts["cache_hits"] += 1
                self.counts["answered"] += 1
                done: Future = Future()
                done.set_result(policy)
                return done
            same = self.waiting.get(key) or self.running.get(key)
            if same is not None:  # an identical request is already on its way: share its answer
                same.waiters += 1
                self.counts["joined"] += 1
                return same.future
            if len(self.waiting) >= self.cfg.max_queued:
                self.counts["refused_busy"] += 1
                raise Busy(f"busy: {len(self.waiting)} requests queued, retry")
            job = _Job(key, instruction, first_image, Future())
            self.waiting[key] = job
            self.counts["queued"] += 1
            self.lock.notify()
            return job.future

    def snapshot(self) -> dict:
        """Counts since start, what waits now, and generation time p50/p99 (ms) of recent batches."""
        with self.lock:
            ms = np.asarray(self.generation_ms) if self.generation_ms else np.zeros(1)
            return {**self.counts, "queued_now": len(self.waiting), "generating_now": len(self.running),
                    "cache_entries": len(self.cache), "generation_ms_p50": float(np.percentile(ms, 50)),
                    "generation_ms_p99": float(np.percentile(ms, 99))}

    def serve_once(self, timeout: float | None = None) -> int:
        """Generate the next batch (waiting up to `timeout` for one); returns how many requests it served."""
        with self.lock:
            if not self.waiting and not self.lock.wait_for(lambda: self.waiting or self.closed, timeout):
                return 0
            if self.closed:
                return 0
            jobs = []
            while self.waiting and len(jobs) < self.cfg.max_batch:
                _, job = self.waiting.popitem(last=False)
                self.running[job.key] = job
                jobs.append(job)
        try:
            results: list = self.generator.generate_batch([(j.instruction, j.first_image) for j in jobs])
        except Exception:
            # One bad request must not fail the others: generate each alone, so each gets its own answer.
            results = []
            for j in jobs:
                try:
                    results.append(self.generator.generate(j.instruction, j.first_image))
                except Exception as exc:
                    results.append(exc)
        with self.lock:
            self.counts["batches"] += 1
            self.counts["batched_requests"] += len(jobs)
            for job, result in zip(jobs, results):
                del self.running[job.key]
                if isinstance(result, Exception):
                    self.counts["failed"] += job.waiters
                    continue
                self.counts["answered"] += job.waiters
                self.generation_ms.append(result.generation_time_ms)
                if self.cfg.cache_size > 0:
                    self.cache[job.key] = result
                    while len(self.cache) > self.cfg.cache_size:
                        self.cache.popitem(last=False)
        for job, result in zip(jobs, results):  # outside the lock: callbacks may submit again
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        return len(jobs)

    def serve_forever(self) -> None:
        while not self.closed:
            self.serve_once(timeout=0.5)

    def close(self) -> None:
        """Stop serving; waiting requests fail with Busy (their callers get an answer, not silence)."""
        with self.lock:
            self.closed = True
            jobs = list(self.waiting.values())
            self.waiting.clear()
            self.lock.notify_all()
        for job in jobs:
            job.future.set_exception(Busy("generator is shutting down"))


__all__ = ["Busy", "InputError", "PolicyServer", "ServeConfig"]
