"""Which frozen language encoder tells MT10's tasks apart in words it was not trained on?

A cheap screen before a from-scratch training run (40 - 70 minutes here): fit a linear probe (logistic regression) on the sentence
embeddings of the training phrasings (`train` plus the rule-made ones, as `hypervla train` makes them), then
classify the held-out sets. It measures the encoder, not the policy: a task the probe confuses is one the
hypernetwork must learn to separate from training phrasings alone.

    python bench/language_probe.py [--encoder DIR ...]    # about a minute for MiniLM-L6
    python bench/language_probe.py --layers 4,5,6         # the mean over several layers' tokens instead

It also prints how alike the sentence vectors of opposite tasks are (cosine; the swapped probe's pairs): the
closer they are, the less the words alone can tell "open the window" from "close the window".
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from hypervla_core.encoders import LanguageEncoder
from hypervla_core.model import sentence_vector
from hypervla_core.phrasings import training_phrasings
from hypervla_core.sim import load_tasks


OPPOSITES = [("open the window", "close the window"), ("open the drawer", "close the drawer"),
             ("push the puck to the goal", "pick up the puck and place it at the goal")]


@torch.no_grad()
def embed(enc: LanguageEncoder, sentences: list[str], layers: tuple[int, ...] = ()) -> np.ndarray:
    """Unit-length masked mean of the last layer: the sentence vector ModelConfig.lang_pool "mean" feeds the model.
    With `layers`, the mean of those hidden layers' tokens (0 = the embeddings) is pooled instead."""
    out = []
    for i in range(0, len(sentences), 128):
        chunk = sentences[i:i + 128]
        if layers:
            batch = enc.tokenize(chunk)
            hidden = enc.model(**batch, output_hidden_states=True).hidden_states
            tokens, mask = torch.stack([hidden[k] for k in layers]).mean(0), batch["attention_mask"].bool()
        else:
            tokens, mask = enc(chunk)  # the encoder's own call, as training makes it
        out.append(sentence_vector(tokens, mask)[0][:, 0].numpy())
    return np.concatenate(out)


def probe(train_x, train_y, test_x, classes: int, steps: int = 300) -> np.ndarray:
    """Multinomial logistic regression by full-batch gradient descent (a few thousand points, no library needed)."""
    x, y = torch.tensor(train_x), torch.tensor(train_y)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x @ w * 10 + b, y) + 1e-3 * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (torch.tensor(test_x) @ w * 10 + b).argmax(1).numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", action="append", default=[], help="model folder (default: the shipped MiniLM)")
    ap.add_argument("--tasks-file", default=None)
    ap.add_argument("--suite", default="mt10")
    ap.add_argument("--template-phrasings", type=int, default=300)
    ap.add_argument("--layers", default="", help="comma-separated hidden layers to average (default: the last)")
    args = ap.parse_args(argv)
    layers = tuple(int(k) for k in args.layers.split(",") if k)
    table = load_tasks(args.tasks_file)
    tasks = table["suites"][args.suite]
    train = training_phrasings(table, "train", args.template_phrasings, seed=0)
    for folder in args.encoder or [""]:
        enc = LanguageEncoder(folder)
        tx, ty = [], []
        for i, t in enumerate(tasks):
            tx += train[t]
            ty += [i] * len(train[t])
        train_x = embed(enc, tx, layers)
        print(f"\n{folder or 'shipped MiniLM-L6'}, layers {layers or 'last'}: {len(tx)} training phrasings")
        pairs = [embed(enc, list(pair), layers) for pair in OPPOSITES]
        print("  cosine of opposites: " + ", ".join(
            f"{a!r} / {b!r} {float(v[0] @ v[1]):.3f}" for (a, b), v in zip(OPPOSITES, pairs)))
        for key in ("heldout", "wide", "negated"):
            sx, sy = [], []
            for i, t in enumerate(tasks):
                got = table["tasks"][t].get(key, [])
                sx += got
                sy += [i] * len(got)
            pred = probe(train_x, np.array(ty), embed(enc, sx, layers), len(tasks))
            sy = np.array(sy)
            per = {t: float((pred[sy == i] == i).mean()) for i, t in enumerate(tasks) if (sy == i).any()}
            wrong = [f"{s!r} -> {tasks[p]}" for s, p, y in zip(sx, pred, sy) if p != y]
            print(f"  {key}: {float((pred == sy).mean()):.3f} of {len(sy)}; "
                  + ", ".join(f"{t.removesuffix('-v3')} {v:.2f}" for t, v in per.items() if v < 1.0))
            for w in wrong:
                print("    " + w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
