"""The controller's decisions (hypervla_core.control), without ROS and with a clock the test drives: each
timing fault of the safety issue as a deterministic test, then random interleavings checked by hypothesis."""
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from hypervla_core.control import ESTOP, FAULT, IDLE, RUNNING, STALE, WAITING_POLICY, ControlConfig, Controller
from hypervla_core.safety import SafetyLimits

MS = 1_000_000
LIMITS = SafetyLimits(max_translation=0.012, max_rotation=0.1, max_step_change=0.012)


class Clock:
    def __init__(self, t=1_000_000 * MS):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, ms):
        self.t += int(ms * MS)


class ScriptedPolicy:
    """Stands in for the model: large random actions, so the clamps and rate limits always have work."""

    def __init__(self, name, seed=0):
        self.policy_id, self.instruction = name, name
        self.rng = np.random.default_rng(seed)
        self.resets = 0

    def reset(self):
        self.resets += 1

    def step_with_chunk(self, image, proprio):
        chunk = self.rng.uniform(-1, 1, (4, 7)).astype(np.float32)
        return chunk[0].copy(), chunk


def make(**kw):
    clock = Clock()
    cfg = ControlConfig(limits=LIMITS, require_proprio=False, **kw)
    return Controller(cfg, clock), clock


def run_policy(c, clock, name="A", seed=0, instruction=None):
    """Instruction -> request -> answer, with a fresh frame: the controller is RUNNING on `name`."""
    c.on_instruction(instruction or name)
    c.on_frame("img", clock())
    req = c.request(True)
    assert req is not None and req.first_image == "img"
    policy = ScriptedPolicy(name, seed)
    assert c.on_policy(req.seq, policy)
    return policy


def frame_and_step(c, clock, ms=20):
    clock.advance(ms)
    c.on_frame("img", clock())
    return c.step()


def test_superseded_policy_runs_at_most_grace_after_the_first_superseding_instruction():
    c, clock = make(switch_grace_s=0.3)
    run_policy(c, clock, "A")
    assert frame_and_step(c, clock)[0] == RUNNING
    t_first = clock()
    clock.advance(1)
    last_a = None
    for k in range(100):  # a new instruction every 20 ms for 2 s; the generator never answers
        c.on_instruction(f"task {k}")
        c.request(True)  # at most one request in flight: only the first is sent
        state, _, cmd = frame_and_step(c, clock)
        if cmd is not None and not cmd.stop:
            assert cmd.policy_id == "A"
            last_a = clock()
    assert last_a is not None and last_a - t_first < 0.3e9 + 21 * MS
    assert c.state()[0] == WAITING_POLICY
    # After the flood: the pending (first) request is answered late and is superseded; the newest is asked next.
    seq_in_flight = c.pending[0]
    assert not c.on_policy(seq_in_flight, ScriptedPolicy("old"))
    req = c.request(True)
    assert req.instruction == "task 99" and c.request(True) is None
    assert c.on_policy(req.seq, ScriptedPolicy("newest"))
    _, _, cmd = frame_and_step(c, clock)
    assert cmd.policy_id == "newest"


def test_estop_is_tracked_per_publisher():
    c, clock = make()
    run_policy(c, clock)
    c.on_estop("panel", True)
    c.on_estop("other", False)
    state, _, cmd = c.step()
    assert state == ESTOP and cmd is not None and cmd.stop is False or cmd is None or cmd.stop
    ok, msg = c.reset_estop(alive={"panel", "other"})
    assert not ok and "1 publisher" in msg
    assert frame_and_step(c, clock)[0] == ESTOP
    ok, _ = c.reset_estop(alive={"other"})  # the asserting panel left the graph: the operator may reset
    assert ok and frame_and_step(c, clock)[0] == RUNNING


def test_estop_stop_command_goes_out_once_when_holding():
    c, clock = make()
    run_policy(c, clock)
    _, _, cmd = frame_and_step(c, clock)
    assert cmd is not None and not cmd.stop
    c.on_estop("panel", True)
    state, _, stop = c.step()
    assert state == ESTOP and stop.stop and (stop.action[:6] == 0).all() and stop.action[6] == cmd.action[6]
    assert frame_and_step(c, clock)[2] is None  # one stop, then silence


def test_stall_holds_until_every_safety_input_is_heard_afresh():
    c, clock = make(estop_timeout_s=0.5, heartbeat_timeout_s=0.5)
    run_policy(c, clock)
    c.on_estop("panel", False)
    c.on_heartbeat()
    assert frame_and_step(c, clock)[0] == RUNNING
    stall_start = clock()
    clock.advance(3000)  # the process was stopped for 3 s
    # Queued frames and panel samples from before/during the stall arrive first; nothing moves on them.
    c.on_frame("img", stall_start + 2500 * MS)
    c.on_estop("panel", False, sent_ns=stall_start + 2900 * MS)
    c.on_heartbeat(sent_ns=stall_start + 2900 * MS)
    state, reason, cmd = c.step()
    assert state == STALE and "stall" in reason and (cmd is None or cmd.stop)
    clock.advance(5)
    c.on_frame("img", clock())  # a fresh frame, but the e-stop and heartbeat are not heard afresh yet
    state, reason, cmd = c.step()
    assert state == STALE and "e-stop state" in reason and "heartbeat" in reason and cmd is None
    clock.advance(5)
    c.on_estop("panel", True, sent_ns=clock())  # the panel's true state, published after the stall
    assert c.step()[0] == ESTOP


class StallingPolicy(ScriptedPolicy):
    """The process is stopped while the policy runs (SIGSTOP, swapped out): the clock jumps inside the step."""

    def __init__(self, clock, ms):
        super().__init__("S")
        self.clock, self.ms = clock, ms

    def step_with_chunk(self, image, proprio):
        self.clock.advance(self.ms)
        return super().step_with_chunk(image, proprio)


def test_a_stall_during_the_policy_step_publishes_nothing_from_it():
    c, clock = make(stall_periods=5.0)
    c.on_instruction("S")
    c.on_frame("img", clock())
    req = c.request(True)
    assert c.on_policy(req.seq, StallingPolicy(clock, 2))  # 2 ms: a normal step
    state, _, cmd = frame_and_step(c, clock)
    assert state == RUNNING and cmd is not None and not cmd.stop
    c.policy.ms = 3000  # stopped for 3 s in the middle of the step
    state, reason, cmd = frame_and_step(c, clock)
    assert state == STALE and "during the policy step" in reason
    assert cmd is None or cmd.stop  # a stop at most, never the motion computed from before the stall
    c.policy.ms = 2
    state, reason, cmd = c.step()  # the frame it had is from before the stall: still held
    assert state == STALE and "stall" in reason and (cmd is None or cmd.stop)
    state, _, cmd = frame_and_step(c, clock)  # a frame captured after the stall: moves again
    assert state == RUNNING and cmd is not None and not cmd.stop


def test_stall_without_a_periodic_estop_waits_for_a_fresh_frame():
    c, clock = make()
    run_policy(c, clock)
    assert frame_and_step(c, clock)[0] == RUNNING
    clock.advance(3000)
    c.on_frame("img", clock() - 100 * MS)  # within max_image_age_s, but captured during the stall
    assert c.step()[0] == STALE
    assert frame_and_step(c, clock, 5)[0] == RUNNING


def test_start_latched_needs_a_reset():
    c, clock = make(start_latched=True)
    run_policy(c, clock)
    assert frame_and_step(c, clock)[0] == ESTOP
    assert c.reset_estop(alive=set())[0]
    assert frame_and_step(c, clock)[0] == RUNNING


def test_frames_without_stamp_or_out_of_order_are_refused():
    c, clock = make()
    run_policy(c, clock)
    with pytest.raises(ValueError, match="no stamp"):
        c.on_frame("img", 0)
    clock.advance(20)
    c.on_frame("img", clock())
    newest = clock()
    with pytest.raises(ValueError, match="backwards"):
        c.on_frame("img", newest - 5 * MS)
    _, _, cmd = c.step()
    assert cmd.stamp_ns == newest
    trusting, clock2 = make(trust_arrival_time=True)
    run_policy(trusting, clock2)
    clock2.advance(10)
    trusting.on_frame("img", 0)
    assert trusting.step()[2].stamp_ns == clock2()


def test_clock_going_back_restarts_frame_order():
    c, clock = make()
    run_policy(c, clock)
    assert frame_and_step(c, clock)[0] == RUNNING
    clock.advance(-60_000)  # simulated time restarted
    assert c.step()[0] == STALE
    state, _, cmd = frame_and_step(c, clock)
    assert state == STALE and "stall" in c.state()[1] or cmd is None or not cmd.stop
    assert frame_and_step(c, clock)[0] == RUNNING


def test_rate_limit_holds_across_a_switch_and_commands_are_paced_per_time():
    c, clock = make(switch_grace_s=0.0)
    run_policy(c, clock, "A")
    published = []
    for _ in range(10):
        cmd = frame_and_step(c, clock)[2]
        published.append(cmd)
    c.on_instruction("B")  # no grace: the controller holds at once and says stop
    _, _, stop = c.step()
    assert stop.stop
    req = c.request(True)
    c.on_policy(req.seq, ScriptedPolicy("B", 1))
    first_b = frame_and_step(c, clock)[2]
    assert np.abs(first_b.action[:6]).max() <= LIMITS.max_step_change + 1e-7  # ramps from rest after the stop
    # A 200 Hz camera: commands stay at the 50 Hz control rate, so motion per second stays bounded.
    times = []
    for _ in range(200):
        cmd = frame_and_step(c, clock, 5)[2]
        if cmd is not None:
            times.append(clock())
    assert len(times) <= 1.0 * 50 + 1.1
    assert min(np.diff(times)) >= 0.9 * 20 * MS


def test_a_hypernetwork_never_asks_without_the_first_frame():
    c, clock = make(first_frame_required=True)
    c.on_instruction("open the drawer")
    clock.advance(5000)
    assert c.request(True) is None
    assert c.state() == (WAITING_POLICY, "waiting for the first camera frame")
    c.on_frame("img", clock())
    assert c.request(True).first_image == "img"
    allowed, clock2 = make(first_frame_required=False, first_frame_wait_s=1.0)
    allowed.on_instruction("open the drawer")
    assert allowed.request(True) is None
    clock2.advance(1001)
    assert allowed.request(True).first_image is None


def test_generator_timeout_and_failed_policy_fault_then_retry():
    c, clock = make(generator_timeout_s=1.0, generator_retry_s=0.5)
    c.on_instruction("A")
    c.on_frame("img", clock())
    req = c.request(True)
    clock.advance(1001)
    assert c.request(True) is None and c.state() == (FAULT, "generator timed out after 1.0 s")
    clock.advance(500)
    req = c.request(True)
    c.on_policy(req.seq, None, "bad policy")
    assert c.state() == (FAULT, "bad policy")
    assert IDLE == make()[0].state()[0]


# ---------------------------------------------------------------- random interleavings


class ControllerMachine(RuleBasedStateMachine):
    """Frames, instructions, answers, e-stops, resets, heartbeats, clock jumps and stalls in any order;
    every command the controller emits is checked against a model the test keeps itself."""

    @initialize(grace=st.sampled_from([0.0, 0.1, 0.3]), periodic=st.booleans(), act_rate=st.sampled_from([50.0, 20.0]))
    def setup(self, grace, periodic, act_rate):
        self.clock = Clock()
        self.cfg = ControlConfig(limits=LIMITS, require_proprio=False, switch_grace_s=grace, control_rate_hz=act_rate,
                                 estop_timeout_s=0.5 if periodic else 0.0, generator_timeout_s=2.0)
        self.c = Controller(self.cfg, self.clock)
        self.epoch = 0  # bumps when the clock goes backwards
        self.frames = {}  # stamp -> epoch of frames the controller accepted
        self.accepted = {}  # policy id -> (time accepted, time first superseded or None)
        self.active = None
        self.n = 0
        self.last_cmd = None  # the last command published (stop or motion)
        self.last_used = None  # (epoch, stamp) of the last frame a motion command came from
        self.motion_times = []
        self.estop_since = None  # set when a true e-stop sample arrived; cleared on a granted reset
        self.stall_at = None  # clock time after the last stall/back-jump; motion needs newer data
        self.heard_after_stall = False
        self.asserting = set()

    @rule(ms=st.one_of(st.floats(0, 30), st.floats(30, 3000), st.just(-5000.0)))
    def advance(self, ms):
        before = self.clock()
        self.clock.advance(ms)
        if ms < 0:
            self.epoch += 1
        if ms < 0 or ms * MS > self.cfg.stall_periods * self.cfg.period_ns:
            self.stall_at = self.clock()
            self.heard_after_stall = False
        assert before is not None

    @rule(age_ms=st.one_of(st.floats(-50, 500), st.just(0.0)))
    def frame(self, age_ms):
        stamp = self.clock() - int(age_ms * MS)
        try:
            self.c.on_frame("img", stamp)
            self.frames[stamp] = self.epoch
        except ValueError:
            pass

    @rule()
    def instruction(self):
        self.n += 1
        now = self.clock()
        for pid, (acc, sup) in self.accepted.items():
            if sup is None:
                self.accepted[pid] = (acc, now)
        self.c.on_instruction(f"task {self.n}")

    @rule(ok=st.booleans())
    def answer(self, ok):
        req = self.c.request(True)
        seq = req.seq if req is not None else (self.c.pending[0] if self.c.pending else None)
        if seq is None:
            return
        pid = f"p{seq}"
        took = self.c.on_policy(seq, ScriptedPolicy(pid, seq) if ok else None, "" if ok else "refused")
        if took and ok:
            self.accepted[pid] = (self.clock(), None)
            for other, (acc, sup) in self.accepted.items():  # everything older is superseded now
                if other != pid and sup is None:
                    self.accepted[other] = (acc, self.clock())
            self.active = pid

    @rule(source=st.sampled_from(["a", "b"]), value=st.booleans())
    def estop(self, source, value):
        self.c.on_estop(source, value)
        (self.asserting.add if value else self.asserting.discard)(source)
        if value:
            self.estop_since = self.clock()
        if self.stall_at is not None:
            self.heard_after_stall = True

    @rule(alive=st.sets(st.sampled_from(["a", "b"])))
    def reset(self, alive):
        ok, _ = self.c.reset_estop(alive)
        assert ok == (not (self.asserting & alive)) or not ok
        if ok:
            assert not (self.asserting & alive)
            self.asserting &= alive
            self.estop_since = None

    @rule()
    def step(self):
        state, _, cmd = self.c.step()
        if cmd is None:
            return
        now = self.clock()
        zero = np.zeros(6, np.float32)
        if cmd.stop:
            assert (cmd.action[:6] == 0).all()
            self.last_cmd = cmd
            return
        assert state == RUNNING
        assert self.estop_since is None, "motion while an e-stop was latched"
        # From an accepted policy: the newest, or a superseded one within its grace.
        acc, sup = self.accepted[cmd.policy_id]
        assert sup is None or now - sup < self.cfg.switch_grace_s * 1e9
        # From an accepted frame, young enough, newer than the last one used.
        assert self.frames.get(cmd.stamp_ns) == self.epoch
        assert abs(now - cmd.stamp_ns) <= self.cfg.max_image_age_s * 1e9
        if self.last_used is not None and self.last_used[0] == self.epoch:
            assert cmd.stamp_ns > self.last_used[1]
        if self.stall_at is not None:
            assert cmd.stamp_ns > self.stall_at
            if self.cfg.estop_timeout_s > 0:
                assert self.heard_after_stall
        self.last_used = (self.epoch, cmd.stamp_ns)
        # Clamps, and no jump from the previous command unless a stop came between.
        bounds = LIMITS.bounds()
        assert (np.abs(cmd.action[:6]) <= bounds + 1e-7).all()
        prev = zero if self.last_cmd is None or self.last_cmd.stop else self.last_cmd.action[:6]
        assert (np.abs(cmd.action[:6] - prev) <= LIMITS.max_step_change + 1e-7).all()
        # Paced: at most control_rate_hz per second, never closer than 0.9 periods.
        if self.motion_times and self.motion_times[-1][0] == self.epoch:
            assert now - self.motion_times[-1][1] >= 0.9 * self.cfg.period_ns
        self.motion_times.append((self.epoch, now))
        self.last_cmd = cmd

    @invariant()
    def state_is_known(self):
        if hasattr(self, "c"):
            assert self.c.state()[0] in range(6)


ControllerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
test_controller_invariants_under_random_interleavings = ControllerMachine.TestCase


def test_limits_changed_at_run_time_obey_old_and_new_then_stop_if_they_cannot():
    c, clock = make()
    run_policy(c, clock)
    for _ in range(5):
        cmd = frame_and_step(c, clock)[2]
    raised = SafetyLimits(max_translation=0.05, max_rotation=0.5, max_step_change=0.05)
    c.set_limits(raised)  # raising: the next command still obeys the old limits
    nxt = frame_and_step(c, clock)[2]
    assert (np.abs(nxt.action[:6]) <= LIMITS.bounds() + 1e-7).all()
    assert (np.abs(nxt.action[:6] - cmd.action[:6]) <= LIMITS.max_step_change + 1e-7).all()
    for _ in range(5):
        cmd = frame_and_step(c, clock)[2]
    assert np.abs(cmd.action[:6]).max() > LIMITS.max_translation  # then the new ones apply
    tiny = SafetyLimits(max_translation=0.001, max_rotation=0.001, max_step_change=0.001)
    c.set_limits(tiny)  # far below the last command: no command satisfies both, so the arm is stopped
    stop = frame_and_step(c, clock)[2]
    assert stop.stop
    for _ in range(5):
        cmd = frame_and_step(c, clock)[2]
        assert not cmd.stop and (np.abs(cmd.action[:6]) <= tiny.bounds() + 1e-7).all()
