"""Several camera topics into one policy step (hypervla_core.cameras + the controller), and the servo input of
the arm bridge (hypervla_core.servo), without ROS: a test-driven clock makes skew, death and timeout exact."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hypervla_core.cameras import CameraSet
from hypervla_core.control import RUNNING, STALE, ControlConfig, Controller
from hypervla_core.servo import ServoInput, twist_to_action
from test_control import LIMITS, Clock, ScriptedPolicy

MS = 1_000_000


def img(value, size=8):
    return np.full((size, size, 3), value, np.uint8)


def test_a_set_is_one_frame_per_camera_within_the_skew_in_view_order():
    cams = CameraSet(["front", "wrist"], size=8, max_skew_s=0.02)
    t = 1000 * MS
    assert cams.add("wrist", img(200, 16), t, t) is None  # resized to the model's size on the way in
    views, stamp = cams.add("front", img(10), t + 5 * MS, t)
    assert views.shape == (8, 16, 3) and stamp == t  # the oldest stamp: the age check covers both
    assert (views[:, :8] == 10).all() and (views[:, 8:] == 200).all()  # view order, not arrival order
    assert cams.add("front", img(11), t + 10 * MS, t) is None  # the wrist frame is used already
    assert cams.add("wrist", img(201), t + 60 * MS, t) is None  # 50 ms apart: out of step
    assert "'front' and 'wrist' 50 ms apart" in cams.reason(t + 60 * MS, 200 * MS)
    with pytest.raises(ValueError, match="backwards"):
        cams.add("wrist", img(1), t + 60 * MS, t)
    with pytest.raises(ValueError, match="not one of"):
        cams.add("side", img(1), t + 70 * MS, t)


def multi_camera_controller(skew_s=0.02):
    clock = Clock()
    cams = CameraSet(["front", "wrist"], size=8, max_skew_s=skew_s)
    c = Controller(ControlConfig(limits=LIMITS, require_proprio=False), clock, cams)
    c.on_instruction("A")
    c.on_camera("front", img(1), clock())
    assert c.on_camera("wrist", img(2), clock())
    req = c.request(True)
    assert req is not None and req.first_image.shape == (8, 16, 3)
    assert c.on_policy(req.seq, ScriptedPolicy("A"))
    return c, clock


def test_a_dead_second_camera_holds_the_arm_and_is_named():
    c, clock = multi_camera_controller()
    moved = 0
    for _ in range(10):
        clock.advance(20)
        c.on_camera("front", img(1), clock())
        c.on_camera("wrist", img(2), clock())
        state, _, cmd = c.step()
        moved += cmd is not None and not cmd.stop
    assert state == RUNNING and moved == 10
    after = []
    for _ in range(20):  # the wrist camera dies; the front one goes on
        clock.advance(20)
        c.on_camera("front", img(1), clock())
        after.append(c.step())
    motion = [cmd for _, _, cmd in after if cmd is not None and not cmd.stop]
    assert len(motion) == 0  # no step from the front view alone
    state, reason, _ = after[-1]
    assert state == STALE and "'wrist'" in reason and "old" in reason


def test_skewed_cameras_hold_the_arm():
    c, clock = multi_camera_controller(skew_s=0.01)
    assert c.step()[0] == RUNNING  # the set the policy was asked with: in step
    states = []
    clock.advance(40)
    for _ in range(20):  # the wrist frames lag 30 ms behind the front ones
        clock.advance(20)
        c.on_camera("front", img(1), clock())
        c.on_camera("wrist", img(2), clock() - 30 * MS)
        states.append(c.step())
    assert all(cmd is None or cmd.stop for _, _, cmd in states)
    assert states[-1][0] == STALE and "apart" in states[-1][1]


def test_twist_for_one_period_is_the_same_delta_action():
    a = twist_to_action([0.2, -0.1, 0.05], [0.0, 0.0, 1.0], 0.05, "base", gripper=1.0)
    np.testing.assert_allclose(a, [0.01, -0.005, 0.0025, 0, 0, 0.05, 1.0], atol=1e-6)
    # In the end-effector frame: the hand turned 90 degrees about z, so its x is the base's y.
    q = Rotation.from_euler("z", 90, degrees=True).as_quat()
    a = twist_to_action([0.2, 0, 0], [0, 0, 0], 0.05, "ee", q)
    np.testing.assert_allclose(a[:3], [0, 0.01, 0], atol=1e-6)
    with pytest.raises(ValueError, match="unknown"):
        twist_to_action([0, 0, 0], [0, 0, 0], 0.05, "camera_link")
    with pytest.raises(ValueError, match="finite"):
        twist_to_action([np.nan, 0, 0], [0, 0, 0], 0.05, "base")


def test_servo_holds_after_the_command_timeout():
    s = ServoInput(timeout_s=0.1)
    s.on_delta([0.01, 0, 0, 0, 0, 0, 1.0], now_s=0.0)
    assert s.take(0.05) is not None and s.take(0.06) is None  # a delta moves the arm for one period
    s.on_twist([0.2, 0, 0], [0, 0, 0], 0.05, "base", now_s=1.0)
    taken = [s.take(1.0 + k * 0.04) for k in range(5)]  # a twist goes on until it is older than the timeout
    assert [t is not None for t in taken] == [True, True, True, False, False]
    assert taken[0][6] == 1.0  # the grip of the last action is kept by the twist
    np.testing.assert_array_equal(s.hold_action(), [0, 0, 0, 0, 0, 0, 1.0])
