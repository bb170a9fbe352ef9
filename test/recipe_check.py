"""Shared by the shipped-model tests: a config/*.yaml recipe is what a shipped checkpoint records it was trained
with, so the documented commands reproduce it."""
import json
import pathlib

import yaml


def assert_recipe_made(recipe_file: pathlib.Path, model_folder: pathlib.Path, readme: str) -> dict:
    """The recipe's model and train settings (but the cores used) equal the checkpoint's. A checkpoint continued
    with `--resume --steps N` trained the recipe's steps first; `readme` must then give that command. Returns the
    checkpoint's metadata for further checks."""
    recipe = yaml.safe_load(recipe_file.read_text())
    shipped = json.loads((model_folder / "config.json").read_text())
    assert {k: shipped["model"][k] for k in recipe["model"]} == recipe["model"]
    learnt = shipped["extra"]["train_config"]
    runs = shipped["extra"].get("resumed_from", [])
    train = {k: v for k, v in recipe["train"].items() if k not in ("threads", "steps")}  # threads: cores used
    assert {k: learnt[k] for k in train} == train
    assert (runs[0]["steps"] if runs else learnt["steps"]) == recipe["train"]["steps"]
    if runs:  # each continuation, up to the steps the checkpoint ended at
        for steps in [r["steps"] for r in runs[1:]] + [learnt["steps"]]:
            assert f"--steps {steps} --resume" in readme, f"the README must continue the run to {steps} steps"
    return shipped
