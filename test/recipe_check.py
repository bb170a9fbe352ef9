"""Shared by the shipped-model tests: a config/*.yaml recipe is what a shipped checkpoint records it was trained
with, so the documented commands reproduce it."""
import json
import pathlib

import yaml


def assert_recipe_made(recipe_file: pathlib.Path, model_folder: pathlib.Path) -> dict:
    """The recipe's model and train settings (but the cores used) equal the checkpoint's, trained in one run
    (a run continued with --resume is another recipe). Returns the checkpoint's metadata for further checks."""
    recipe = yaml.safe_load(recipe_file.read_text())
    shipped = json.loads((model_folder / "config.json").read_text())
    assert {k: shipped["model"][k] for k in recipe["model"]} == recipe["model"]
    train = {k: v for k, v in recipe["train"].items() if k != "threads"}  # cores used, not what was learnt
    assert {k: shipped["extra"]["train_config"][k] for k in train} == train
    assert not shipped["extra"].get("resumed_from"), "continued with --resume: not what the recipe alone makes"
    return shipped
