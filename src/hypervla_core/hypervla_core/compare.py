"""`hypervla compare`: two evaluations of the same episodes, episode by episode.

Two success rates on the same initial states are paired samples: what tells them apart is the episodes one
model succeeds in and the other fails (gained, lost), and an exact two-sided sign test on those: the paired
figures "A against B" in docs/results.md.
"""
from __future__ import annotations

import json
import pathlib

from scipy.stats import binomtest

# What makes episode k of a task the same episode in both reports (Meta-World: the seed and the task's place in
# the suite pick the positions; LIBERO: the suite and `inits` pick the initial state).
PAIRING_KEYS = ("suite", "seed", "inits")


def sign_test(gained: int, lost: int) -> float:
    n = gained + lost
    return 1.0 if n == 0 else float(binomtest(gained, n, 0.5).pvalue)


def paired(before: dict, after: dict) -> dict:
    """Per task and in all: successes before and after on the first n episodes both ran, gained, lost, p."""
    for key in PAIRING_KEYS:
        if before.get(key) != after.get(key):
            raise ValueError(f"the reports ran different episodes ({key}: {before.get(key)!r} against "
                             f"{after.get(key)!r}); compare evaluations of the same suite, seed and inits")
    tasks = [t for t in before["per_task"] if t in after["per_task"]]
    if not tasks:
        raise ValueError("the reports share no task")
    rows, total = {}, {"episodes": 0, "before": 0, "after": 0, "gained": 0, "lost": 0}
    for task in tasks:
        a, b = before["per_task"][task]["successes"], after["per_task"][task]["successes"]
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        row = {"episodes": n, "before": sum(a), "after": sum(b),
               "gained": sum(y and not x for x, y in zip(a, b)), "lost": sum(x and not y for x, y in zip(a, b))}
        rows[task] = {**row, "p": sign_test(row["gained"], row["lost"])}
        for k in total:
            total[k] += row[k]
    total["p"] = sign_test(total["gained"], total["lost"])
    return {"before": before.get("checkpoint"), "after": after.get("checkpoint"), "per_task": rows, "total": total}


def compare_files(before: str, after: str) -> dict:
    reports = []
    for path in (before, after):
        p = pathlib.Path(path)
        p = p / "eval.json" if p.is_dir() else p
        try:
            report = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p} is not an eval report: {exc}") from None
        per_task = report.get("per_task") if isinstance(report, dict) else None
        if not isinstance(per_task, dict) or not all(isinstance(v, dict) and isinstance(v.get("successes"), list)
                                                     for v in per_task.values()):
            raise ValueError(f"{p} is not an eval report (no per-episode successes per task)")
        reports.append(report)
    return paired(*reports)


def print_comparison(c: dict) -> None:
    print(f"before: {c['before']}\nafter:  {c['after']}")
    print(f"{'task':44s} {'before':>7s} {'after':>7s} {'gained':>6s} {'lost':>5s} {'p':>6s}")
    for name, r in [*c["per_task"].items(), ("all", c["total"])]:
        n = r["episodes"]
        print(f"{name[:44]:44s} {r['before'] / n:7.3f} {r['after'] / n:7.3f} {r['gained']:6d} {r['lost']:5d} "
              f"{r['p']:6.3f}")
