"""The controller with one topic per camera (camera_topics), real processes over DDS: a step takes one frame of
each camera within max_camera_skew_s; a dead or lagging camera holds the arm and the status names it."""
import time

import numpy as np
from fault_helpers import UP, running, state_is, still
from hypervla_ros.bringup import Stack
from hypervla_ros.image_conversion import rgb_to_compressed, rgb_to_image
from rclpy.duration import Duration
from rclpy.qos import qos_profile_sensor_data
from ros_helpers import Probe, Spinner, wait_until, write_config
from sensor_msgs.msg import CompressedImage, Image, JointState

from hypervla_msgs.msg import ControllerStatus as S

TOPICS = ["/cameras/front/image_raw", "/cameras/wrist/image_raw"]


class TwoCameraProbe(Probe):
    def __init__(self):
        super().__init__("two_camera_probe")
        self.cams = [self.create_publisher(Image, t, qos_profile_sensor_data) for t in TOPICS]
        self.wrist_on, self.wrist_lag_ns = True, 0
        self.tiled = self.create_publisher(CompressedImage, "/camera/image_raw/compressed", 10)

    def publish_tiled(self):
        """Both views in one compressed image on the single-camera topic, with fresh joint states."""
        now = self.get_clock().now().to_msg()
        js = JointState(position=[0.0, 0.6, 0.2, 1.0])
        js.header.stamp = now
        self.proprio.publish(js)
        self.tiled.publish(rgb_to_compressed(self.rng.integers(0, 255, (64, 128, 3), dtype=np.uint8), "jpeg", now))

    def publish_frame(self, image=None):
        now = self.get_clock().now()
        js = JointState(position=[0.0, 0.6, 0.2, 1.0])
        js.header.stamp = now.to_msg()
        self.proprio.publish(js)
        front = self.rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        self.cams[0].publish(rgb_to_image(front, now.to_msg(), "front"))
        if self.wrist_on:
            stamp = (now - Duration(nanoseconds=self.wrist_lag_ns)).to_msg()
            self.cams[1].publish(rgb_to_image(255 - front, stamp, "wrist"))
        self.frames_sent += 1


def test_two_camera_topics_dead_and_skewed_camera_hold(ros, tmp_path, tiny_checkpoints):
    config = write_config(tmp_path, tiny_checkpoints["hypervla"],
                          policy_controller={"camera_topics": TOPICS, "max_camera_skew_s": 0.02})
    with Stack(config, log_dir=str(tmp_path / "logs")) as stack:
        stack.start("generator", "controller")
        probe = TwoCameraProbe()
        spinner = Spinner(probe)
        try:
            probe.camera_on()
            probe.say("open the drawer")
            assert wait_until(lambda: running(probe), UP), probe.latest_status()
            t0 = time.monotonic()
            assert wait_until(lambda: len(probe.actions_since(t0)) >= 10, 10)

            probe.camera_on(False)  # a single tiled image on the one-camera topic does not stand in for the set
            probe.wrist_on = False
            t_off = time.monotonic()
            for _ in range(30):
                probe.publish_tiled()
                time.sleep(0.033)
            assert state_is(probe, S.STALE) and not probe.actions_since(t_off + 0.3)
            probe.camera_on()  # the front camera again; the wrist camera stays dead
            assert wait_until(lambda: state_is(probe, S.STALE, "wrist"), 10), probe.latest_status()
            assert "old" in probe.latest_status().reason or "not heard" in probe.latest_status().reason
            assert still(probe)

            probe.wrist_on, probe.wrist_lag_ns = True, 100_000_000  # back, but 100 ms behind the front camera
            assert wait_until(lambda: state_is(probe, S.STALE, "apart"), 10), probe.latest_status()
            assert still(probe)

            probe.wrist_lag_ns = 0
            assert wait_until(lambda: running(probe), 10), probe.latest_status()
            t1 = time.monotonic()
            assert wait_until(lambda: len(probe.actions_since(t1)) >= 5, 10)
            assert stack.alive("controller")
        finally:
            spinner.close()
