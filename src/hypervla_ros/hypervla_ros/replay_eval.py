"""replay_eval: score a policy offline on a recorded bag (any robot), streaming, no live ROS graph needed.

The bag is split into episodes at each instruction message. In each episode the same TaskPolicy the
controller runs is generated (with the episode's first frame) and stepped on every recorded frame; each
recorded action is paired with the prediction for the frame it was computed from (same header stamp, as
our controller stamps them) or else the latest frame before it. Reports per episode and overall: MSE and
MAE per action dimension, gripper agreement, policy step latency; a PNG of predicted vs recorded actions
per episode; report.md and report.json. With --live-bag it scores instead what the live controller published
while the bag was replayed to it (see compare_live).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
from hypervla_core.runtime import BACKENDS, Generator, Runtime

from .bags import BagError, open_reader
from .image_conversion import ImageError, compressed_to_rgb, image_to_rgb
from .node_config import stamp_ns
from .policy_msgs import action_vector

DIMS = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ACTION_TYPES = ("hypervla_msgs/msg/EndEffectorAction", "geometry_msgs/msg/TwistStamped")


def _action_vector(msg, msgtype: str, twist_period_s: float) -> np.ndarray:
    if msgtype == ACTION_TYPES[0]:
        return action_vector(msg)
    lin, ang = msg.twist.linear, msg.twist.angular  # velocities -> per-step deltas; no gripper in a twist
    return np.array([lin.x, lin.y, lin.z, ang.x, ang.y, ang.z, np.nan], np.float32) * np.array(
        [twist_period_s] * 6 + [1.0], np.float32)


class Episode:
    def __init__(self, instruction: str, scored_dims: list[str] = DIMS[:6]):
        self.instruction = instruction
        self.scored_dims = scored_dims  # continuous dims the checkpoint commands (the others are always 0)
        self.policy = None
        self.preds: dict[int, np.ndarray] = {}  # frame stamp -> prediction
        self.last_stamp = None
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.step_ms: list[float] = []
        self.frames = 0
        self.bad_frames = 0

    def metrics(self) -> dict:
        if not self.pairs:
            return {"instruction": self.instruction, "frames": self.frames, "pairs": 0}
        pred = np.stack([p for p, _ in self.pairs])
        rec = np.stack([r for _, r in self.pairs])
        cols = [DIMS.index(d) for d in self.scored_dims]
        err = pred[:, cols] - rec[:, cols]
        grip_known = ~np.isnan(rec[:, 6])
        out = {
            "instruction": self.instruction, "frames": self.frames, "pairs": len(self.pairs),
            "bad_frames": self.bad_frames,
            "mse": dict(zip(self.scored_dims, (err ** 2).mean(0).round(8).tolist())),
            "mae": dict(zip(self.scored_dims, np.abs(err).mean(0).round(8).tolist())),
            "gripper_agreement": float(((pred[grip_known, 6] >= 0.5) == (rec[grip_known, 6] >= 0.5)).mean())
            if grip_known.any() else None,
            "policy_step_ms": {"p50": float(np.percentile(self.step_ms, 50)), "p99": float(np.percentile(self.step_ms, 99))},
        }
        return out


def evaluate_bag(bag: str, checkpoint: str, out_dir: str, camera_topic="/camera/image_raw",
                 instruction_topic="/hypervla/instruction", action_topic="/hypervla/action",
                 proprio_topic="/hypervla/proprio", twist_period_s: float = 0.02, plots: bool = True,
                 threads: int = 1, backend: str = "onnxruntime") -> dict:
    import torch

    torch.set_num_threads(threads)  # the per-frame model is tiny: more threads only add synchronization
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator, runtime = Generator.load(checkpoint), Runtime.load(checkpoint, backend=backend)
    # Dims the training data never moved are always commanded as 0: scoring them would only score the bag.
    scored_dims = [d for d, a in zip(DIMS, runtime.active_dims) if a]
    reader = open_reader(bag)
    start = time.perf_counter()
    try:
        topics = reader.topics
        for name, role in [(camera_topic, "camera"), (instruction_topic, "instruction"), (action_topic, "action")]:
            if name not in topics:
                raise BagError(f"bag {bag}: no {role} topic {name!r}; it has {sorted(topics)}")
        kinds = [(camera_topic, IMAGE_TYPES), (instruction_topic, ("std_msgs/msg/String",)), (action_topic, ACTION_TYPES)]
        for topic, allowed in kinds:
            if topics[topic].msgtype not in allowed:
                raise BagError(f"bag {bag}: topic {topic} has type {topics[topic].msgtype}, expected one of {allowed}")
        wanted = {camera_topic, instruction_topic, action_topic} | ({proprio_topic} if proprio_topic in topics else set())
        conns = [c for c in reader.connections if c.topic in wanted]
        episodes: list[Episode] = []
        ep, proprio, frames_total = None, None, 0
        for conn, _, raw in reader.messages(connections=conns):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:
                raise BagError(f"bag {bag}: message on {conn.topic} cannot be decoded ({exc})") from exc
            if conn.topic == instruction_topic:
                ep = Episode(msg.data, scored_dims)
                episodes.append(ep)
            elif conn.topic == proprio_topic:
                proprio = np.asarray(msg.position, np.float32)
            elif ep is None:
                continue  # data before the first instruction belongs to no episode
            elif conn.topic == camera_topic:
                ep.frames += 1
                frames_total += 1
                try:
                    rgb = compressed_to_rgb(msg) if conn.msgtype.endswith("CompressedImage") else image_to_rgb(msg)
                except ImageError as exc:
                    ep.bad_frames += 1
                    if ep.bad_frames == 1:
                        print(f"warning: {bag}: skipping bad frames on {camera_topic}: {exc}", file=sys.stderr)
                    continue
                if ep.policy is None:
                    ep.policy = generator.generate(ep.instruction, rgb).bind(runtime)
                t = time.perf_counter()
                pred = ep.policy.step(rgb, proprio if runtime.model.cfg.proprio_dim else None)
                ep.step_ms.append((time.perf_counter() - t) * 1000)
                ep.last_stamp = stamp_ns(msg.header.stamp)
                ep.preds[ep.last_stamp] = pred
                if len(ep.preds) > 256:  # bounded: actions refer to recent frames
                    ep.preds.pop(next(iter(ep.preds)))
            elif conn.topic == action_topic:
                rec = _action_vector(msg, conn.msgtype, twist_period_s)
                pred = ep.preds.pop(stamp_ns(msg.header.stamp), None)
                if pred is None and ep.last_stamp is not None:
                    pred = ep.preds.get(ep.last_stamp)
                if pred is not None:
                    ep.pairs.append((pred, rec))
    finally:
        reader.close()
    wall = time.perf_counter() - start
    per_episode = [e.metrics() for e in episodes]
    scored = [e for e in episodes if e.pairs]
    if not scored:
        raise BagError(f"bag {bag}: no recorded action could be paired with a frame (is {action_topic} stamped?)")
    overall = Episode("(all)", scored_dims)
    for e in scored:
        overall.pairs += e.pairs
        overall.step_ms += e.step_ms
        overall.frames += e.frames
        overall.bad_frames += e.bad_frames
    report = {"bag": str(bag), "checkpoint": str(checkpoint), "model_id": runtime.model_id,
              "scored_dims": scored_dims + ["gripper"],
              "unscored_dims": [d for d in DIMS[:6] if d not in scored_dims],
              "episodes": per_episode, "overall": overall.metrics(), "frames": frames_total,
              "frames_per_s": round(frames_total / wall, 1), "wall_time_s": round(wall, 3)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if plots:
        for i, e in enumerate(scored):
            _plot(e, out / f"episode_{i}.png")
    (out / "report.md").write_text(_markdown(report, [f"episode_{i}.png" for i in range(len(scored))] if plots else []))
    return report


def _actions_by_stamp(bag: str, topic: str, twist_period_s: float) -> dict[int, np.ndarray]:
    reader = open_reader(bag)
    try:
        if topic not in reader.topics:
            raise BagError(f"bag {bag}: no action topic {topic!r}; it has {sorted(reader.topics)}")
        conns = [c for c in reader.connections if c.topic == topic]
        out = {}
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            out.setdefault(stamp_ns(msg.header.stamp), _action_vector(msg, conn.msgtype, twist_period_s))
        return out
    finally:
        reader.close()


def compare_live(reference_bag: str, live_bag: str, out_dir: str, action_topic="/hypervla/action",
                 live_action_topic: str | None = None, twist_period_s: float = 0.02,
                 stamp_map: dict[int, int] | None = None) -> dict:
    """Score what a live controller published while `reference_bag` was replayed to it (recorded into
    `live_bag`) against the actions recorded in `reference_bag`. The controller stamps each action with its
    frame's stamp; with a restamped replay, stamp_map (replay's new -> recorded) leads back to the bag's."""
    ref = _actions_by_stamp(reference_bag, action_topic, twist_period_s)
    live = _actions_by_stamp(live_bag, live_action_topic or action_topic, twist_period_s)
    if stamp_map:
        live = {stamp_map[s]: a for s, a in live.items() if s in stamp_map}
    common = sorted(set(ref) & set(live))
    if not common:
        raise BagError(f"no action in {live_bag} matches a recorded frame of {reference_bag} by stamp")
    ep = Episode("(live controller vs recorded)")
    ep.pairs = [(live[s], ref[s]) for s in common]
    ep.step_ms = [0.0]
    report = {"reference_bag": str(reference_bag), "live_bag": str(live_bag), "overall": ep.metrics(),
              "coverage": round(len(common) / len(ref), 4)}
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "live_report.json").write_text(json.dumps(report, indent=2))
    return report


def _plot(ep: Episode, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = np.stack([p for p, _ in ep.pairs])
    rec = np.stack([r for _, r in ep.pairs])
    fig, axes = plt.subplots(len(DIMS), 1, figsize=(8, 11), sharex=True)
    for d, ax in enumerate(axes):
        ax.plot(rec[:, d], label="recorded", color="k", lw=1)
        ax.plot(pred[:, d], label="predicted", color="#DD8452", lw=1)
        ax.set_ylabel(DIMS[d])
    axes[0].legend(loc="upper right")
    axes[0].set_title(ep.instruction[:80])
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _markdown(report: dict, images: list[str]) -> str:
    lines = [f"# replay_eval: {report['bag']}", "", f"checkpoint `{report['checkpoint']}` (model {report['model_id']}), "
             f"{report['frames']} frames at {report['frames_per_s']} frames/s", "",
             f"Scored dims: {', '.join(report['scored_dims'])}"
             + (f"; not scored (the training data never moved them, the policy commands 0): "
                f"{', '.join(report['unscored_dims'])}" if report["unscored_dims"] else ""), "",
             "| episode | instruction | pairs | MSE xyz | MAE xyz | gripper agreement | step p50 ms |",
             "|---|---|---|---|---|---|---|"]
    for i, e in enumerate(report["episodes"] + [report["overall"]]):
        if not e.get("pairs"):
            continue
        mse = sum(e["mse"].get(d, 0.0) for d in "xyz")
        mae = sum(e["mae"].get(d, 0.0) for d in "xyz") / 3
        grip = "n/a" if e["gripper_agreement"] is None else f"{e['gripper_agreement']:.2f}"
        name = "all" if i == len(report["episodes"]) else str(i)
        lines.append(f"| {name} | {e['instruction'][:50]} | {e['pairs']} | {mse:.3e} | {mae:.3e} | {grip} | "
                     f"{e['policy_step_ms']['p50']:.2f} |")
    lines += [""] + [f"![{img}]({img})" for img in images]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="score a checkpoint on a recorded bag, or a live run against it")
    parser.add_argument("bag", help="the recorded bag")
    parser.add_argument("checkpoint", nargs="?", help="checkpoint to run on the bag's frames")
    parser.add_argument("--live-bag", help="instead: a bag recorded while BAG was replayed to the live stack")
    parser.add_argument("--stamp-map", help="JSON {new: recorded} stamps written by a restamped replay")
    parser.add_argument("--out", default="runs/replay_eval")
    parser.add_argument("--camera-topic", default="/camera/image_raw")
    parser.add_argument("--instruction-topic", default="/hypervla/instruction")
    parser.add_argument("--action-topic", default="/hypervla/action")
    parser.add_argument("--proprio-topic", default="/hypervla/proprio")
    parser.add_argument("--twist-period-s", type=float, default=0.02, help="step period for TwistStamped actions")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="engine for the policy step")
    args = parser.parse_args(argv)
    try:
        if args.live_bag:
            stamp_map = None
            if args.stamp_map:
                stamp_map = {int(k): int(v) for k, v in json.loads(pathlib.Path(args.stamp_map).read_text()).items()}
            report = compare_live(args.bag, args.live_bag, args.out, args.action_topic, None, args.twist_period_s,
                                  stamp_map)
            print(f"live vs recorded: {report['overall']['pairs']} actions paired (coverage {report['coverage']})")
        elif args.checkpoint:
            report = evaluate_bag(args.bag, args.checkpoint, args.out, args.camera_topic, args.instruction_topic,
                                  args.action_topic, args.proprio_topic, args.twist_period_s, not args.no_plots,
                                  backend=args.backend)
            print(f"{len(report['episodes'])} episode(s), {report['overall']['pairs']} scored actions, "
                  f"{report['frames_per_s']} frames/s; report in {args.out}/report.md")
        else:
            parser.error("give a checkpoint, or --live-bag")
    except BagError as exc:
        print(f"replay_eval: error: {exc}", file=sys.stderr)
        return 2
    o = report["overall"]
    print("MSE " + " ".join(f"{k}={v:.2e}" for k, v in o["mse"].items()) + f"; gripper agreement {o['gripper_agreement']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
