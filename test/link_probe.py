"""The far end of the two-host test and bench: run inside a network namespace, talks to the suite over the link,
prints one JSON line.

  link_probe.py episode "open the drawer" --timeout 240   # instruction -> policy running -> the sim's success event
  link_probe.py bench --seconds 4 --switches 6            # camera -> action, bare echo, policy switch (ms)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import rclpy
from hypervla_ros.image_conversion import rgb_to_image
from hypervla_ros.node_config import LATCHED, stamp_ns
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String

from hypervla_msgs.msg import ControllerStatus, EndEffectorAction


class LinkProbe(Node):
    def __init__(self):
        super().__init__("link_probe")
        self.status: ControllerStatus | None = None
        self.events, self.actions, self.echo = [], {}, {}
        self.action_log: list[tuple[float, str]] = []
        self.create_subscription(ControllerStatus, "/hypervla/status", self._on_status, 10)
        self.create_subscription(String, "/sim_bridge/events", lambda m: self.events.append(json.loads(m.data)), LATCHED)
        self.create_subscription(EndEffectorAction, "/hypervla/action", self._on_action, 100)
        self.create_subscription(Header, "/bench/echo", lambda h: self.echo.setdefault(stamp_ns(h.stamp), self._ms(h)), 100)
        self.say = self.create_publisher(String, "/hypervla/instruction", LATCHED)
        self.camera = self.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.bench_camera = self.create_publisher(Image, "/bench/camera", qos_profile_sensor_data)
        self.proprio = self.create_publisher(JointState, "/hypervla/proprio", qos_profile_sensor_data)
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self)

    def _ms(self, header) -> float:
        return (self.get_clock().now().nanoseconds - stamp_ns(header.stamp)) / 1e6

    def _on_status(self, m):
        self.status = m

    def _on_action(self, m):
        self.actions.setdefault(stamp_ns(m.header.stamp), self._ms(m.header))
        self.action_log.append((time.monotonic(), m.policy_id))

    def spin_until(self, pred, timeout: float, every=None) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            if every:
                every()
            self.ex.spin_once(timeout_sec=0.03)
        return bool(pred())

    def frame(self, rgb, pub) -> int:
        stamp = self.get_clock().now()
        js = JointState(position=[0.0, 0.6, 0.2, 1.0])
        js.header.stamp = stamp.to_msg()
        self.proprio.publish(js)
        pub.publish(rgb_to_image(rgb, stamp.to_msg()))
        return stamp.nanoseconds


def episode(probe: LinkProbe, instruction: str, timeout: float) -> dict:
    end = time.monotonic() + timeout  # one deadline for the whole episode
    probe.spin_until(lambda: probe.status is not None and probe.say.get_subscription_count() >= 2, timeout)
    probe.say.publish(String(data=instruction))
    probe.spin_until(lambda: any(e["event"] in ("success", "timeout") for e in probe.events), end - time.monotonic())
    st = probe.status
    return {"events": probe.events, "state": st.state_name if st else None, "reason": st.reason if st else None,
            "policy_id": st.policy_id if st else None, "instruction": st.instruction if st else None,
            "actions": len(probe.action_log)}


def bench(probe: LinkProbe, seconds: float, switches: int) -> dict:
    rgb = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    tick = lambda: probe.frame(rgb, probe.camera)  # noqa: E731 - a 30 Hz camera while waiting
    probe.spin_until(lambda: probe.status is not None, 120)
    probe.say.publish(String(data="open the drawer"))
    probe.spin_until(lambda: probe.status.state == ControllerStatus.RUNNING, 60, every=tick)

    def stream(pub, table):
        sent, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            sent.append(probe.frame(rgb, pub))
            probe.spin_until(lambda: False, 1 / 30)
        probe.spin_until(lambda: False, 0.3)
        got = [table[s] for s in sent if s in table]
        return {"p50": round(float(np.percentile(got, 50)), 3), "p99": round(float(np.percentile(got, 99)), 3),
                "n": len(got), "dropped": len(sent) - len(got)} if got else {"n": 0, "dropped": len(sent)}

    out = {"camera_to_action_ms": stream(probe.camera, probe.actions),
           "transport_ms": stream(probe.bench_camera, probe.echo)}
    switch = []
    for i in range(switches):
        old = probe.action_log[-1][1]  # the policy moving the arm now (status is published at 10 Hz)
        t0 = time.monotonic()
        probe.say.publish(String(data=["close the window", "open the drawer", "push the puck to the goal"][i % 3]
                                 + f" #{i}"))
        new = lambda: any(ts >= t0 and pid != old for ts, pid in probe.action_log)  # noqa: E731
        if probe.spin_until(new, 10, every=tick):
            switch.append((min(ts for ts, pid in probe.action_log if ts >= t0 and pid != old) - t0) * 1000)
    out["policy_switch_ms"] = {"p50": round(float(np.percentile(switch, 50)), 3),
                               "p99": round(float(np.percentile(switch, 99)), 3), "n": len(switch)} if switch else {}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    ep = sub.add_parser("episode")
    ep.add_argument("instruction")
    ep.add_argument("--timeout", type=float, default=240.0)
    be = sub.add_parser("bench")
    be.add_argument("--seconds", type=float, default=4.0)
    be.add_argument("--switches", type=int, default=6)
    args = parser.parse_args(argv)
    rclpy.init()
    probe = LinkProbe()
    try:
        result = episode(probe, args.instruction, args.timeout) if args.mode == "episode" else \
            bench(probe, args.seconds, args.switches)
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
