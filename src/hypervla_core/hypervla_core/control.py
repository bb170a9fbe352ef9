"""The controller's decisions, without ROS: state, task switches, e-stop, staleness, ordering, limits.

`Controller` is fed inputs (frames, instructions, policies, e-stop samples, heartbeats) and asked to `step`;
it answers with the state, the reason, and at most one command to publish. Every time comes from the
injected clock (nanoseconds), so each rule is a deterministic test. The ROS node only turns messages into
these calls and commands back into messages.

Invariants (test/test_control.py checks them under random interleavings):
- a motion command goes out only while RUNNING, at most once per frame, from the frame's own policy;
- a superseded policy runs at most `switch_grace_s` after the first instruction that superseded it;
- never from a frame older than `max_image_age_s`, nor one older than the last frame acted on;
- every command is within the clamps and differs from the previous one by at most `max_step_change`,
  unless a stop (zero motion, published once when the controller starts holding) lies between them;
- at most `control_rate_hz` commands per second on average (jitter of a tenth of a period allowed).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .safety import SafetyFilter, SafetyLimits

IDLE, WAITING_POLICY, RUNNING, STALE, ESTOP, FAULT = range(6)  # the values of ControllerStatus.state
STATE_NAMES = ("IDLE", "WAITING_POLICY", "RUNNING", "STALE", "ESTOP", "FAULT")
S = 1_000_000_000


@dataclass
class ControlConfig:
    control_rate_hz: float = 50.0
    max_image_age_s: float = 0.2
    require_proprio: bool = True
    heartbeat_timeout_s: float = 0.0  # 0: no heartbeat needed
    estop_timeout_s: float = 0.0  # > 0: the e-stop state must be heard this often (a periodic panel)
    stall_periods: float = 5.0  # a loop gap longer than this many periods: hold until inputs are heard afresh
    start_latched: bool = False  # start in ESTOP; only reset_estop releases it
    trust_arrival_time: bool = False  # frames stamped 0 take their arrival time (else they are refused)
    switch_grace_s: float = 0.3
    generator_timeout_s: float = 5.0
    generator_retry_s: float = 0.5
    send_first_frame: bool = True
    first_frame_required: bool = True  # never ask for a policy without the episode's first frame
    first_frame_wait_s: float = 2.0  # when not required: how long to wait for it before asking without
    limits: SafetyLimits = field(default_factory=SafetyLimits)

    @property
    def period_ns(self) -> int:
        return int(S / self.control_rate_hz)


@dataclass
class Frame:
    image: object  # whatever the policy's step takes: one RGB array
    stamp_ns: int
    received_ns: int
    seq: int


@dataclass
class Request:
    """A generation request the node must send now: instruction plus the first frame (or None)."""
    seq: int
    instruction: str
    first_image: object | None


@dataclass
class Command:
    action: np.ndarray  # 7-D: xyz (m), rpy (rad), gripper 0/1
    chunk: np.ndarray | None  # (horizon, 7) the policy predicted; None for a stop
    policy_id: str
    stamp_ns: int  # the frame's stamp (a stop: the time it was decided)
    stop: bool = False


class Controller:
    def __init__(self, cfg: ControlConfig, clock, cameras=None):
        self.cfg, self.clock = cfg, clock
        self.cameras = cameras  # a cameras.CameraSet when the views come on separate topics (on_camera)
        self.safety = SafetyFilter(cfg.limits)
        self.instruction, self.instruction_seq, self.instruction_ns = "", 0, 0
        self.policy, self.policy_seq = None, 0  # the active policy and the instruction it answers
        self.superseded_ns: int | None = None  # when the active policy was first superseded
        self.pending: tuple[int, int] | None = None  # (seq, sent_ns): at most one request in flight
        self.next_try_ns = 0
        self.service_ready = True  # as the node last saw it
        self.fault = ""
        self.frame: Frame | None = None
        self.frame_seq = 0
        self.used_seq, self.used_stamp = 0, None  # the last frame acted on
        self.proprio: tuple[np.ndarray, int] | None = None
        self.estop_sources: dict[object, tuple[bool, int]] = {}  # source -> (last value, sent_ns)
        self.estop_latched = cfg.start_latched
        self.estop_heard_ns: int | None = None
        self.heartbeat_ns: int | None = None
        self.last_seen_ns: int | None = None  # the last time the loop ran (any call with the clock)
        self.resume_ns: int | None = None  # after a stall: inputs must be heard after this
        self.stall_s = 0.0
        self.moving = False  # a motion command went out since the last stop
        self.acting_policy = None  # the policy of the last command (a swap resets its ensembler)
        self.last_gripper = 0.0
        self.tokens = 1.0  # command budget: refills at control_rate_hz, capacity 1
        self.token_ns: int | None = None

    # ------------------------------------------------------------------ clock

    def _now(self) -> int:
        now = self.clock()
        last = self.last_seen_ns
        if last is not None and (now < last or now - last > self.cfg.stall_periods * self.cfg.period_ns):
            # A stalled loop (GC pause, swapped out, SIGSTOP) or a clock that jumped back: what was queued
            # meanwhile may be old, so hold until every safety input has been heard after now.
            self.resume_ns, self.stall_s = now, (now - last) / S
            if now < last:  # the clock restarted (simulation reset): order and freshness restart with it
                self.frame, self.used_stamp, self.token_ns = None, None, None
                if self.cameras is not None:
                    self.cameras.clear()
                self.proprio = self.heartbeat_ns = self.estop_heard_ns = None
        self.last_seen_ns = now
        return now

    # ------------------------------------------------------------------ inputs

    def on_frame(self, image, stamp_ns: int) -> None:
        """Raises ValueError for a frame that must not be used (the node reports it)."""
        now = self._now()
        if stamp_ns == 0:
            if not self.cfg.trust_arrival_time:
                raise ValueError("frame has no stamp (0): refused; set trust_arrival_time to use arrival time")
            stamp_ns = now
        if self.frame is not None and stamp_ns <= self.frame.stamp_ns:
            raise ValueError(f"frame stamp goes backwards or repeats ({(self.frame.stamp_ns - stamp_ns) / 1e6:.1f} ms "
                             "before the newest frame): refused")
        self.frame_seq += 1
        self.frame = Frame(image, stamp_ns, now, self.frame_seq)

    def on_camera(self, name: str, image, stamp_ns: int) -> bool:
        """One camera's frame (views on separate topics): it becomes the frame when it completes a set.
        Returns True when it did. Raises ValueError for a frame that must not be used."""
        if stamp_ns == 0 and self.cfg.trust_arrival_time:
            stamp_ns = self._now()
        complete = self.cameras.add(name, image, stamp_ns, self._now())
        if complete is not None:
            self.on_frame(*complete)
        return complete is not None

    def on_proprio(self, values: np.ndarray) -> None:
        self.proprio = (values, self._now())

    def on_heartbeat(self, sent_ns: int | None = None) -> None:
        now = self._now()
        self.heartbeat_ns = now if sent_ns is None else min(sent_ns, now)

    def on_estop(self, source, asserted: bool, sent_ns: int | None = None) -> bool:
        """One e-stop sample from `source` (a publisher id). Returns True when this latched the e-stop."""
        now = self._now()
        sent = now if sent_ns is None else min(sent_ns, now)
        self.estop_sources[source] = (bool(asserted), sent)
        self.estop_heard_ns = max(self.estop_heard_ns or sent, sent)
        if asserted and not self.estop_latched:
            self.estop_latched = True
            return True
        return False

    def asserting_sources(self, alive=None) -> list:
        """Sources whose last word was true (among `alive`, the publishers the graph still knows, if given)."""
        return [s for s, (v, _) in self.estop_sources.items() if v and (alive is None or s in alive)]

    def reset_estop(self, alive=None) -> tuple[bool, str]:
        held = self.asserting_sources(alive)
        if held:
            return False, f"e-stop still asserted by {len(held)} publisher(s); release them first"
        if alive is not None:  # sources gone from the graph are forgotten
            self.estop_sources = {s: v for s, v in self.estop_sources.items() if s in alive}
        self.estop_latched = False
        return True, "e-stop reset"

    def on_instruction(self, text: str) -> None:
        now = self._now()
        if self.policy is not None and self.superseded_ns is None:
            self.superseded_ns = now  # the grace window starts at the first superseding instruction
        self.instruction, self.instruction_ns = text, now
        self.instruction_seq += 1
        self.fault, self.next_try_ns = "", 0

    # ------------------------------------------------------------------ generator

    def request(self, service_ready: bool) -> Request | None:
        """The request to send now, if any (newest instruction only; one in flight at a time)."""
        now = self._now()
        self.service_ready = service_ready
        if self.pending is not None:
            if now - self.pending[1] <= self.cfg.generator_timeout_s * S:
                return None
            self.pending = None
            self._drop_policy(f"generator timed out after {self.cfg.generator_timeout_s} s")
        if not self.instruction or self.policy_seq == self.instruction_seq or now < self.next_try_ns:
            return None
        if not service_ready:
            self.next_try_ns = now + int(self.cfg.generator_retry_s * S)
            return None
        first = self.frame if self.frame is not None and self.frame.received_ns >= self.instruction_ns else None
        if self.cfg.send_first_frame and first is None:
            if self.cfg.first_frame_required or now - self.instruction_ns < self.cfg.first_frame_wait_s * S:
                return None  # the episode's first frame is still on its way
        self.pending = (self.instruction_seq, now)
        image = first.image if self.cfg.send_first_frame and first is not None else None
        return Request(self.instruction_seq, self.instruction, image)

    def waiting_for_first_frame(self) -> bool:
        return (self.cfg.send_first_frame and self.pending is None and bool(self.instruction)
                and self.policy_seq != self.instruction_seq and not self.fault
                and (self.frame is None or self.frame.received_ns < self.instruction_ns))

    def on_policy(self, seq: int, policy=None, error: str = "") -> bool:
        """The answer to request `seq`: a bound policy, or why there is none. False if it was superseded."""
        self._now()
        if self.pending is None or self.pending[0] != seq:
            return False
        self.pending = None
        if seq != self.instruction_seq:
            return False  # a newer instruction came meanwhile: request() asks for it next
        if policy is None:
            self._drop_policy(error)
            return True
        self.policy, self.policy_seq, self.superseded_ns, self.fault = policy, seq, None, ""
        return True

    def _drop_policy(self, reason: str) -> None:
        self.policy, self.superseded_ns, self.fault = None, None, reason
        self.next_try_ns = self._now() + int(self.cfg.generator_retry_s * S)

    # ------------------------------------------------------------------ state

    def state(self) -> tuple[int, str]:
        now = self._now()
        cfg = self.cfg
        if self.estop_latched:
            held = self.asserting_sources()
            return ESTOP, "e-stop latched" + (" (input asserted)" if held else "; call ~/reset_estop")
        if self.policy is None or self.policy_seq != self.instruction_seq:
            if self.fault:
                return FAULT, self.fault
            if not self.instruction:
                return IDLE, "no instruction"
            in_grace = (self.policy is not None and self.superseded_ns is not None
                        and now - self.superseded_ns < cfg.switch_grace_s * S)
            if not in_grace:
                if self.pending is None and not self.service_ready:
                    return WAITING_POLICY, "generator service unavailable"
                if self.waiting_for_first_frame():
                    return WAITING_POLICY, "waiting for the first camera frame"
                return WAITING_POLICY, "waiting for generated policy"
        hb = cfg.heartbeat_timeout_s
        if hb > 0 and (self.heartbeat_ns is None or now - self.heartbeat_ns > hb * S):
            return STALE, "heartbeat missing"
        if cfg.estop_timeout_s > 0 and (self.estop_heard_ns is None or now - self.estop_heard_ns > cfg.estop_timeout_s * S):
            return STALE, "e-stop state not heard"
        if self.resume_ns is not None:
            missing = self._unheard_since(self.resume_ns)
            if missing:
                return STALE, f"holding after a {self.stall_s:.2f} s loop stall until heard afresh: {', '.join(missing)}"
            self.resume_ns = None
        limit = cfg.max_image_age_s * S
        if self.frame is None or now - self.frame.stamp_ns > limit:
            detail = self.cameras.reason(now, limit) if self.cameras is not None else ""
            if self.frame is None:
                return STALE, detail or "no camera frame"
            return STALE, detail or f"camera frame {(now - self.frame.stamp_ns) / 1e6:.0f} ms old"
        age = now - self.frame.stamp_ns
        if -age > limit:  # stamped ahead of our clock: the clocks disagree, trust neither
            return STALE, f"camera frame stamped {-age / 1e6:.0f} ms in the future (clock mismatch)"
        if cfg.require_proprio and (self.proprio is None or now - self.proprio[1] > limit):
            return STALE, "proprio missing or stale"
        return RUNNING, ""

    def _unheard_since(self, t: int) -> list[str]:
        missing = []
        if self.frame is None or self.frame.stamp_ns <= t:
            missing.append("camera")
        if self.cfg.require_proprio and (self.proprio is None or self.proprio[1] <= t):
            missing.append("proprio")
        if self.cfg.heartbeat_timeout_s > 0 and (self.heartbeat_ns is None or self.heartbeat_ns <= t):
            missing.append("heartbeat")
        if self.cfg.estop_timeout_s > 0 and (self.estop_heard_ns is None or self.estop_heard_ns <= t):
            missing.append("e-stop state")
        return missing

    def set_limits(self, limits: SafetyLimits, max_image_age_s: float | None = None) -> None:
        """Change limits at run time; the next command obeys the old and the new ones."""
        self.safety.set_limits(limits)
        self.cfg.limits = limits
        if max_image_age_s is not None:
            self.cfg.max_image_age_s = max_image_age_s

    # ------------------------------------------------------------------ acting

    def step(self, proprio_for_policy: bool = True) -> tuple[int, str, Command | None]:
        """Decide now: (state, reason, command to publish or None). A command is either a motion command
        from the newest unused frame, or, once when the controller starts holding, a stop."""
        state, reason = self.state()
        now = self.last_seen_ns
        if state != RUNNING:
            return state, reason, self._stop(now)
        frame = self.frame
        if frame.seq == self.used_seq or (self.used_stamp is not None and frame.stamp_ns <= self.used_stamp):
            return state, reason, None  # act once per new frame; never on older data than already used
        if not self._take_token(now):
            return state, reason, None  # faster than control_rate_hz: the next call takes this frame
        self.used_seq, self.used_stamp = frame.seq, frame.stamp_ns
        policy = self.policy
        if policy is not self.acting_policy or not self.moving:
            policy.reset()  # a new policy, or after a stop: no chunks from before
            self.acting_policy = policy
        proprio = self.proprio[0] if (self.proprio is not None and proprio_for_policy) else None
        try:
            raw, chunk = policy.step_with_chunk(frame.image, proprio)
            action = self.safety(raw)
        except Exception as exc:  # NaN, bad proprio: no motion from this frame, say why
            return FAULT, f"policy step failed: {exc}", self._stop(now)
        self._now()  # the process stalled while the policy ran (SIGSTOP, swapped out): its inputs are old now
        if self.resume_ns is not None and self.resume_ns > now:
            return STALE, f"held: the loop stalled {self.stall_s:.2f} s during the policy step", self._stop(now)
        if action is None:  # limits lowered below the last command: stop, then ramp up under the new ones
            return state, reason, self._stop(now)
        self.moving, self.last_gripper = True, float(action[6])
        return state, reason, Command(action, chunk, policy.policy_id, frame.stamp_ns)

    def _take_token(self, now: int) -> bool:
        if self.token_ns is not None:
            self.tokens = min(1.0, self.tokens + (now - self.token_ns) / self.cfg.period_ns)
        self.token_ns = now
        if self.tokens < 0.9:  # a tenth of a period of jitter allowed; the average rate stays exact
            return False
        self.tokens -= 1.0
        return True

    def _stop(self, now: int) -> Command | None:
        if not self.moving:
            return None
        self.moving = False
        self.safety.reset()  # the arm is told to stop: the next command ramps up from rest
        action = np.zeros(7, np.float32)
        action[6] = self.last_gripper  # a stop holds the grip: never drop what the arm carries
        return Command(action, None, getattr(self.acting_policy, "policy_id", ""), now, stop=True)
