"""Fault injection, part 1: input faults against one shared generator + controller (real processes, DDS)."""
import os
import signal
import time

import numpy as np
import pytest
from fault_helpers import UP, diag_value, running, state_is, still
from hypervla_ros.bringup import Stack
from hypervla_ros.image_conversion import rgb_to_image
from ros_helpers import Probe, Spinner, wait_until, write_config
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import Bool

from hypervla_msgs.msg import ControllerStatus as S


@pytest.fixture(scope="module")
def shared(ros, tmp_path_factory, tiny_checkpoints):
    """One generator + controller for the input faults (each test leaves it RUNNING or resets it)."""
    tmp = tmp_path_factory.mktemp("faults")
    config = write_config(tmp, tiny_checkpoints["hypervla"],
                          policy_controller={"generator_retry_s": 0.2, "generator_timeout_s": 2.0})
    with Stack(config, log_dir=str(tmp / "logs")) as stack:
        stack.start("generator", "controller")
        probe = Probe("fault_probe")
        spinner = Spinner(probe)
        probe.camera_on()
        probe.say("open the drawer")
        assert wait_until(lambda: running(probe), UP), probe.latest_status()
        yield stack, probe
        spinner.close()


def bad_frame_reported(probe, image, text, timeout=10):
    return wait_until(lambda: probe.publish_frame(image) or text in (diag_value(probe, "last_bad_input") or ""),
                      timeout, period=0.1)


@pytest.mark.parametrize("mutate,text", [
    (lambda m: setattr(m, "encoding", "bayer_rggb8"), "unsupported image encoding"),
    (lambda m: setattr(m, "data", m.data[: len(m.data) // 2]), "data holds"),
    (lambda m: (setattr(m, "height", 0), setattr(m, "width", 0), setattr(m, "data", b"")), "empty image"),
    (lambda m: (setattr(m, "height", 60000), setattr(m, "width", 60000)), "exceeds"),
    (lambda m: setattr(m, "step", 10), "smaller than width"),
], ids=["wrong-encoding", "truncated", "zero-size", "huge", "step-mismatch"])
def test_bad_camera_frames(shared, mutate, text):
    stack, probe = shared
    probe.camera_on(False)
    img = rgb_to_image(np.zeros((64, 64, 3), np.uint8))
    mutate(img)
    t0 = time.monotonic()
    assert bad_frame_reported(probe, img, text)
    assert all(a.header.stamp != img.header.stamp for a in probe.actions_since(t0))
    assert stack.alive("controller")
    probe.camera_on()
    assert wait_until(lambda: running(probe), 10)


def test_corrupt_compressed_image(shared):
    stack, probe = shared
    pub = probe.create_publisher(CompressedImage, "/camera/image_raw/compressed", 10)
    probe.camera_on(False)
    assert wait_until(lambda: pub.publish(CompressedImage(format="jpeg", data=b"\xff\xd8\xff\x00broken")) or
                      "header cannot be read" in (diag_value(probe, "last_bad_input") or ""), 10, period=0.1)
    assert stack.alive("controller")
    probe.camera_on()
    assert wait_until(lambda: running(probe), 10)


@pytest.mark.parametrize("text,reason", [("", "empty"), ("  \n\t  ", "empty"), ("x" * 100_000, "exceeds")],
                         ids=["empty", "whitespace", "100k-chars"])
def test_bad_instructions_are_rejected_and_the_task_goes_on(shared, text, reason):
    stack, probe = shared
    before = probe.latest_status().policy_id
    probe.say(text)
    assert wait_until(lambda: reason in (diag_value(probe, "last_bad_input") or ""), 10)
    assert running(probe) and probe.latest_status().policy_id == before  # a bad message changes nothing
    assert stack.alive("controller") and stack.alive("generator")
    probe.say("open the drawer")  # leave the shared stack on a known task
    assert wait_until(lambda: running(probe, before), 10)


def test_non_ascii_instruction_works(shared):
    _, probe = shared
    old = probe.latest_status().policy_id
    probe.say("öffne die Schublade – 引き出しを開けて")
    assert wait_until(lambda: running(probe, old), 10)
    assert probe.latest_status().instruction.startswith("öffne")


def test_camera_burst_at_twice_the_rate(shared):
    stack, probe = shared
    probe.camera_on(False)
    time.sleep(0.2)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 2.0:
        probe.publish_frame()
        n += 1
        time.sleep(1 / 60)
    time.sleep(0.2)
    stamps = [(a.header.stamp.sec, a.header.stamp.nanosec) for a in probe.actions_since(t0)]
    assert len(set(stamps)) == len(stamps)  # never two commands from the same frame
    assert 0.5 * n <= len(stamps) <= n  # keeps up with a 60 Hz camera, one action per frame at most
    assert stack.alive("controller")
    probe.camera_on()


def test_nan_proprio_is_rejected(shared):
    _, probe = shared
    probe.camera_on(False)
    js = JointState(position=[float("nan"), 0.0, 0.0, 0.0])
    assert wait_until(lambda: probe.proprio.publish(js) or "proprio" in (diag_value(probe, "last_bad_input") or ""),
                      10, period=0.1)
    probe.camera_on()
    assert wait_until(lambda: running(probe), 10)


def test_estop_during_task_switch(shared):
    _, probe = shared
    old = probe.latest_status().policy_id
    probe.say("close the window")
    probe.estop.publish(Bool(data=True))
    assert wait_until(lambda: state_is(probe, S.ESTOP), 5)
    time.sleep(0.5)  # the new policy arrives meanwhile
    assert state_is(probe, S.ESTOP) and still(probe)
    probe.estop.publish(Bool(data=False))
    assert probe.call_reset().success
    assert wait_until(lambda: running(probe, old) and probe.latest_status().instruction == "close the window", 10)


def test_generator_frozen_then_killed_mid_request_then_restarted(shared):
    """SIGSTOP: the generator hangs (slower than the timeout); SIGKILL mid-request; then a fresh one."""
    stack, probe = shared
    os.kill(stack.pid("generator"), signal.SIGSTOP)
    try:
        probe.say("reach the goal position")
        assert wait_until(lambda: state_is(probe, S.FAULT, "timed out"), 10), probe.latest_status()
        assert still(probe)
    finally:
        stack.kill("generator")  # killed while its request is still pending
    assert wait_until(lambda: probe.latest_status().state in (S.WAITING_POLICY, S.FAULT), 5)
    assert still(probe)
    stack.start("generator")
    assert wait_until(lambda: running(probe) and probe.latest_status().instruction == "reach the goal position", UP)
