"""Fault injection, part 4: a periodic e-stop panel, a stalled controller, a restart that must stay latched,
and shutdown under repeated Ctrl-C (own module: its stack must not share the topics with another stack)."""
import os
import signal
import subprocess
import sys
import threading
import time

from fault_helpers import UP, running, state_is, still
from hypervla_ros.bringup import Stack
from ros_helpers import Probe, Spinner, wait_until, write_config
from std_msgs.msg import Bool
from test_faults_timing import motion

from hypervla_msgs.msg import ControllerStatus as S


class Panel:
    """An operator's e-stop panel: publishes its state at 20 Hz (estop_timeout_s makes silence hold the arm)."""

    def __init__(self, node):
        self.pub = node.create_publisher(Bool, "/hypervla/estop", node.estop.qos_profile)
        self.asserted, self.alive = False, True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.alive:
            self.pub.publish(Bool(data=self.asserted))
            time.sleep(0.05)

    def close(self, node):
        self.alive = False
        self.thread.join(2)
        node.destroy_publisher(self.pub)


def test_stall_with_estop_restart_latched_and_clean_shutdown(ros, tmp_path, tiny_checkpoints):
    config = write_config(tmp_path, tiny_checkpoints["hypervla"], policy_controller={
        "generator_retry_s": 0.2, "estop_timeout_s": 0.5, "start_latched": True})
    with Stack(config, log_dir=str(tmp_path / "logs")) as stack:
        stack.start("generator", "controller")
        probe = Probe("panel_probe")
        spinner = Spinner(probe)
        panel = Panel(probe)
        try:
            probe.camera_on()
            probe.say("open the drawer")
            # Started latched: nothing moves until the operator resets, however healthy everything else is.
            assert wait_until(lambda: state_is(probe, S.ESTOP), UP), probe.latest_status()
            assert wait_until(lambda: probe.latest_status().policy_id != "", UP)
            assert still(probe, 1.0)
            assert probe.call_reset().success
            assert wait_until(lambda: running(probe), 10)
            # The controller stalls for 3 s; the operator presses the e-stop during the stall.
            os.kill(stack.pid("controller"), signal.SIGSTOP)
            time.sleep(0.5)
            panel.asserted = True
            time.sleep(2.5)
            t_cont = time.time_ns()  # wall clock, as DDS source timestamps
            os.kill(stack.pid("controller"), signal.SIGCONT)
            assert wait_until(lambda: state_is(probe, S.ESTOP), 10)
            time.sleep(1.0)
            # Counted by when the controller wrote them: one written just before SIGSTOP may arrive after it.
            moved = [a for a in probe.actions_written_since(t_cont) if motion(a)]
            assert moved == [], f"{len(moved)} commands after the stall, before the e-stop"  # before: 27-76
            # The panel leaves while asserting; the controller restarts: it must not move on its own.
            panel.close(probe)
            stack.kill("controller")
            stack.start("controller")
            assert wait_until(lambda: state_is(probe, S.ESTOP, "reset"), UP), probe.latest_status()
            assert still(probe, 1.0)
            panel = Panel(probe)  # a new panel, released: the operator resets
            assert wait_until(lambda: probe.call_reset().success, 10)
            assert wait_until(lambda: running(probe), UP)
            # Ctrl-C twice (a second one during shutdown): clean exit, no traceback.
            proc = stack.procs.pop("controller")
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(20) == 0
        finally:
            panel.close(probe)
            spinner.close()
    log = (tmp_path / "logs" / "policy_controller.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log


def test_second_sigint_during_shutdown_exits_cleanly(tmp_path, tiny_checkpoints):
    """Ctrl-C twice on a node in its shutdown path: exit 0, nothing printed from destroy_node."""
    config = write_config(tmp_path, tiny_checkpoints["hypervla"])
    env = {**os.environ, "HYPERVLA_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "hypervla_ros.policy_generator", "--ros-args", "--params-file",
                             str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()
    assert wait_until(lambda: any("loaded" in line for line in out), UP), out
    for _ in range(5):  # a burst of signals: the first starts the shutdown, the rest land inside it
        proc.send_signal(signal.SIGINT)
        time.sleep(0.002)
    assert proc.wait(20) == 0
    time.sleep(0.2)
    assert not any("Traceback" in line for line in out), "".join(out)
