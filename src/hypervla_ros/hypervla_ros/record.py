"""record: the suite's topics into a rosbag2 bag (MCAP by default, sqlite3 as an option).

Messages are written as received (raw CDR bytes, no deserialization), so memory stays bounded by the
writer's buffers. Topics that appear later are picked up by a discovery timer. Each topic is subscribed
with the QoS its publishers offer (latched instruction, best-effort camera), which is also stored in the
bag's metadata. SIGINT/SIGTERM close the bag cleanly (metadata.yaml written).
"""
from __future__ import annotations

import pathlib
import time

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from .bags import add_topic, open_writer, qos
from .node_config import declare, node_defaults
from .node_runtime import run
from .replay import message_class

SCHEMA = {
    "output": ("bag folder to create ('' = runs/bags/hypervla_<time>)", None),
    "storage": ("mcap or sqlite3", None),
    "topics": ("topics to record", None),
    "discovery_period_s": ("seconds between looks for topics not yet recorded", (0.05, 60.0)),
}


class RecordNode(Node):
    def __init__(self):
        super().__init__("record")
        self.p = declare(self, SCHEMA, node_defaults("record"))
        out = self.p["output"] or f"runs/bags/hypervla_{time.strftime('%Y%m%d_%H%M%S')}"
        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
        self.path = out
        self.writer = open_writer(out, self.p["storage"])
        self.connections = {}
        self.counts: dict[str, int] = {}
        self.create_timer(self.p["discovery_period_s"], self.discover)
        self.get_logger().info(f"recording {list(self.p['topics'])} into {out} ({self.p['storage']})")

    def discover(self) -> None:
        types = dict(self.get_topic_names_and_types())
        for topic in self.p["topics"]:
            if topic in self.connections or topic not in types:
                continue
            msgtype = types[topic][0]
            pubs = self.get_publishers_info_by_topic(topic)
            if not pubs:
                continue
            reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)
            latched = any(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in pubs)
            profile = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable
                                 else ReliabilityPolicy.BEST_EFFORT,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            message_class(msgtype)  # fails early and clearly for a type this install cannot load
            conn = add_topic(self.writer, topic, msgtype, qos(reliable, latched))
            self.connections[topic] = conn
            self.counts[topic] = 0
            self.create_subscription(message_class(msgtype), topic, lambda data, c=conn, t=topic: self.write(c, t, data),
                                     profile, raw=True)
            self.get_logger().info(f"recording {topic} [{msgtype}]")

    def write(self, conn, topic: str, data: bytes) -> None:
        self.writer.write(conn, self.get_clock().now().nanoseconds, data)
        self.counts[topic] += 1

    def close(self) -> None:
        self.writer.close()
        self.get_logger().info(f"closed {self.path}: {self.counts}")


def main(args=None):
    run(RecordNode, "record", args)


if __name__ == "__main__":
    main()
