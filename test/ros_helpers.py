"""Test side of the wire: a real rclpy node that plays camera/operator and records what the suite publishes."""
from __future__ import annotations

import pathlib
import threading
import time

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from hypervla_ros.image_conversion import rgb_to_image
from hypervla_ros.node_config import LATCHED
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from hypervla_core.sim import camera_views, load_tasks

from hypervla_msgs.msg import ControllerStatus, EndEffectorAction

ROOT = pathlib.Path(__file__).resolve().parents[1]
VIEWS = len(camera_views(None, load_tasks()))  # the probe's camera publishes the default views side by side


def write_config(tmp_path: pathlib.Path, checkpoint, **overrides) -> pathlib.Path:
    """config/hypervla.yaml with the checkpoint replaced and per-node overrides {node: {param: value}}."""
    cfg = yaml.safe_load((ROOT / "config" / "hypervla.yaml").read_text())
    for node in ("policy_generator", "policy_controller"):
        cfg[node]["ros__parameters"]["checkpoint"] = str(checkpoint)
    for node, params in overrides.items():
        cfg[node]["ros__parameters"].update(params)
    path = tmp_path / "hypervla.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Probe(Node):
    def __init__(self, name: str = "test_probe"):
        super().__init__(name)
        self.camera = self.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.proprio = self.create_publisher(JointState, "/hypervla/proprio", qos_profile_sensor_data)
        self.instruction = self.create_publisher(String, "/hypervla/instruction", LATCHED)
        self.estop = self.create_publisher(Bool, "/hypervla/estop", LATCHED)
        self.actions: list[tuple[float, EndEffectorAction]] = []
        self.written: list[tuple[int, EndEffectorAction]] = []  # by the sender's DDS source timestamp (wall ns)
        self.statuses: list[ControllerStatus] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(EndEffectorAction, "/hypervla/action", self._on_action, 100)
        self.create_subscription(ControllerStatus, "/hypervla/status", self.statuses.append, 100)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 100)
        self.reset_estop = self.create_client(Trigger, "/policy_controller/reset_estop")
        self.rng = np.random.default_rng(0)
        self._camera_on = False
        self.frames_sent = 0
        self.create_timer(1 / 30, self._tick)  # a 30 Hz camera

    def _tick(self):
        if not self._camera_on:
            return
        self.publish_frame()

    def publish_frame(self, image: Image | None = None):
        stamp = self.get_clock().now().to_msg()
        if image is None:
            image = rgb_to_image(self.rng.integers(0, 255, (64, 64 * VIEWS, 3), dtype=np.uint8), stamp)
        js = JointState(position=[0.0, 0.6, 0.2, 1.0])
        js.header.stamp = stamp
        self.proprio.publish(js)
        self.camera.publish(image)
        self.frames_sent += 1

    def camera_on(self, on: bool = True):
        self._camera_on = on

    def say(self, text: str):
        self.instruction.publish(String(data=text))

    def latest_status(self) -> ControllerStatus | None:
        return self.statuses[-1] if self.statuses else None

    def _on_action(self, msg: EndEffectorAction, info) -> None:
        self.actions.append((time.monotonic(), msg))
        self.written.append((info["source_timestamp"], msg))

    def actions_since(self, t: float) -> list[EndEffectorAction]:
        return [m for (ts, m) in list(self.actions) if ts >= t]

    def actions_written_since(self, wall_ns: int) -> list[EndEffectorAction]:
        """What the sender wrote at or after `wall_ns`: a sample written just before the sender was stopped
        (SIGSTOP) can arrive after it resumes; it was not sent then."""
        return [m for (ts, m) in list(self.written) if ts >= wall_ns]

    def call_reset(self, timeout=5.0):
        assert self.reset_estop.wait_for_service(timeout)
        fut = self.reset_estop.call_async(Trigger.Request())
        wait_until(fut.done, timeout)
        return fut.result()


class Spinner:
    """Spin probe nodes in a background thread for the duration of a test."""

    def __init__(self, *nodes):
        self.executor = SingleThreadedExecutor()
        for n in nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self._stop = False
        self.thread.start()

    def _spin(self):
        while not self._stop:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self):
        self._stop = True
        self.thread.join(5)
        for n in list(self.executor.get_nodes()):
            self.executor.remove_node(n)
            n.destroy_node()


def wait_until(pred, timeout: float, period: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(period)
    return bool(pred())
