"""policy_controller: the real-time loop. Camera frame + task policy -> end-effector action.

Holds only the runtime part of the checkpoint (shared vision encoder + base-policy function). On a new
instruction it asks the generator asynchronously; the loop keeps running and swaps the policy when it
arrives. It owns timing, QoS and safety: clamps and rate limits, stale-input watchdog, heartbeat,
latched e-stop, fault state with its reason. It publishes nothing on the action topics unless RUNNING.
"""
from __future__ import annotations

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from hypervla_core.runtime import Runtime, check_instruction
from hypervla_core.safety import SafetyFilter, SafetyLimits
from rclpy.node import Node
from rclpy.qos import (
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Empty, String
from std_srvs.srv import Trigger

from hypervla_msgs.msg import ActionChunk, ControllerStatus, EndEffectorAction
from hypervla_msgs.srv import GeneratePolicy

from .image_conversion import ImageError, compressed_to_rgb, image_to_rgb, rgb_to_image
from .node_config import LATCHED, Window, declare, node_defaults, resolve_path, stamp_ns
from .node_runtime import diagnostics, run
from .policy_msgs import from_msg

S = ControllerStatus
STATE_NAMES = {S.IDLE: "IDLE", S.WAITING_POLICY: "WAITING_POLICY", S.RUNNING: "RUNNING", S.STALE: "STALE",
               S.ESTOP: "ESTOP", S.FAULT: "FAULT"}

SCHEMA = {
    "checkpoint": ("checkpoint folder; only its runtime part (vision encoder, base policy) is loaded", None),
    "control_rate_hz": ("control-loop timer rate", (1.0, 1000.0)),
    "camera_topic": ("sensor_msgs/Image input ('' = off)", None),
    "compressed_camera_topic": ("sensor_msgs/CompressedImage input ('' = off)", None),
    "instruction_topic": ("std_msgs/String task instruction (reliable, transient local)", None),
    "proprio_topic": ("sensor_msgs/JointState proprio input, positions used in order ('' = off)", None),
    "require_proprio": ("hold still while proprio is missing or stale", None),
    "estop_topic": ("std_msgs/Bool e-stop; true latches until ~/reset_estop", None),
    "heartbeat_topic": ("std_msgs/Empty dead-man heartbeat", None),
    "heartbeat_timeout_s": ("hold still when no heartbeat for this long (0 = no heartbeat needed)", (0.0, 60.0)),
    "action_topic": ("hypervla_msgs/EndEffectorAction output", None),
    "chunk_topic": ("hypervla_msgs/ActionChunk output", None),
    "status_topic": ("hypervla_msgs/ControllerStatus output", None),
    "twist_topic": ("optional geometry_msgs/TwistStamped output for servo controllers ('' = off)", None),
    "generator_service": ("GeneratePolicy service name", None),
    "generator_timeout_s": ("give up on a generation request after this long", (0.1, 600.0)),
    "switch_grace_s": ("on a task switch, the old policy may keep running this long while waiting", (0.0, 10.0)),
    "generator_retry_s": ("seconds between attempts while the generator is absent or failed", (0.05, 60.0)),
    "act_on_frame": ("compute the action as soon as a frame arrives (else on the next timer tick)", None),
    "max_image_age_s": ("no motion from a camera frame older than this", (0.001, 10.0)),
    "send_first_frame": ("send the first frame after the instruction with the generation request", None),
    "first_frame_wait_s": ("wait this long for a frame newer than the instruction before asking", (0.0, 10.0)),
    "max_translation": ("per-axis translation clamp, metres per step", (0.0, 1.0)),
    "max_rotation": ("per-axis rotation clamp, radians per step", (0.0, 3.2)),
    "max_step_change": ("largest change of a continuous dim between steps", (0.0, 1.0)),
    "torch_threads": ("intra-op threads for the policy (1 keeps latency steady)", (0, 64)),
    "backend": ("control-step engine: onnxruntime (about 2x faster on CPU) or torch", None),
    "status_rate_hz": ("status messages per second; a state change is published at once", (0.1, 1000.0)),
    "diagnostics_period_s": ("seconds between /diagnostics messages", (0.1, 60.0)),
}


class PolicyControllerNode(Node):
    def __init__(self):
        super().__init__("policy_controller")
        p = self.p = declare(self, SCHEMA, node_defaults("policy_controller"))
        if p["torch_threads"]:
            import torch

            torch.set_num_threads(p["torch_threads"])
        self.runtime = Runtime.load(resolve_path(p["checkpoint"]), backend=p["backend"])
        self.safety = SafetyFilter(SafetyLimits(p["max_translation"], p["max_rotation"], p["max_step_change"]))
        self.period_ns = int(1e9 / p["control_rate_hz"])

        self.policy = None  # bound TaskPolicy, swapped whole when a new one arrives
        self.instruction = ""  # latest requested instruction
        self.instruction_seq = 0  # every instruction message starts a new episode, even a repeated text
        self.policy_seq = 0  # the instruction_seq the active policy answers
        self.pending = None  # (seq, future, sent_ns) while a request is in flight
        self.next_try_ns = 0
        self.fault = ""
        self.frame = None  # (rgb, stamp_ns, seq, received_ns)
        self.instruction_ns = 0
        self.frame_seq = self.used_seq = 0
        self.proprio = None  # (array, recv_ns)
        self.estop_input = self.estop_latched = False
        self.last_heartbeat_ns = None
        self.was_running = False
        self.last_tick_ns = None
        self.deadline_misses = self.bad_inputs = self.actions_sent = 0
        self.last_bad_input = ""
        self.tick_dt = Window(500)
        self.latency = Window(500)
        self.state, self.reason = S.IDLE, "no instruction"  # as of the last tick
        self.status_period_ns = int(1e9 / p["status_rate_hz"])
        self.last_status_ns = 0

        self.client = self.create_client(GeneratePolicy, p["generator_service"])
        if p["camera_topic"]:
            self.create_subscription(Image, p["camera_topic"], self.on_image, qos_profile_sensor_data)
        if p["compressed_camera_topic"]:
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
        self.create_timer(1.0 / p["control_rate_hz"], self.tick)
        self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        self.get_logger().info(f"runtime of model {self.runtime.model_id} loaded; loop at {p['control_rate_hz']} Hz")

    # ---------------------------------------------------------------- inputs

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _store_frame(self, rgb: np.ndarray, header) -> None:
        now = self.now_ns()
        self.frame_seq += 1
        self.frame = (rgb, stamp_ns(header.stamp) or now, self.frame_seq, now)
        if self.p["act_on_frame"]:  # lowest latency: act now; the timer still runs watchdog and status
            self._step(now)

    def _reject(self, what: str, exc: Exception) -> None:
        self.bad_inputs += 1
        self.last_bad_input = f"{what}: {exc}"
        self.get_logger().warning(self.last_bad_input, throttle_duration_sec=2.0)

    def on_image(self, msg: Image) -> None:
        try:
            self._store_frame(image_to_rgb(msg), msg.header)
        except ImageError as exc:
            self._reject("camera", exc)

    def on_compressed(self, msg: CompressedImage) -> None:
        try:
            self._store_frame(compressed_to_rgb(msg), msg.header)
        except ImageError as exc:
            self._reject("compressed camera", exc)

    def on_proprio(self, msg: JointState) -> None:
        values = np.asarray(msg.position, np.float32)
        if values.shape != (self.runtime.model.cfg.proprio_dim,) or not np.isfinite(values).all():
            self._reject("proprio", ValueError(f"expected {self.runtime.model.cfg.proprio_dim} finite positions, "
                                               f"got {values.shape}"))
            return
        self.proprio = (values, self.now_ns())

    def on_instruction(self, msg: String) -> None:
        try:
            text = check_instruction(msg.data)
        except ValueError as exc:
            self._reject("instruction", exc)
            return
        self.instruction = text
        self.instruction_seq += 1
        self.instruction_ns = self.now_ns()
        self.fault = ""
        self.next_try_ns = 0
        self.get_logger().info(f"new instruction: {text[:80]!r}")
        self._request_policy()

    def on_estop(self, msg: Bool) -> None:
        self.estop_input = bool(msg.data)
        if self.estop_input and not self.estop_latched:
            self.estop_latched = True
            self.get_logger().warning("E-STOP latched")

    def on_heartbeat(self, _msg: Empty) -> None:
        self.last_heartbeat_ns = self.now_ns()

    def on_reset_estop(self, _req, res):
        if self.estop_input:
            res.success, res.message = False, "e-stop input still asserted; release it first"
        else:
            self.estop_latched = False
            res.success, res.message = True, "e-stop reset"
            self.get_logger().info("e-stop reset")
        return res

    # ---------------------------------------------------------------- generator

    def _request_policy(self) -> None:
        if self.pending is not None:
            self.client.remove_pending_request(self.pending[1])
            self.pending = None
        now = self.now_ns()
        if not self.client.service_is_ready():
            self.next_try_ns = now + int(self.p["generator_retry_s"] * 1e9)
            return
        fresh = self.frame is not None and self.frame[3] >= self.instruction_ns
        if self.p["send_first_frame"] and not fresh and now - self.instruction_ns < self.p["first_frame_wait_s"] * 1e9:
            self.next_try_ns = now + 5_000_000  # the episode's first frame is still on its way
            return
        req = GeneratePolicy.Request(instruction=self.instruction)
        if self.p["send_first_frame"] and fresh:
            req.has_first_image = True
            req.first_image = rgb_to_image(self.frame[0])
        future = self.client.call_async(req)
        self.pending = (self.instruction_seq, future, now)
        future.add_done_callback(self.on_policy)

    def on_policy(self, future) -> None:
        if self.pending is None or future is not self.pending[1]:
            return  # superseded by a newer instruction
        seq, instruction = self.pending[0], self.instruction
        self.pending = None
        try:
            res = future.result()
            if not res.success:
                raise RuntimeError(f"generator refused: {res.message}")
            policy = from_msg(res.policy).bind(self.runtime)
        except Exception as exc:  # any bad answer: stop and say why, retry later
            self.policy = None
            self.fault = f"no valid policy for {instruction[:60]!r}: {exc}"
            self.next_try_ns = self.now_ns() + int(self.p["generator_retry_s"] * 1e9)
            self.get_logger().error(self.fault)
            return
        self.policy, self.policy_seq = policy, seq  # atomic swap: old or new policy, never a mix
        self.fault = ""
        self.was_running = False  # forces ensembler and rate-limit reset before the first action
        self.get_logger().info(f"policy {policy.policy_id} active ({policy.generation_time_ms:.1f} ms to generate)")

    def _service_generator(self, now: int) -> None:
        if self.pending is not None:
            if now - self.pending[2] > self.p["generator_timeout_s"] * 1e9:
                self.client.remove_pending_request(self.pending[1])
                self.pending = None
                self.policy = None
                self.fault = f"generator timed out after {self.p['generator_timeout_s']} s"
                self.next_try_ns = now + int(self.p["generator_retry_s"] * 1e9)
            return
        if self.instruction and self.policy_seq != self.instruction_seq and now >= self.next_try_ns:
            self._request_policy()

    # ---------------------------------------------------------------- loop

    def _state(self, now: int) -> tuple[int, str]:
        if self.estop_latched:
            return S.ESTOP, "e-stop latched" + (" (input asserted)" if self.estop_input else "; call ~/reset_estop")
        if self.policy is None or self.policy_seq != self.instruction_seq:
            if self.fault:
                return S.FAULT, self.fault
            if not self.instruction:
                return S.IDLE, "no instruction"
            # The previous policy keeps running while a switch request is in flight, for switch_grace_s at
            # most (a dead generator must not leave the old task running); otherwise hold still.
            in_grace = self.pending is not None and now - self.instruction_ns < self.p["switch_grace_s"] * 1e9
            if self.policy is None or not in_grace:
                if self.pending is None and not self.client.service_is_ready():
                    return S.WAITING_POLICY, "generator service unavailable"
                return S.WAITING_POLICY, "waiting for generated policy"
        hb = self.p["heartbeat_timeout_s"]
        if hb > 0 and (self.last_heartbeat_ns is None or now - self.last_heartbeat_ns > hb * 1e9):
            return S.STALE, "heartbeat missing"
        limit = self.p["max_image_age_s"] * 1e9
        if self.frame is None:
            return S.STALE, "no camera frame"
        if now - self.frame[1] > limit:
            return S.STALE, f"camera frame {(now - self.frame[1]) / 1e6:.0f} ms old"
        if self.frame[1] - now > limit:  # stamped ahead of our clock: the clocks disagree, trust neither
            return S.STALE, f"camera frame stamped {(self.frame[1] - now) / 1e6:.0f} ms in the future (clock mismatch)"
        if self.p["require_proprio"] and (self.proprio is None or now - self.proprio[1] > limit):
            return S.STALE, "proprio missing or stale"
        return S.RUNNING, ""

    def tick(self) -> None:
        start = self.now_ns()
        if self.last_tick_ns is not None:
            dt = start - self.last_tick_ns
            self.tick_dt.add(dt / 1e9)
            if dt > 1.5 * self.period_ns:
                self.deadline_misses += 1
        self.last_tick_ns = start
        self._service_generator(start)
        state, reason = self._step(start)
        # Status at status_rate_hz, and at once on a change: each publish costs the loop a DDS send.
        # abs(): simulated time may jump backwards.
        if (state, reason) != (self.state, self.reason) or abs(start - self.last_status_ns) >= self.status_period_ns:
            self._publish_status(state, reason)
            self.last_status_ns = start
        self.state, self.reason = state, reason
        if self.now_ns() - start > self.period_ns:
            self.deadline_misses += 1

    def _step(self, now: int) -> tuple[int, str]:
        state, reason = self._state(now)
        if state != S.RUNNING:
            self.was_running = False
        elif self.frame[2] != self.used_seq:  # act once per new frame; never twice on the same data
            if not self.was_running:
                self.policy.reset()
                self.safety.reset()
                self.was_running = True
            state, reason = self._act()
        return state, reason

    def _act(self) -> tuple[int, str]:
        rgb, stamp, seq, _ = self.frame
        self.used_seq = seq
        policy = self.policy
        proprio = self.proprio[0] if self.proprio is not None else None
        try:
            raw, chunk = policy.step_with_chunk(rgb, proprio)
            action = self.safety(raw)
        except Exception as exc:  # NaN, bad proprio: no motion this step, say why
            self._reject("policy step", exc)
            self.was_running = False
            return S.FAULT, f"policy step failed: {exc}"
        header_stamp = rclpy.time.Time(nanoseconds=stamp).to_msg()
        msg = EndEffectorAction(policy_id=policy.policy_id, gripper=float(action[6]))
        msg.header.stamp, msg.header.frame_id = header_stamp, "base"
        msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in action[:3])
        msg.rotation.x, msg.rotation.y, msg.rotation.z = (float(v) for v in action[3:6])
        self.action_pub.publish(msg)
        self.actions_sent += 1
        self.latency.add((self.now_ns() - stamp) / 1e6)
        cmsg = ActionChunk(policy_id=policy.policy_id, horizon=policy.action_horizon, action_dim=policy.action_dim,
                           actions=chunk.reshape(-1).tolist(), step_period=self.period_ns / 1e9)
        cmsg.header.stamp = header_stamp
        self.chunk_pub.publish(cmsg)
        if self.twist_pub is not None:
            period = self.period_ns / 1e9
            tw = TwistStamped()
            tw.header.stamp, tw.header.frame_id = header_stamp, "base"
            tw.twist.linear.x, tw.twist.linear.y, tw.twist.linear.z = (float(v) / period for v in action[:3])
            tw.twist.angular.x, tw.twist.angular.y, tw.twist.angular.z = (float(v) / period for v in action[3:6])
            self.twist_pub.publish(tw)
        return S.RUNNING, ""

    def _loop_rate(self) -> float:
        return 1.0 / float(np.mean(self.tick_dt.samples)) if len(self.tick_dt) else 0.0

    def _publish_status(self, state: int, reason: str) -> None:
        msg = ControllerStatus(state=state, state_name=STATE_NAMES[state], reason=reason,
                               policy_id=self.policy.policy_id if self.policy else "",
                               instruction=self.policy.instruction if self.policy else "",
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
            "state": STATE_NAMES[state], "policy_id": self.policy.policy_id if self.policy else "",
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
