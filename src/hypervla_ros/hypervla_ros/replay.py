"""replay: publish a bag's messages on live topics with their original timing.

Raw CDR bytes go out unchanged (no deserialization), unless restamp is set: then messages with a header get
the current time, because a live controller refuses to act on old stamps. rate scales time (2.0 = twice as fast), loop repeats,
topics selects a subset. Latched topics in the bag are republished latched, so late subscribers (the
controller's instruction subscription) still receive them.
"""
from __future__ import annotations

import importlib
import json
import pathlib
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import QosDurability

from .bags import BagError, open_reader
from .node_config import declare, node_defaults

SCHEMA = {
    "bag": ("bag folder to replay", None),
    "rate": ("time scale: 1.0 = recorded timing, 2.0 = twice as fast", (0.01, 100.0)),
    "loop": ("start over at the end", None),
    "topics": ("topics to publish ([] or [''] = all)", None),
    "start_delay_s": ("wait before the first message, so subscribers can match", (0.0, 60.0)),
    "restamp": ("stamp headers with the current time (a live controller ignores old stamps)", None),
    "stamp_map_file": ("with restamp: write {new: recorded} stamps here for replay_eval --stamp-map ('' = no)", None),
}


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"unknown message type {msgtype}: not available in this ROS install") from exc


def replay(node: Node, bag: str, rate: float = 1.0, topics=None, loop: bool = False, start_delay_s: float = 0.5,
           should_stop=lambda: False, restamp: bool = False, stamp_map: dict | None = None) -> int:
    """Publish the bag's messages with their recorded spacing. restamp: set header stamps to now (the live
    controller refuses old stamps) and note new -> recorded stamp in stamp_map, to pair answers later."""
    from rclpy.serialization import deserialize_message

    reader = open_reader(bag)
    try:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        if topics:
            missing = set(topics) - {c.topic for c in conns}
            if missing:
                raise BagError(f"bag {bag}: no topic(s) {sorted(missing)}; it has {sorted(reader.topics)}")
        pubs = {}
        for c in conns:
            offered = getattr(c.ext, "offered_qos_profiles", []) or []
            latched = any(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
            profile = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            if c.topic not in pubs:
                pubs[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, profile)
        time.sleep(start_delay_s)
        sent = 0
        while True:
            t0_wall, t0_bag = time.monotonic(), None
            for conn, stamp, raw in reader.messages(connections=conns):
                if should_stop():
                    return sent
                t0_bag = stamp if t0_bag is None else t0_bag
                delay = (stamp - t0_bag) / 1e9 / rate - (time.monotonic() - t0_wall)
                if delay > 0:
                    time.sleep(delay)
                pub = pubs[conn.topic]
                if restamp and "header" in pub.msg_type.get_fields_and_field_types():
                    msg = deserialize_message(bytes(raw), pub.msg_type)
                    now = node.get_clock().now()
                    if stamp_map is not None:
                        stamp_map[now.nanoseconds] = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                    msg.header.stamp = now.to_msg()
                    pub.publish(msg)
                else:
                    pub.publish(bytes(raw))
                sent += 1
            if not loop:
                return sent
    finally:
        reader.close()


def main(args=None):
    rclpy.init(args=args)
    node = Node("replay")
    p = declare(node, SCHEMA, node_defaults("replay"))
    topics = [t for t in p["topics"] if t]
    try:
        stamp_map: dict[int, int] = {}
        sent = replay(node, p["bag"], p["rate"], topics, p["loop"], p["start_delay_s"], lambda: not rclpy.ok(),
                      p["restamp"], stamp_map)
        if p["stamp_map_file"]:
            pathlib.Path(p["stamp_map_file"]).write_text(json.dumps(stamp_map))
        node.get_logger().info(f"replayed {sent} messages from {p['bag']}")
    except BagError as exc:
        node.get_logger().error(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
