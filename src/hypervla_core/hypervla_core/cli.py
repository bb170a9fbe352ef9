"""The `hypervla` command line."""
from __future__ import annotations

import argparse
import json
import sys


def cmd_info(args) -> int:
    from . import checkpoint as ckpt
    from .model import VLA

    loaded = ckpt.load(args.checkpoint)
    model = VLA(loaded.cfg, loaded.lang_dim)
    ckpt.load_state_strict(model, loaded.state, f"checkpoint {args.checkpoint}")
    counts = model.parameter_counts()
    info = {"model_id": loaded.model_id, "model_type": loaded.cfg.model_type, **counts}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"checkpoint      {args.checkpoint}")
    print(f"model id        {loaded.model_id}")
    print(f"model type      {loaded.cfg.model_type}")
    for key, value in counts.items():
        print(f"{key.replace('_', ' '):28s} {value:>12,d}")
    print("(the frozen language encoder is not counted: it runs once per instruction, on the generator)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypervla", description="HyperVLA: train, evaluate and inspect models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameter counts of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # CheckpointError, InputError, ... included
        print(f"hypervla {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
