"""bag-to-dataset: recorded demonstrations (rosbag2) -> the HDF5 training layout (`hypervla bag-to-dataset`).

Episodes are split at the bridge's episode events (reset ... success/timeout/aborted). The steps are the
driver's record of executed steps (~/applied) when the bag has it, else the commands sent. A teacher that
perturbs what it sends (the demonstrator with noise) publishes its intended action with the same stamp
(/demonstrator/expert_action): when the bag has that topic, each step's action is the teacher's. Each step is
paired with the frame of every camera and the joint states it was computed from: an EndEffectorAction by its header stamp
(the frame's), a TwistStamped (a per-step delta once multiplied by the period) with the newest frame set
stamped at or before it. Written per task: data/demo_k/obs/<camera>_rgb (T, H, W, 3), obs/joint_states,
actions (T, 7), attrs language_instruction, task, success, source; the file records the cameras (in view order),
image size, rate and sources (hypervla_core.data.write_camera_demo, which `gen-data --suite libero_goal`
also uses). Unsuccessful attempts are dropped and counted (kept and marked
with --keep-failed).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from dataclasses import dataclass, field

import numpy as np
from hypervla_core.data import write_camera_demo
from hypervla_core.servo import twist_to_action
from tqdm import tqdm

from .bags import BagError, open_reader
from .image_conversion import ImageError, image_to_rgb
from .node_config import stamp_ns
from .policy_msgs import action_vector

ACTION, TWIST = "hypervla_msgs/msg/EndEffectorAction", "geometry_msgs/msg/TwistStamped"
APPLIED = "/libero_bridge/applied"
COMMAND_TOPICS = (APPLIED, "/hypervla/action", "/libero_bridge/delta_twist_cmds")
LABELS = "/demonstrator/expert_action"


@dataclass
class _Episode:
    instruction: str
    task: str
    info: dict
    commands: list = field(default_factory=list)  # (kind, stamp_ns, action or twist)
    success: bool | None = None  # None: no end event (the bag ended mid-episode)
    end: str = ""  # the event that ended it: success, timeout or aborted (reset mid-episode)


def camera_name(topic: str) -> str:
    """cameras/agentview/image_raw -> agentview (the part that names the camera)."""
    parts = [p for p in topic.strip("/").split("/") if p not in ("image_raw", "image", "image_rect", "rgb")]
    return parts[-1] if parts else topic.strip("/").replace("/", "_")


def _read_bag(bag, cameras, proprio_topic, action_topics, events_topic, period_s, label_topic):
    reader = open_reader(bag)
    try:
        topics = reader.topics
        image_topics = sorted(t for t, info in topics.items() if info.msgtype == "sensor_msgs/msg/Image")
        cams = list(cameras) if cameras else image_topics
        missing = [t for t in [*cams, proprio_topic, events_topic] if t not in topics]
        if not cams or missing:
            raise BagError(f"bag {bag}: missing {missing or 'camera topics'}; it has {sorted(topics)}")
        acts = [t for t in action_topics if t in topics]
        if APPLIED in acts:  # the driver's record of what it executed: exactly one action per step taken
            acts = [APPLIED]
        if not acts:
            raise BagError(f"bag {bag}: no command topic among {list(action_topics)}; it has {sorted(topics)}")
        frames: dict[int, dict] = {}  # stamp -> {camera topic: image, "joints": positions}
        labels: dict[int, np.ndarray] | None = {} if label_topic in topics else None  # stamp -> teacher's action
        episodes: list[_Episode] = []
        ep = None
        conns = [c for c in reader.connections if c.topic in {*cams, proprio_topic, events_topic, *acts, label_topic}]
        total = sum(c.msgcount for c in conns)
        for conn, _, raw in tqdm(reader.messages(connections=conns), total=total, desc=f"{pathlib.Path(bag).name}",
                                 unit="msg", leave=False, disable=total < 2000):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:  # rosbags raises several types for a message that does not decode
                raise BagError(f"bag {bag}: a message on {conn.topic} cannot be decoded ({exc})") from exc
            if conn.topic == events_topic:
                event = json.loads(msg.data)
                if event["event"] == "reset":
                    ep = _Episode(event.get("instruction", ""), event.get("task", ""), event)
                    episodes.append(ep)
                elif ep is not None and ep.success is None:
                    ep.success, ep.end = bool(event.get("success", False)), event["event"]
                    ep = None
            elif conn.topic in cams:
                try:
                    frames.setdefault(stamp_ns(msg.header.stamp), {})[conn.topic] = image_to_rgb(msg)
                except ImageError as exc:
                    raise BagError(f"bag {bag}: bad frame on {conn.topic}: {exc}") from exc
            elif conn.topic == proprio_topic:
                frames.setdefault(stamp_ns(msg.header.stamp), {})["joints"] = np.asarray(msg.position, np.float32)
            elif conn.topic == label_topic:
                if conn.msgtype != ACTION:
                    raise BagError(f"bag {bag}: {conn.topic} has type {conn.msgtype}, expected {ACTION}")
                labels[stamp_ns(msg.header.stamp)] = action_vector(msg)
            elif ep is not None and ep.success is None:
                s = stamp_ns(msg.header.stamp)
                if conn.msgtype == ACTION:
                    a = action_vector(msg)
                elif conn.msgtype == TWIST:
                    lin, ang = msg.twist.linear, msg.twist.angular
                    grip = ep.commands[-1][2][6] if ep.commands else 0.0
                    try:  # base-frame twists (an end-effector-frame one needs the pose: refused, with the reason)
                        a = twist_to_action([lin.x, lin.y, lin.z], [ang.x, ang.y, ang.z], period_s,
                                            msg.header.frame_id, None, grip)
                    except ValueError as exc:
                        raise BagError(f"bag {bag}: twist on {conn.topic}: {exc}") from exc
                else:
                    raise BagError(f"bag {bag}: {conn.topic} has type {conn.msgtype}, expected {ACTION} or {TWIST}")
                ep.commands.append((conn.msgtype, s, a))
        return cams, frames, episodes, labels
    finally:
        reader.close()


def _pair(bag, cams, frames, ep, max_skew_ns, labels=None):
    """(images per camera, joints, actions) of one episode; every command with the frames it was computed from
    (and, with `labels`, the teacher's action for those frames instead of the one executed)."""
    stamps = sorted(s for s, f in frames.items() if "joints" in f)
    images = {c: [] for c in cams}
    joints, actions = [], []
    for kind, s, a in ep.commands:
        if kind == ACTION:
            base = s
        else:  # a twist: the newest frame at or before it was sent
            i = np.searchsorted(stamps, s, side="right") - 1
            if i < 0:
                raise BagError(f"bag {bag}: a twist at {s} comes before any frame")
            base = stamps[i]
        if base not in frames or "joints" not in frames[base]:
            raise BagError(f"bag {bag}: episode {ep.task!r}: no joint states stamped {base} for a command")
        for c in cams:
            img = frames[base].get(c)
            if img is None:  # a camera stamped slightly apart: the nearest frame within the skew
                near = [t for t in frames if c in frames[t] and abs(t - base) <= max_skew_ns]
                if not near:
                    raise BagError(f"bag {bag}: camera {c} has no frame within {max_skew_ns / 1e6:.0f} ms of the "
                                   f"command stamped {base}: the cameras cannot be synchronized")
                img = frames[min(near, key=lambda t: abs(t - base))][c]
            images[c].append(img)
        if labels is not None:
            if base not in labels:
                raise BagError(f"bag {bag}: episode {ep.task!r}: the bag has the teacher's actions but none for the "
                               f"step stamped {base}")
            a = labels[base]
        joints.append(frames[base]["joints"])
        actions.append(a)
    return images, np.stack(joints), np.stack(actions)


def convert(bags, out, cameras=None, proprio_topic="/joint_states",
            action_topics=COMMAND_TOPICS,
            events_topic="/libero_bridge/events", period_s=0.05, max_skew_s=0.02, keep_failed=False,
            label_topic=LABELS) -> dict:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"episodes": 0, "dropped_unsuccessful": 0, "abandoned": 0, "frames": 0, "tasks": {}}
    names = None
    for bag in bags:
        cams, frames, episodes, labels = _read_bag(bag, cameras, proprio_topic, action_topics, events_topic,
                                                   period_s, label_topic)
        bag_names = [camera_name(c) for c in cams]
        if names is not None and bag_names != names:
            raise BagError(f"bag {bag}: cameras {bag_names} differ from the earlier bags' {names}")
        names = bag_names
        for ep in episodes:
            if not ep.commands:
                if ep.success is None or ep.end == "aborted":  # reset again before any command: nothing shown
                    report["abandoned"] += 1
                    continue
                raise BagError(f"bag {bag}: episode {ep.task!r} (init {ep.info.get('init_index')}) ended "
                               "without a single command: the command topics were not recorded?")
            if not ep.success and not keep_failed:
                report["dropped_unsuccessful"] += 1
                continue
            images, joints, actions = _pair(bag, cams, frames, ep, int(max_skew_s * 1e9), labels)
            write_camera_demo(out / f"{ep.task}.hdf5", {n: np.stack(images[c]) for c, n in zip(cams, names)},
                              joints, actions, {"language_instruction": ep.instruction, "task": ep.task,
                                                "success": bool(ep.success), "source": str(bag),
                                                "init_index": int(ep.info.get("init_index") or 0)},
                              1.0 / period_s, str(bag))
            report["episodes"] += 1
            report["frames"] += len(actions)
            report["tasks"][ep.task] = report["tasks"].get(ep.task, 0) + 1
    if report["episodes"] == 0:
        raise BagError(f"no episode to write from {[str(b) for b in bags]}: {report}")
    report["cameras"] = names
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="hypervla bag-to-dataset", description=__doc__.split("\n")[0])
    ap.add_argument("bags", nargs="+", help="rosbag2 folders")
    ap.add_argument("--out", required=True, help="dataset folder (one .hdf5 per task)")
    ap.add_argument("--cameras", nargs="*", help="camera topics in view order (default: every Image topic, sorted)")
    ap.add_argument("--proprio-topic", default="/joint_states")
    ap.add_argument("--action-topics", nargs="+", default=list(COMMAND_TOPICS),
                    help=f"commands (EndEffectorAction or TwistStamped); {APPLIED}, when recorded, is used alone")
    ap.add_argument("--events-topic", default="/libero_bridge/events")
    ap.add_argument("--period", type=float, default=0.05, help="control period in seconds (twist -> delta)")
    ap.add_argument("--max-skew", type=float, default=0.02, help="seconds between one step's camera frames")
    ap.add_argument("--keep-failed", action="store_true", help="keep unsuccessful attempts (marked success=False)")
    ap.add_argument("--label-topic", default=LABELS,
                    help="the teacher's intended actions, used instead of the executed ones when recorded ('' = never)")
    args = ap.parse_args(argv)
    try:
        report = convert(args.bags, args.out, args.cameras, args.proprio_topic, args.action_topics,
                         args.events_topic, args.period, args.max_skew, args.keep_failed, args.label_topic)
    except (BagError, OSError, ValueError) as exc:
        print(f"hypervla bag-to-dataset: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
