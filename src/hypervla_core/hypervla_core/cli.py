"""The `hypervla` command line."""
from __future__ import annotations

import argparse
import json
import pathlib
import sys


def cmd_info(args) -> int:
    from . import checkpoint as ckpt
    from .model import VLA

    loaded = ckpt.load(args.checkpoint)
    model = VLA(loaded.cfg, loaded.lang_dim)
    ckpt.load_state_strict(model, loaded.state, f"checkpoint {args.checkpoint}")
    counts = model.parameter_counts()
    active = dict(zip(ckpt.ACTION_DIM_NAMES, (bool(a) for a in loaded.stats.active())))
    extra = loaded.meta.get("extra", {})
    cameras = extra.get("cameras") or extra.get("camera")  # the views in the order the controller must take them
    info = {"model_id": loaded.model_id, "model_type": loaded.cfg.model_type, **counts, "active_action_dims": active,
            "views": loaded.cfg.views, "cameras": cameras, "proprio_dim": loaded.cfg.proprio_dim}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"checkpoint      {args.checkpoint}")
    print(f"model id        {loaded.model_id}")
    print(f"model type      {loaded.cfg.model_type}")
    print(f"views           {loaded.cfg.views} ({cameras or 'not recorded'}); proprio {loaded.cfg.proprio_dim} values")
    for key, value in counts.items():
        print(f"{key.replace('_', ' '):28s} {value:>12,d}")
    off = [k for k, a in active.items() if not a]
    print(f"action dims     moved by the data: {', '.join(k for k, a in active.items() if a) or 'none'}; "
          f"commanded as 0: {', '.join(off) or 'none'}")
    print("(the frozen language encoder is not counted: it runs once per instruction, on the generator)")
    return 0


def cmd_gen_data(args) -> int:
    suite, _, tasks = args.suite.partition(":")
    if suite.startswith("libero"):  # the Panda: scripted experts, one dataset per camera (as bag-to-dataset)
        from .libero_data import generate as generate_libero

        report = generate_libero(args.out, suite, args.episodes, [t for t in tasks.split(",") if t],
                                 args.first_init, args.image_size, args.max_steps or 300,
                                 0.0 if args.noise is None else args.noise, args.seed, args.workers)
        print(json.dumps({t: r["kept"] for t, r in report["tasks"].items()}), f"{report['wall_time_s']} s")
        return 0
    from .gen_data import generate

    generate(args.out, args.suite, args.episodes, args.seed, args.workers, args.image_size,
             0.3 if args.noise is None else args.noise, args.max_steps or 200, args.tasks_file, args.camera,
             args.max_rounds)
    return 0


def _configs(args):
    """The recipe YAML's model: and train: sections with the command line's overrides, and the YAML itself."""
    import yaml

    from .config import ModelConfig, TrainConfig

    raw = (yaml.safe_load(open(args.config)) or {}) if args.config else {}
    for item in getattr(args, "set", None) or []:
        # A recipe variant is its base recipe plus a few keys: `--set model.lang_pool=mean`, not a YAML copy.
        key, eq, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not eq or not dot or section not in ("model", "train") or not name:
            raise ValueError(f"--set takes model.KEY=VALUE or train.KEY=VALUE, got {item!r}")
        raw[section] = {**(raw.get(section) or {}), name: yaml.safe_load(value)}
    model = ModelConfig.from_dict(raw.get("model", {}))
    train = TrainConfig.from_dict(raw.get("train", {}))
    if getattr(args, "model_type", None):
        model.model_type = args.model_type
    for key in ("steps", "batch_size", "seed", "lr", "eval_every", "threads"):
        if getattr(args, key, None) is not None:
            setattr(train, key, getattr(args, key))
    return model, train, raw


def cmd_train(args) -> int:
    from .train import Trainer

    model_cfg, train_cfg, _ = _configs(args)
    trainer = Trainer(model_cfg, train_cfg, args.data, args.out, tasks_file=args.tasks_file)
    if args.resume and trainer.resume():
        print(f"resumed at step {trainer.step}")

    def periodic_eval(folder, step) -> float:
        from .evaluate import evaluate
        from .sim import load_tasks

        known = load_tasks(args.tasks_file)["tasks"]
        tasks = sorted({r.task for r in trainer.data.refs if r.task in known})
        report = evaluate(folder, f"{args.out}/eval_step{step}", ",".join(tasks), train_cfg.eval_episodes,
                          workers=1, tasks_file=args.tasks_file, gifs=False)
        return report["mean_success"]

    print(json.dumps(trainer.train(on_eval=periodic_eval), indent=2))
    return 0


def cmd_finetune(args) -> int:
    from . import checkpoint as ckpt
    from .train import Trainer

    loaded = ckpt.load(args.checkpoint)
    _, train_cfg, raw = _configs(args)
    if args.rehearsal is not None:
        train_cfg.rehearsal = args.rehearsal
    # The old tasks are rehearsed in the words they were trained with: the checkpoint's phrasings file and its
    # number of rule-made phrasings, unless the fine-tune recipe or the command line says otherwise.
    extra = loaded.meta.get("extra", {})
    tasks_file = args.tasks_file or extra.get("tasks_file")
    if "template_phrasings" not in (raw.get("train") or {}):
        train_cfg.template_phrasings = extra.get("train_config", {}).get("template_phrasings", 0)
    old = []
    if train_cfg.rehearsal:
        # Without the old tasks' demonstrations in the batches, fine-tuning overwrites them (MT10 fell from
        # 29/30 to 14 - 18/30 per added task): the default is to rehearse what the checkpoint learnt from.
        old = args.rehearse or extra.get("data") or []
        missing = [p for p in old if not pathlib.Path(p).exists()]
        if not old or missing:
            said = f"its training data {missing} is not here" if missing else "it does not record its training data"
            raise ValueError(f"finetune rehearses the checkpoint's own demonstrations so that its tasks keep "
                             f"working, but {said}: pass --rehearse DIR... (for models/hypervla-mt10: "
                             f"data/mt10-v14, made by `hypervla gen-data --out data/mt10-v14 --suite mt10 "
                             f"--episodes 50`), or --rehearsal 0 to adapt without (the old tasks will degrade)")
    trainer = Trainer(loaded.cfg, train_cfg, args.data, args.out, init_from=args.checkpoint,
                      tasks_file=tasks_file, rehearse_paths=old)
    print(json.dumps(trainer.train(), indent=2))
    return 0


def cmd_fit(args) -> int:
    from .train import fit_report

    report = fit_report(args.checkpoint, args.data, args.batches, seed=args.seed, tasks_file=args.tasks_file)
    for name, parts in report.items():
        print(f"{name:32s} mse {parts['mse']:.4f}  gripper bce {parts['bce']:.4f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def cmd_eval(args) -> int:
    from .safety import controller_limits

    limits = controller_limits(args.limits) if args.limits else None
    if args.suite.startswith("libero"):
        from .libero_eval import evaluate_libero

        evaluate_libero(args.checkpoint, args.out, args.suite, args.episodes, args.seed, args.phrasings, args.inits,
                        args.workers, args.max_steps or 300, args.tasks_file, not args.no_gifs, args.threads, limits)
        return 0
    from .evaluate import evaluate

    evaluate(args.checkpoint, args.out, args.suite, args.episodes, args.seed, args.phrasings, args.workers,
             args.max_steps or 200, args.tasks_file, gifs=not args.no_gifs, camera=args.camera, threads=args.threads,
             limits=limits)
    return 0


def cmd_compare(args) -> int:
    from .compare import compare_files, print_comparison

    result = compare_files(args.before, args.after)
    print_comparison(result)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_keygen(args) -> int:
    from .signing import keygen

    private, public = keygen(args.out)
    print(f"private key {private} (mode 600: the generator's signing_key_file)\n"
          f"public key  {public} (add its line to the controller's trusted_keys_file)")
    return 0


def cmd_bag_to_dataset(args) -> int:
    try:
        from hypervla_ros.bag_to_dataset import main as convert_main
    except ImportError as exc:
        raise RuntimeError(f"bag-to-dataset needs the hypervla_ros package (source scripts/env.sh): {exc}") from exc
    return convert_main(args.args)


THREADS_HELP = "torch threads (default: the config's; 1 is fastest on a busy 2-core machine)"
SET_HELP = ("override keys of the --config recipe, values read as YAML: model.lang_pool=mean train.steps=2000 "
            "(repeated --set add up)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypervla", description="HyperVLA: train, evaluate and inspect models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameter counts of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("keygen", help="Ed25519 key pair for signing task policies: OUT (private) and OUT.pub")
    p.add_argument("out")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("gen-data", help="expert demonstrations -> HDF5 (resumable): Meta-World, or LIBERO's Panda "
                       "with --suite libero_goal[:task,task]")
    p.add_argument("--out", default="data/mt10", help="output folder (one .hdf5 per task)")
    p.add_argument("--suite", default="mt10", help="suite name from config/tasks.yaml or comma-separated tasks")
    p.add_argument("--episodes", type=int, default=40, help="successful episodes to keep per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="parallel simulator processes")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--noise", type=float, default=None,
                   help="std of action noise (Meta-World units, default 0.3; LIBERO: metres per step, default 0)")
    p.add_argument("--first-init", type=int, default=1000,
                   help="LIBERO: init index of each task's first attempt (0-49: the standard initial states, which "
                   "evaluation uses; from 1000: placements sampled from the index, the default)")
    p.add_argument("--max-steps", type=int, default=None, help="episode length (Meta-World 200, LIBERO 300)")
    p.add_argument("--max-rounds", type=int, default=20, help="rounds of fresh attempts for tasks still short")
    p.add_argument("--tasks-file", default=None, help="phrasings file (default config/tasks.yaml)")
    p.add_argument("--camera", default=None, help="view to render (default: the tasks file's `camera`)")
    p.set_defaults(func=cmd_gen_data)

    p = sub.add_parser("train", help="train HyperVLA (or the monolithic twin) on HDF5 demonstrations")
    p.add_argument("--data", nargs="+", default=["data/mt10"], help="HDF5 files or folders")
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--config", default="config/train.yaml", help="YAML with model: and train: sections")
    p.add_argument("--model-type", choices=["hypervla", "monolithic"])
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    p.add_argument("--set", nargs="+", action="extend", metavar="SECTION.KEY=VALUE", help=SET_HELP)
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.safetensors")
    p.add_argument("--tasks-file", default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="few-shot adaptation of a trained checkpoint (whole hypernetwork, "
                       "rehearsing its old demonstrations)")
    p.add_argument("checkpoint")
    p.add_argument("--data", nargs="+", required=True, help="the new task's demonstrations")
    p.add_argument("--rehearse", nargs="+", help="the old tasks' demonstrations (default: the checkpoint's "
                   "training data, as recorded in it)")
    p.add_argument("--rehearsal", type=float, help="fraction of each batch from them (default: the config's; "
                   "0 = none, the old tasks degrade)")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="config/finetune.yaml")
    p.add_argument("--set", nargs="+", action="extend", metavar="SECTION.KEY=VALUE", help=SET_HELP)
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    p.add_argument("--tasks-file", default=None)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("fit", help="teacher-forced action error of a checkpoint on demonstrations, per task")
    p.add_argument("checkpoint")
    p.add_argument("--data", nargs="+", required=True, help="HDF5 files or folders")
    p.add_argument("--batches", type=int, default=8, help="batches of 128 frames per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--tasks-file", default=None)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("eval", help="closed-loop success in Meta-World on unseen positions, or on LIBERO's Panda "
                       "from its standard initial states (--suite libero_goal_train, wrong goals counted)")
    p.add_argument("checkpoint")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--suite", default="mt10", help="a suite of config/tasks.yaml or tasks a,b; LIBERO: a suite of "
                   "config/libero_tasks.yaml or libero_goal:task,task")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task")
    p.add_argument("--inits", choices=["own", "others"], default="own",
                   help="LIBERO: start from each task's own initial states, or from the other tasks' (confusion matrix)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phrasings", default="train",
                   help="which phrasings of the tasks file: 'train', 'heldout' (never seen in training) or another key")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch threads per worker (default: 2 cores shared among workers)")
    p.add_argument("--max-steps", type=int, default=None, help="episode length (Meta-World 200, LIBERO 300)")
    p.add_argument("--tasks-file", default=None, help="phrasings file (default config/tasks.yaml, LIBERO "
                   "config/libero_tasks.yaml)")
    p.add_argument("--camera", default=None, help="Meta-World: view to render (default: the tasks file's `camera`)")
    p.add_argument("--limits", metavar="PARAMS.yaml", help="run each action through the controller's safety "
                   "filter with this params file's policy_controller limits over config/hypervla.yaml's (e.g. "
                   "config/libero_demo.yaml): what the robot would do; eval.json says how often it changed one")
    p.add_argument("--no-gifs", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="two evaluations of the same episodes, paired: per task the episodes gained "
                       "and lost and an exact sign test")
    p.add_argument("before", help="eval.json (or its folder)")
    p.add_argument("after", help="eval.json (or its folder) of the same suite, seed and inits")
    p.add_argument("--json", help="also write the comparison here")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bag-to-dataset", add_help=False,
                       help="recorded demonstration bags -> HDF5 training set (see bag-to-dataset --help)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bag_to_dataset)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bag-to-dataset"]:  # its own parser, options included (argparse's REMAINDER drops them)
        return cmd_bag_to_dataset(argparse.Namespace(args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, RuntimeError) as exc:  # CheckpointError, InputError, ... included
        print(f"hypervla {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
