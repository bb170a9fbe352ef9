"""sim_bridge: a Meta-World MuJoCo scene exposed like a robot driver.

Publishes camera frames (sensor_msgs/Image) and proprio (JointState), applies incoming
EndEffectorAction commands, reports success, reward and episode events, and resets on ~/reset.
real_time: a timer at rate_hz steps with the newest action received since the last step (none: the arm
holds) and publishes a frame. Otherwise the scene steps as soon as the action for the last frame arrives.
Fast mode re-sends the current frame when no action arrives within a period.
Episode events on ~/events are JSON strings: {"event": "reset"|"success"|"timeout", "task", "seed", ...}.
"""
from __future__ import annotations

import json
import time

import numpy as np
from hypervla_core.sim import MetaWorldTask, task_for_instruction
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32, String
from std_srvs.srv import Trigger

from hypervla_msgs.msg import EndEffectorAction

from .image_conversion import rgb_to_image
from .node_config import LATCHED, Window, declare, node_defaults, stamp_ns
from .node_runtime import run

SCHEMA = {
    "task": ("Meta-World task to load ('' = choose from the instruction)", None),
    "instruction_topic": ("std_msgs/String instruction; a different task reloads the scene", None),
    "camera_topic": ("sensor_msgs/Image output", None),
    "proprio_topic": ("sensor_msgs/JointState output: hand xyz + gripper opening", None),
    "action_topic": ("hypervla_msgs/EndEffectorAction input", None),
    "image_size": ("rendered size of each camera view (square; views sit side by side)", (16, 1024)),
    "camera": ("view(s): names from config/tasks.yaml cameras or Meta-World cameras, \"a+b\" tiles two; \"\" = that file's default", None),
    "rate_hz": ("camera and physics rate in real-time mode", (1.0, 500.0)),
    "real_time": ("true: fixed-rate loop; false: step as soon as the action for the last frame arrives", None),
    "max_steps": ("actions per episode before a timeout", (1, 100000)),
    "seed": ("first episode seed; each reset uses the next", (0, 2**62)),
}


class SimBridgeNode(Node):
    def __init__(self):
        super().__init__("sim_bridge")
        p = self.p = declare(self, SCHEMA, node_defaults("sim_bridge"))
        self.sim: MetaWorldTask | None = None
        self.seed = p["seed"]
        self.episode = {"active": False}
        self.pending_action = None
        self.frame_stamp_ns = 0
        self.frame_sent_ns = 0
        self.e2e = Window(5000)
        self.cam_pub = self.create_publisher(Image, p["camera_topic"], qos_profile_sensor_data)
        self.prop_pub = self.create_publisher(JointState, p["proprio_topic"], qos_profile_sensor_data)
        self.event_pub = self.create_publisher(String, "~/events", LATCHED)
        self.reward_pub = self.create_publisher(Float32, "~/reward", 10)
        self.success_pub = self.create_publisher(Bool, "~/success", 10)
        self.create_subscription(EndEffectorAction, p["action_topic"], self.on_action, 10)
        self.create_subscription(String, p["instruction_topic"], self.on_instruction, LATCHED)
        self.create_service(Trigger, "~/reset", self.on_reset)
        if p["task"]:
            self.load(p["task"])
        # Real time: the timer steps the scene. Fast: actions step it, and the timer only re-sends the
        # current frame when no action came for a period (the camera never goes silent while waiting).
        self.create_timer(1.0 / p["rate_hz"], self.tick)
        self.get_logger().info(f"sim bridge up ({'real time' if p['real_time'] else 'as fast as possible'})")

    def load(self, task: str) -> None:
        if self.sim is not None and self.sim.task == task:
            return
        if self.sim is not None:
            self.sim.close()
        self.sim = MetaWorldTask(task, image_size=self.p["image_size"], camera=self.p["camera"],
                                 max_steps=self.p["max_steps"])
        self.get_logger().info(f"loaded task {task}")

    def reset(self) -> None:
        self.seed += 1
        self.obs = self.sim.reset(self.seed)
        self.pending_action = None
        self.e2e = Window(5000)
        self.episode = {"active": True, "task": self.sim.task, "seed": self.seed, "start": time.time(), "reward": 0.0}
        self.emit("reset")
        self.publish_frame()

    def emit(self, event: str, **extra) -> None:
        ep = self.episode
        body = {"event": event, "task": ep.get("task"), "seed": ep.get("seed"), "steps": self.sim.steps if self.sim else 0,
                **extra}
        self.event_pub.publish(String(data=json.dumps(body)))

    def on_instruction(self, msg: String) -> None:
        task = self.p["task"] or task_for_instruction(msg.data)
        if task is None:
            self.get_logger().warning(f"no Meta-World task matches instruction {msg.data[:60]!r}")
            return
        self.load(task)
        self.reset()

    def on_reset(self, _req, res):
        if self.sim is None:
            res.success, res.message = False, "no task loaded: publish an instruction or set the task parameter"
            return res
        self.reset()
        res.success, res.message = True, json.dumps({"task": self.sim.task, "seed": self.seed})
        return res

    def on_action(self, msg: EndEffectorAction) -> None:
        if not self.episode["active"]:
            return
        action = np.array([msg.translation.x, msg.translation.y, msg.translation.z,
                           msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.gripper], np.float32)
        if not np.isfinite(action).all():
            self.get_logger().error("ignored an action with NaN/inf")
            return
        if stamp_ns(msg.header.stamp) == self.frame_stamp_ns:
            self.e2e.add((time.monotonic_ns() - self.frame_sent_ns) / 1e6)
        self.pending_action = action
        if not self.p["real_time"] and stamp_ns(msg.header.stamp) == self.frame_stamp_ns:
            self.advance()

    def tick(self) -> None:
        if not self.episode["active"]:
            return
        if self.p["real_time"]:
            self.advance()
        elif time.monotonic_ns() - self.frame_sent_ns > 1e9 / self.p["rate_hz"]:
            self.publish_frame()

    def advance(self) -> None:
        action, self.pending_action = self.pending_action, None
        if action is not None:  # no new command: the arm holds and time does not count against the episode
            self.obs, success, reward = self.sim.step(action)
            self.episode["reward"] += reward
            self.reward_pub.publish(Float32(data=float(reward)))
            self.success_pub.publish(Bool(data=success))
            if success or self.sim.done:
                self.episode["active"] = False
                self.emit("success" if success else "timeout", success=success,
                          duration_s=round(time.time() - self.episode["start"], 3),
                          reward=round(self.episode["reward"], 3),
                          e2e_ms_p50=self.e2e.percentile(50), e2e_ms_p99=self.e2e.percentile(99),
                          e2e_samples=len(self.e2e))
                return
        self.publish_frame()

    def publish_frame(self) -> None:
        stamp = self.get_clock().now()
        self.frame_stamp_ns = stamp.nanoseconds
        img = rgb_to_image(self.obs.image, stamp.to_msg())
        js = JointState(name=["hand_x", "hand_y", "hand_z", "gripper"], position=self.obs.proprio.astype(float).tolist())
        js.header.stamp = img.header.stamp
        self.prop_pub.publish(js)
        self.frame_sent_ns = time.monotonic_ns()
        self.cam_pub.publish(img)

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None


def main(args=None):
    run(SimBridgeNode, "sim_bridge", args)


if __name__ == "__main__":
    main()
