"""Training phrasings made by rule: `templates` per task over the shared `words` of config/tasks.yaml.

"{push} the {puck} {to} the {goal}" becomes every combination of the slot words (a seeded sample of `per_task`
when there are more). A made sentence within one word of an evaluation phrasing of any task (`heldout`, `wide`,
or any other list but `train`: one word replaced, added or removed) is dropped, so evaluation sets stay unseen by
training and by instruction mixing, near-copies included.
"""
from __future__ import annotations

import itertools
import string

import numpy as np

NOT_EVALUATION = ("train", "templates")  # every other list of phrasings under a task is kept out of training


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def evaluation_phrasings(tasks: dict) -> set[str]:
    return {normalize(p) for spec in tasks.values() for key, value in spec.items()
            if key not in NOT_EVALUATION and isinstance(value, list) and all(isinstance(v, str) for v in value)
            for p in value}


class NearMatcher:
    """Is a sentence within one word (replaced, inserted or deleted) of any of a set of sentences?"""

    def __init__(self, sentences):
        words = [tuple(normalize(s).split()) for s in sentences]
        self.exact = set(words)
        self.replaced = {w[:i] + ("*",) + w[i + 1:] for w in words for i in range(len(w))}
        self.shortened = {w[:i] + w[i + 1:] for w in words for i in range(len(w))}

    def __contains__(self, sentence: str) -> bool:
        w = tuple(normalize(sentence).split())
        return (w in self.exact or w in self.shortened  # the same, or one word short of one
                or any(w[:i] + ("*",) + w[i + 1:] in self.replaced for i in range(len(w)))
                or any(w[:i] + w[i + 1:] in self.exact for i in range(len(w))))  # one word more


def expand(templates: list[str], words: dict[str, list[str]]) -> list[str]:
    out = []
    for template in templates:
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        missing = [s for s in slots if s not in words]
        if missing:
            raise ValueError(f"template {template!r}: no words for {missing} (tasks file `words:`)")
        for combo in itertools.product(*(words[s] for s in slots)):
            out.append(template.format(**dict(zip(slots, combo))))
    return list(dict.fromkeys(normalize(t) for t in out))


def training_phrasings(table: dict, key: str = "train", per_task: int = 0, seed: int = 0) -> dict[str, list[str]]:
    """{task: phrasings} for training: the `key` list, plus up to `per_task` made from the task's templates."""
    tasks, words = table["tasks"], table.get("words", {})
    held = evaluation_phrasings(tasks)
    near = NearMatcher(held)
    rng = np.random.default_rng(seed)
    out = {}
    for task, spec in tasks.items():
        base = list(spec.get(key, []))
        leaked = [p for p in base if normalize(p) in held]
        if leaked:
            raise ValueError(f"{task}: training phrasings {leaked} are also evaluation phrasings")
        made = []
        if per_task and spec.get("templates"):
            own = {normalize(p) for p in base}
            pool = [p for p in expand(spec["templates"], words) if p not in near and p not in own]
            made = pool if len(pool) <= per_task else [pool[i] for i in sorted(rng.choice(len(pool), per_task,
                                                                                         replace=False))]
        out[task] = base + made
    return out
