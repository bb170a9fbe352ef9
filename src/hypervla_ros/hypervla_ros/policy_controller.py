"""policy_controller: the real-time loop. Camera frame + task policy -> end-effector action.

Holds only the runtime part of the checkpoint (shared vision encoder + base-policy function). On a new
instruction it asks the generator asynchronously; the loop keeps running and swaps the policy when it
arrives. It owns timing and QoS; every decision (state, grace, e-stop, staleness, ordering, limits) is
hypervla_core.control.Controller's. Motion goes out only while RUNNING; holding publishes one stop.
"""
from __future__ import annotations

import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from hypervla_core import control, signing
from hypervla_core.cameras import CameraSet
from hypervla_core.control import STATE_NAMES, ControlConfig, Controller
from hypervla_core.runtime import Runtime, check_instruction
from hypervla_core.safety import SafetyLimits
from hypervla_core.task_policy import PolicyFormatError
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Empty, String
from std_srvs.srv import Trigger

from hypervla_msgs.msg import ActionChunk, ControllerStatus, EndEffectorAction
from hypervla_msgs.srv import GeneratePolicy

from .image_conversion import ImageError, compressed_to_rgb, image_to_rgb, rgb_to_image
from .node_config import GENERATOR_CLIENT, LATCHED, Window, declare, node_defaults, resolve_path, stamp_ns
from .node_runtime import diagnostics, run
from .policy_msgs import from_msg

S = ControllerStatus
assert (S.IDLE, S.WAITING_POLICY, S.RUNNING, S.STALE, S.ESTOP, S.FAULT) == (
    control.IDLE, control.WAITING_POLICY, control.RUNNING, control.STALE, control.ESTOP, control.FAULT)

SCHEMA = {
    "checkpoint": ("checkpoint folder; only its runtime part (vision encoder, base policy) is loaded", None),
    "control_rate_hz": ("control-loop timer rate", (1.0, 1000.0)),
    "camera_topic": ("sensor_msgs/Image input, all views in one image side by side ('' = off)", None),
    "camera_topics": ("sensor_msgs/Image inputs, one per view in the checkpoint's view order ([] = camera_topic)", None),
    "max_camera_skew_s": ("with camera_topics: the frames of one step lie within this of each other", (0.0, 1.0)),
    "compressed_camera_topic": ("sensor_msgs/CompressedImage input ('' = off)", None),
    "instruction_topic": ("std_msgs/String task instruction (reliable, transient local)", None),
    "proprio_topic": ("sensor_msgs/JointState proprio input, positions used in order ('' = off)", None),
    "require_proprio": ("hold still while proprio is missing or stale", None),
    "estop_topic": ("std_msgs/Bool e-stop, tracked per publisher; true latches until ~/reset_estop", None),
    "estop_timeout_s": ("hold still when no e-stop state was heard for this long (0 = not periodic)", (0.0, 60.0)),
    "start_latched": ("start with the e-stop latched: only ~/reset_estop releases it", None),
    "stall_periods": ("a loop gap longer than this many periods holds until inputs are heard afresh", (1.0, 1000.0)),
    "trust_arrival_time": ("use the arrival time for frames stamped 0 (else they are refused)", None),
    "allow_no_first_frame": ("after first_frame_wait_s, ask for a policy without the first frame", None),
    "heartbeat_topic": ("std_msgs/Empty dead-man heartbeat", None),
    "heartbeat_timeout_s": ("hold still when no heartbeat for this long (0 = no heartbeat needed)", (0.0, 60.0)),
    "action_topic": ("hypervla_msgs/EndEffectorAction output", None),
    "chunk_topic": ("hypervla_msgs/ActionChunk output", None),
    "status_topic": ("hypervla_msgs/ControllerStatus output", None),
    "twist_topic": ("optional geometry_msgs/TwistStamped output for servo controllers ('' = off)", None),
    "generator_service": ("GeneratePolicy service name", None),
    "require_signed_policies": ("run only policies signed by a key in trusted_keys_file", None),
    "trusted_keys_file": ("public keys (`ed25519 <hex>` lines) whose signatures are trusted", None),
    "generator_timeout_s": ("give up on a generation request after this long", (0.1, 600.0)),
    "switch_grace_s": ("on a task switch, the old policy may keep running this long while waiting", (0.0, 10.0)),
    "generator_retry_s": ("seconds between attempts while the generator is absent or failed", (0.05, 60.0)),
    "act_on_frame": ("compute the action as soon as a frame arrives (else on the next timer tick)", None),
    "max_image_age_s": ("no motion from a camera frame older than this", (0.001, 10.0)),
    "send_first_frame": ("send the first frame after the instruction with the generation request", None),
    "first_frame_wait_s": ("with allow_no_first_frame: wait this long for the first frame", (0.0, 10.0)),
    "max_translation": ("per-axis translation clamp, metres per step", (0.0, 1.0)),
    "max_rotation": ("per-axis rotation clamp, radians per step", (0.0, 3.2)),
    "max_step_change": ("largest change of a continuous dim between steps", (0.0, 1.0)),
    "torch_threads": ("intra-op threads for the policy (1 keeps latency steady)", (0, 64)),
    "backend": ("control-step engine: onnxruntime (about 2x faster on CPU) or torch", None),
    "status_rate_hz": ("status messages per second; a state change is published at once", (0.1, 1000.0)),
    "diagnostics_period_s": ("seconds between /diagnostics messages", (0.1, 60.0)),
}


# Safety limits an operator may change at run time (`ros2 param set`, rqt_reconfigure), within their ranges.
RUNTIME_LIMITS = ("max_translation", "max_rotation", "max_step_change", "max_image_age_s")


class PolicyControllerNode(Node):
    """Thin: messages in -> hypervla_core.control.Controller calls -> messages out. Owns timing and QoS."""

    def __init__(self):
        super().__init__("policy_controller")
        p = self.p = declare(self, SCHEMA, node_defaults("policy_controller"), dynamic=RUNTIME_LIMITS)
        if p["torch_threads"]:
            import torch

            torch.set_num_threads(p["torch_threads"])
        self.runtime = Runtime.load(resolve_path(p["checkpoint"]), backend=p["backend"])
        mcfg = self.runtime.model.cfg
        cameras = None
        if p["camera_topics"]:
            if len(p["camera_topics"]) != mcfg.views:
                raise ValueError(f"camera_topics lists {len(p['camera_topics'])} cameras; the checkpoint takes "
                                 f"{mcfg.views} views")
            cameras = CameraSet(list(p["camera_topics"]), mcfg.image_size, p["max_camera_skew_s"])
        self.core = Controller(ControlConfig(
            control_rate_hz=p["control_rate_hz"], max_image_age_s=p["max_image_age_s"],
            require_proprio=p["require_proprio"], heartbeat_timeout_s=p["heartbeat_timeout_s"],
            estop_timeout_s=p["estop_timeout_s"], stall_periods=p["stall_periods"], start_latched=p["start_latched"],
            trust_arrival_time=p["trust_arrival_time"], switch_grace_s=p["switch_grace_s"],
            generator_timeout_s=p["generator_timeout_s"], generator_retry_s=p["generator_retry_s"],
            send_first_frame=p["send_first_frame"],
            # A hypernetwork trained on first frames makes a worse policy without one: never ask without it.
            first_frame_required=(mcfg.model_type == "hypervla" and mcfg.use_first_frame
                                  and not p["allow_no_first_frame"]),
            first_frame_wait_s=p["first_frame_wait_s"],
            limits=SafetyLimits(p["max_translation"], p["max_rotation"], p["max_step_change"])), self.now_ns, cameras)
        self.period_ns = self.core.cfg.period_ns
        self.trusted = signing.load_trusted(resolve_path(p["trusted_keys_file"])) if p["require_signed_policies"] else None
        if self.trusted is None:
            self.get_logger().warning("require_signed_policies is off: any generator on the domain can move the arm")
        self.future = None  # (seq, future) of the request in flight
        self.last_tick_ns = None
        self.deadline_misses = self.bad_inputs = self.actions_sent = 0
        self.last_bad_input = ""
        self.tick_dt = Window(500)
        self.latency = Window(500)
        self.state, self.reason = S.IDLE, "no instruction"  # as last published
        self.status_period_ns = int(1e9 / p["status_rate_hz"])
        self.last_status_ns = 0
        if self.core.estop_latched:
            self.get_logger().warning("started with the e-stop latched (start_latched): call ~/reset_estop to move")

        self.client = self.create_client(GeneratePolicy, p["generator_service"], qos_profile=GENERATOR_CLIENT)
        for topic in p["camera_topics"]:
            self.create_subscription(Image, topic, lambda m, t=topic: self.on_camera(t, m), qos_profile_sensor_data)
        # With camera_topics the single-image inputs are off: one tiled image must not stand in for the set.
        if p["camera_topic"] and not p["camera_topics"]:
            self.create_subscription(Image, p["camera_topic"], self.on_image, qos_profile_sensor_data)
        if p["compressed_camera_topic"] and not p["camera_topics"]:
            self.create_subscription(CompressedImage, p["compressed_camera_topic"], self.on_compressed,
                                     qos_profile_sensor_data)
        self.create_subscription(String, p["instruction_topic"], self.on_instruction, LATCHED)
        if p["proprio_topic"]:
            self.create_subscription(JointState, p["proprio_topic"], self.on_proprio, qos_profile_sensor_data)
        self.create_subscription(Bool, p["estop_topic"], self.on_estop, LATCHED)
        self.create_subscription(Empty, p["heartbeat_topic"], self.on_heartbeat, 10)
        self.create_service(Trigger, "~/reset_estop", self.on_reset_estop)
        self.action_pub = self.create_publisher(EndEffectorAction, p["action_topic"], 10)
        self.chunk_pub = self.create_publisher(ActionChunk, p["chunk_topic"], 10)
        self.status_pub = self.create_publisher(ControllerStatus, p["status_topic"], 10)
        self.twist_pub = self.create_publisher(TwistStamped, p["twist_topic"], 10) if p["twist_topic"] else None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.create_timer(1.0 / p["control_rate_hz"], self.tick)
        self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        self.get_logger().info(f"runtime of model {self.runtime.model_id} loaded; loop at {p['control_rate_hz']} Hz")

    def on_set_parameters(self, params):
        """Ranges and read-only flags are checked by rclpy first; what reaches here is applied at once."""
        changed = {q.name: q.value for q in params if q.name in RUNTIME_LIMITS}
        if changed:
            self.p.update(changed)
            p = self.p
            self.core.set_limits(SafetyLimits(p["max_translation"], p["max_rotation"], p["max_step_change"]),
                                 p["max_image_age_s"])
            self.get_logger().info(f"limits changed: {changed}")
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- inputs

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _sent_ns(self, info) -> int:
        """When a sample was published, on this node's clock: its age by the DDS source timestamp (wall
        clock; across hosts that needs synchronized clocks) taken back from now."""
        return self.now_ns() - max(0, time.time_ns() - info["source_timestamp"])

    def _reject(self, what: str, exc: Exception) -> None:
        self.bad_inputs += 1
        self.last_bad_input = f"{what}: {exc}"
        self.get_logger().warning(self.last_bad_input, throttle_duration_sec=2.0)

    def _frame(self, decode, msg, what: str) -> None:
        try:
            self.core.on_frame(decode(msg), stamp_ns(msg.header.stamp))
        except (ImageError, ValueError) as exc:
            self._reject(what, exc)
            return
        if self.p["act_on_frame"]:  # lowest latency: act now; the timer still runs watchdog and status
            self._step()

    def on_camera(self, topic: str, msg: Image) -> None:
        try:
            complete = self.core.on_camera(topic, image_to_rgb(msg), stamp_ns(msg.header.stamp))
        except (ImageError, ValueError) as exc:
            self._reject(f"camera {topic}", exc)
            return
        if complete and self.p["act_on_frame"]:
            self._step()

    def on_image(self, msg: Image) -> None:
        self._frame(image_to_rgb, msg, "camera")

    def on_compressed(self, msg: CompressedImage) -> None:
        self._frame(compressed_to_rgb, msg, "compressed camera")

    def on_proprio(self, msg: JointState) -> None:
        values = np.asarray(msg.position, np.float32)
        if values.shape != (self.runtime.model.cfg.proprio_dim,) or not np.isfinite(values).all():
            self._reject("proprio", ValueError(f"expected {self.runtime.model.cfg.proprio_dim} finite positions, "
                                               f"got {values.shape}"))
            return
        self.core.on_proprio(values)

    def on_instruction(self, msg: String) -> None:
        try:
            text = check_instruction(msg.data)
        except ValueError as exc:
            self._reject("instruction", exc)
            return
        self.core.on_instruction(text)
        self.get_logger().info(f"new instruction: {text[:80]!r}")
        self._service_generator()

    def on_estop(self, msg: Bool, info) -> None:
        gid = info.get("publisher_gid") or {}
        if self.core.on_estop(bytes(gid.get("data", b"")), bool(msg.data), self._sent_ns(info)):
            self.get_logger().warning("E-STOP latched")
        self._step()  # the stop goes out now, not at the next tick

    def on_heartbeat(self, _msg: Empty, info) -> None:
        self.core.on_heartbeat(self._sent_ns(info))

    def on_reset_estop(self, _req, res):
        alive = {bytes(i.endpoint_gid) for i in self.get_publishers_info_by_topic(self.resolve_topic_name(self.p["estop_topic"]))}
        res.success, res.message = self.core.reset_estop(alive)
        self.get_logger().info(res.message)
        return res

    # ---------------------------------------------------------------- generator

    def _service_generator(self) -> None:
        pending = self.core.pending
        if self.future is not None and (pending is None or pending[0] != self.future[0]):
            self.client.remove_pending_request(self.future[1])  # timed out: forget it
            self.future = None
        req = self.core.request(self.client.service_is_ready())
        if req is None:
            return
        msg = GeneratePolicy.Request(instruction=req.instruction)
        if req.first_image is not None:
            msg.has_first_image, msg.first_image = True, rgb_to_image(req.first_image)
        future = self.client.call_async(msg)
        self.future = (req.seq, future)
        future.add_done_callback(lambda f, seq=req.seq, text=req.instruction: self.on_policy(seq, text, f))

    def on_policy(self, seq: int, instruction: str, future) -> None:
        if self.future is not None and self.future[1] is future:
            self.future = None
        try:
            res = future.result()
            if not res.success:
                raise RuntimeError(f"generator refused: {res.message}")
            policy = from_msg(res.policy).bind(self.runtime)  # content hash, shapes, model id
            if self.trusted is not None:  # who made it: only a trusted generator's policies move the arm
                signing.verify(self.trusted, res.policy.signer, bytes(res.policy.signature), policy)
            if policy.instruction != instruction:  # a genuine policy, but the answer to another request
                raise PolicyFormatError(f"policy was generated for {policy.instruction[:60]!r}")
        except Exception as exc:  # any bad answer: stop and say why, retry later
            error = f"no valid policy for {self.core.instruction[:60]!r}: {exc}"
            if self.core.on_policy(seq, None, error):
                self.get_logger().error(error)
            return
        if self.core.on_policy(seq, policy):
            self.get_logger().info(f"policy {policy.policy_id} active ({policy.generation_time_ms:.1f} ms to generate)")
        self._service_generator()  # superseded meanwhile: ask for the newest instruction now

    # ---------------------------------------------------------------- loop

    def tick(self) -> None:
        start = self.now_ns()
        if self.last_tick_ns is not None:
            dt = start - self.last_tick_ns
            self.tick_dt.add(dt / 1e9)
            if dt > 1.5 * self.period_ns:
                self.deadline_misses += 1
        self.last_tick_ns = start
        self._service_generator()
        self._step()
        # abs(): simulated time may jump backwards.
        if abs(start - self.last_status_ns) >= self.status_period_ns:
            self._publish_status(self.state, self.reason)
        if self.now_ns() - start > self.period_ns:
            self.deadline_misses += 1

    def _step(self) -> None:
        state, reason, cmd = self.core.step()
        if cmd is not None:
            self._publish(cmd)
        if (state, reason) != (self.state, self.reason):  # a change goes out at once
            if reason == "waiting for the first camera frame":
                self.get_logger().info("waiting for the first camera frame before asking for a policy")
            self._publish_status(state, reason)

    def _publish(self, cmd) -> None:
        action = cmd.action
        header_stamp = rclpy.time.Time(nanoseconds=cmd.stamp_ns).to_msg()
        msg = EndEffectorAction(policy_id=cmd.policy_id, gripper=float(action[6]))
        msg.header.stamp, msg.header.frame_id = header_stamp, "base"
        msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in action[:3])
        msg.rotation.x, msg.rotation.y, msg.rotation.z = (float(v) for v in action[3:6])
        self.action_pub.publish(msg)
        if cmd.chunk is not None:
            self.actions_sent += 1
            self.latency.add((self.now_ns() - cmd.stamp_ns) / 1e6)
            horizon, dim = cmd.chunk.shape
            cmsg = ActionChunk(policy_id=cmd.policy_id, horizon=horizon, action_dim=dim,
                               actions=cmd.chunk.reshape(-1).tolist(), step_period=self.period_ns / 1e9)
            cmsg.header.stamp = header_stamp
            self.chunk_pub.publish(cmsg)
        if self.twist_pub is not None:
            period = self.period_ns / 1e9
            tw = TwistStamped()
            tw.header.stamp, tw.header.frame_id = header_stamp, "base"
            tw.twist.linear.x, tw.twist.linear.y, tw.twist.linear.z = (float(v) / period for v in action[:3])
            tw.twist.angular.x, tw.twist.angular.y, tw.twist.angular.z = (float(v) / period for v in action[3:6])
            self.twist_pub.publish(tw)

    def _loop_rate(self) -> float:
        return 1.0 / float(np.mean(self.tick_dt.samples)) if len(self.tick_dt) else 0.0

    def _publish_status(self, state: int, reason: str) -> None:
        self.state, self.reason, self.last_status_ns = state, reason, self.now_ns()
        policy = self.core.policy
        msg = ControllerStatus(state=state, state_name=STATE_NAMES[state], reason=reason,
                               policy_id=policy.policy_id if policy else "",
                               instruction=policy.instruction if policy else "",
                               loop_rate_hz=self._loop_rate(), deadline_misses=self.deadline_misses,
                               latency_p50_ms=self.latency.percentile(50), latency_p99_ms=self.latency.percentile(99))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)

    def publish_diagnostics(self) -> None:
        state = self.state
        level = {S.RUNNING: DiagnosticStatus.OK, S.IDLE: DiagnosticStatus.OK, S.WAITING_POLICY: DiagnosticStatus.WARN,
                 S.STALE: DiagnosticStatus.WARN}.get(state, DiagnosticStatus.ERROR)
        message = STATE_NAMES[state] + (f": {self.reason}" if self.reason else "")
        values = {
            "state": STATE_NAMES[state], "policy_id": self.core.policy.policy_id if self.core.policy else "",
            "loop_rate_hz": f"{self._loop_rate():.1f}", "deadline_misses": self.deadline_misses,
            "latency_ms_p50": f"{self.latency.percentile(50):.2f}", "latency_ms_p99": f"{self.latency.percentile(99):.2f}",
            "actions_sent": self.actions_sent, "bad_inputs": self.bad_inputs, "last_bad_input": self.last_bad_input,
        }
        msg = diagnostics(self, "hypervla: policy_controller", self.runtime.model_id, level, message, values)
        self.diag_pub.publish(msg)


def main(args=None):
    run(PolicyControllerNode, "policy_controller", args)


if __name__ == "__main__":
    main()
