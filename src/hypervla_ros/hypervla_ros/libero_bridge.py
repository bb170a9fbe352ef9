"""libero_bridge: LIBERO's Franka Panda exposed like a real 7-DoF arm's driver.

Publishes each camera on its own sensor_msgs/Image topic (<camera_namespace>/<camera>/image_raw, frame_id =
the camera, one stamp per step for all of them), sensor_msgs/JointState (7 joints + 2 fingers) and the
end-effector pose (geometry_msgs/PoseStamped). Accepts hypervla_msgs/EndEffectorAction (a delta for one step)
and geometry_msgs/TwistStamped on ~/delta_twist_cmds (MoveIt Servo: m/s and rad/s in the header's frame; the
grip from the last action or gripper_topic). No fresh command for incoming_command_timeout: the arm holds.
real_time: a timer at rate_hz steps the arm (holding when no command is fresh). Otherwise the arm steps as
soon as a command for the last frame arrives. Episode events on ~/events (JSON, as sim_bridge) use LIBERO's
own goal predicates; "goals" lists every suite task whose goal holds (another task's goal = a wrong goal).
~/applied carries each executed step's action, stamped with the frame it was computed from.
"""
from __future__ import annotations

import json
import time

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from hypervla_core.libero_env import JOINT_NAMES, SAMPLED_INITS, LiberoArm, LiberoConfig
from hypervla_core.servo import ServoInput
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, String
from std_srvs.srv import Trigger

from hypervla_msgs.msg import EndEffectorAction

from .image_conversion import rgb_to_image
from .node_config import LATCHED, Window, declare, node_defaults, stamp_ns
from .node_runtime import run
from .policy_msgs import action_msg, action_vector

SCHEMA = {
    "suite": ("LIBERO suite (one scene, several goals)", None),
    "task": ("task name or instruction to load at start ('' = wait for an instruction)", None),
    "instruction_topic": ("std_msgs/String instruction: the matching task of the suite, next init state", None),
    "cameras": ("cameras to render and publish, each on <camera_namespace>/<name>/image_raw", None),
    "camera_namespace": ("prefix of the camera topics", None),
    "image_size": ("rendered size of each camera (square)", (16, 1024)),
    "mesh_faces_max": ("plain visual meshes above this many triangles drawn decimated (0: LIBERO's own meshes); "
                       "physics unchanged", (0, 10**7)),
    "textured_mesh_faces_max": ("the same for textured meshes", (0, 10**7)),
    "supersample": ("anti-aliasing: drawn this many times larger, then averaged (1: 4x multisampling)", (1, 8)),
    "joint_states_topic": ("sensor_msgs/JointState output", None),
    "ee_pose_topic": ("geometry_msgs/PoseStamped output (base frame)", None),
    "action_topic": ("hypervla_msgs/EndEffectorAction input (delta per step)", None),
    "twist_topic": ("geometry_msgs/TwistStamped input, MoveIt Servo convention", None),
    "applied_topic": ("hypervla_msgs/EndEffectorAction output: each command as executed, stamped with its frame", None),
    "gripper_topic": ("std_msgs/Float32 grip for twist commands: 0 open .. 1 closed", None),
    "incoming_command_timeout": ("hold the arm when the newest command is older than this (s)", (0.001, 10.0)),
    "rate_hz": ("control rate (LIBERO: 20 Hz)", (1.0, 500.0)),
    "real_time": ("true: fixed-rate loop; false: step as soon as the command for the last frame arrives", None),
    "max_steps": ("commanded steps per episode before a timeout", (1, 100000)),
    "publish_sim_state": ("publish the privileged MuJoCo state on ~/sim_state (for scripted demonstrators)", None),
    "init_index": ("init index of the next episode, each reset takes the next one: 0-49 LIBERO's standard "
                   "initial states (wrapping), from 1000 placements sampled from the index; settable", (0, 10**9)),
}


class LiberoBridgeNode(Node):
    def __init__(self):
        super().__init__("libero_bridge")
        p = self.p = declare(self, SCHEMA, node_defaults("libero_bridge"), dynamic=("init_index",))
        self.cameras = list(p["cameras"])
        self.period_s = 1.0 / p["rate_hz"]
        self.arm = LiberoArm(LiberoConfig(suite=p["suite"], cameras=tuple(self.cameras), image_size=p["image_size"],
                                          control_freq=int(round(p["rate_hz"])), max_steps=p["max_steps"],
                                          mesh_faces_max=p["mesh_faces_max"],
                                          textured_mesh_faces_max=p["textured_mesh_faces_max"],
                                          supersample=p["supersample"]))
        self.servo = ServoInput(p["incoming_command_timeout"])
        self.next_init = p["init_index"]
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.episode = {"active": False}
        self.obs = None
        self.frame_stamp_ns = self.frame_sent_ns = 0
        self.e2e = Window(5000)
        self.cam_pubs = {c: self.create_publisher(Image, f"{p['camera_namespace']}/{c}/image_raw",
                                                  qos_profile_sensor_data) for c in self.cameras}
        self.joint_pub = self.create_publisher(JointState, p["joint_states_topic"], qos_profile_sensor_data)
        self.pose_pub = self.create_publisher(PoseStamped, p["ee_pose_topic"], qos_profile_sensor_data)
        self.event_pub = self.create_publisher(String, "~/events", LATCHED)
        self.applied_pub = self.create_publisher(EndEffectorAction, p["applied_topic"], 100)
        self.state_pub = self.create_publisher(String, "~/sim_state", 10) if p["publish_sim_state"] else None
        # Only the newest command counts: depth 1, so a bridge busy rendering never works through a backlog.
        self.create_subscription(EndEffectorAction, p["action_topic"], self.on_action, 1)
        self.create_subscription(TwistStamped, p["twist_topic"], self.on_twist, 1)
        self.create_subscription(Float32, p["gripper_topic"], self.on_gripper, 10)
        self.create_subscription(String, p["instruction_topic"], self.on_instruction, LATCHED)
        self.create_service(Trigger, "~/reset", self.on_reset)
        if p["task"]:
            self.reset(p["task"])
        self.create_timer(self.period_s, self.tick)
        self.get_logger().info(f"LIBERO bridge up: {p['suite']}, cameras {self.cameras} "
                               f"({'real time' if p['real_time'] else 'as fast as possible'})")

    # ---------------------------------------------------------------- episodes

    def on_set_parameters(self, params):
        for q in params:
            if q.name == "init_index":
                self.next_init = q.value
        return SetParametersResult(successful=True)

    def reset(self, task) -> None:
        index = self.arm.set_task(task)  # an unknown task: ValueError naming it
        if self.episode["active"]:  # reset mid-episode: the attempt ends unsuccessful, and says so
            self.episode["active"] = False
            self.emit("aborted", success=False, goals=self.arm.goals_reached())
        n = len(self.arm.init_states(index))
        self.init_index = self.next_init if self.next_init >= SAMPLED_INITS else self.next_init % n
        self.next_init = self.init_index + 1
        self.obs = self.arm.reset(index, self.init_index)
        self.servo.clear()
        self.e2e = Window(5000)
        self.episode = {"active": True, "task": self.arm.task, "init_index": self.init_index, "start": time.time()}
        self.emit("reset", instruction=self.arm.instruction)
        self.publish_frame()

    def emit(self, event: str, **extra) -> None:
        ep = self.episode
        body = {"event": event, "task": ep.get("task"), "init_index": ep.get("init_index"),
                "steps": self.arm.steps, **extra}
        self.event_pub.publish(String(data=json.dumps(body)))

    def on_instruction(self, msg: String) -> None:
        if self.arm.task_index_of(msg.data) is None:
            self.get_logger().warning(f"no {self.p['suite']} task matches instruction {msg.data[:60]!r}")
            return
        self.reset(msg.data)

    def on_reset(self, _req, res):
        if self.obs is None:
            res.success, res.message = False, "no task loaded: publish an instruction or set the task parameter"
            return res
        self.reset(self.arm.task_index)
        res.success, res.message = True, json.dumps({"task": self.arm.task, "init_index": self.init_index})
        return res

    # ---------------------------------------------------------------- commands

    def on_action(self, msg: EndEffectorAction) -> None:
        if not self.episode["active"]:
            return
        try:
            self.servo.on_delta(action_vector(msg), self._sent_s(msg.header.stamp))
        except ValueError as exc:
            self.get_logger().error(f"ignored an action: {exc}", throttle_duration_sec=2.0)
            return
        for_this_frame = stamp_ns(msg.header.stamp) == self.frame_stamp_ns
        if for_this_frame:
            self.e2e.add((time.monotonic_ns() - self.frame_sent_ns) / 1e6)
        if not self.p["real_time"] and for_this_frame:
            self.advance()

    def on_twist(self, msg: TwistStamped) -> None:
        if not self.episode["active"]:
            return
        t = msg.twist
        try:
            self.servo.on_twist([t.linear.x, t.linear.y, t.linear.z], [t.angular.x, t.angular.y, t.angular.z],
                                self.period_s, msg.header.frame_id, self._sent_s(msg.header.stamp), self.obs.ee_quat)
        except ValueError as exc:
            self.get_logger().error(f"ignored a twist: {exc}", throttle_duration_sec=2.0)
            return
        if not self.p["real_time"]:
            self.advance()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _sent_s(self, stamp) -> float:
        """A command's age counts from its stamp (its frame's, or the sender's): one that waited in a queue
        while this node was busy is as old as it is, not fresh on arrival. Stamp 0: arrival time."""
        now, sent = self._now_s(), stamp_ns(stamp) / 1e9
        return min(now, sent) if sent > 0 else now

    def on_gripper(self, msg: Float32) -> None:
        if np.isfinite(msg.data):
            self.servo.set_gripper(msg.data)

    # ---------------------------------------------------------------- stepping

    def tick(self) -> None:
        if not self.episode["active"]:
            return
        if self.p["real_time"]:
            self.advance()
        elif time.monotonic_ns() - self.frame_sent_ns > 1e9 * self.period_s:
            self.publish_frame()  # waiting for a command: the cameras never go silent

    def advance(self) -> None:
        action = self.servo.take(self._now_s())
        if action is None:  # no fresh command: hold; time spent holding does not count against the episode
            if self.p["real_time"]:
                self.obs = self.arm.hold()
                self.publish_frame()
            return
        self.publish_applied(action)
        self.obs, success = self.arm.step(action)
        if success or self.arm.done:
            self.episode["active"] = False
            self.emit("success" if success else "timeout", success=success, goals=self.arm.goals_reached(),
                      duration_s=round(time.time() - self.episode["start"], 3),
                      e2e_ms_p50=self.e2e.percentile(50), e2e_ms_p99=self.e2e.percentile(99),
                      e2e_samples=len(self.e2e))
            return
        self.publish_frame()

    def publish_applied(self, action: np.ndarray) -> None:
        """What the arm did this step and from which frame: the record a dataset is made from (a command that
        came too late, or twice for one frame, never moved the arm and is not in it)."""
        self.applied_pub.publish(action_msg(action, self.frame_stamp_ns))

    def publish_frame(self) -> None:
        stamp = self.get_clock().now()
        self.frame_stamp_ns = stamp.nanoseconds
        msg_stamp = stamp.to_msg()
        obs = self.obs
        js = JointState(name=list(JOINT_NAMES), position=obs.joints.astype(float).tolist())
        js.header.stamp, js.header.frame_id = msg_stamp, "base"
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = msg_stamp, "base"
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in obs.ee_pos)
        q = pose.pose.orientation
        q.x, q.y, q.z, q.w = (float(v) for v in obs.ee_quat)
        self.joint_pub.publish(js)
        self.pose_pub.publish(pose)
        if self.state_pub is not None:
            self.state_pub.publish(String(data=json.dumps({"stamp": self.frame_stamp_ns, "task": self.arm.task,
                                                           "state": self.arm.sim_state().tolist(),
                                                           "fixtures": self.arm.fixture_poses()})))
        self.frame_sent_ns = time.monotonic_ns()
        for name in self.cameras:
            self.cam_pubs[name].publish(rgb_to_image(obs.images[name], msg_stamp, frame_id=name))

    def close(self) -> None:
        self.arm.close()


def main(args=None):
    run(LiberoBridgeNode, "libero_bridge", args)


if __name__ == "__main__":
    main()
