"""The real upstream `ros2 launch` (../shared/ros2-launch, installed by .ci/run) on a normal, non-symlink colcon
install laid out like a user's workspace (ws/src/hypervla), launched from an unrelated folder: one simulated
episode to success, a namespaced run, SIGINT stopping everything, a failed launch leaving no orphan."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from hypervla_ros.node_config import LATCHED
from ros_helpers import ROOT, wait_until
from std_msgs.msg import String

from hypervla_msgs.msg import ControllerStatus

pytestmark = pytest.mark.skipif(shutil.which("ros2") is None,
                                reason="the ros2 CLI is not installed (.ci/run installs ../shared/ros2-launch)")

SUITE = ("policy_generator", "policy_controller", "sim_bridge")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(ROOT, ws / "src" / "hypervla", ignore=shutil.ignore_patterns(
        ".venv", "build", "install", "log", "runs", "data", ".git", "keys", "__pycache__", ".hypothesis"))
    env = _env(ws, build=True)
    out = subprocess.run(["colcon", "build", "--base-paths", "src", "src/hypervla/src",
                          "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={ROOT / '.venv/bin/python'}"],
                         cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (ws / "install/hypervla/share/hypervla/models/hypervla-mt10/model.safetensors").is_file()
    from hypervla_core.signing import keygen

    keygen(ws / "keys" / "signing")  # the user's own key pair, outside the install (never packaged)
    return ws


def _env(ws, build=False):
    """The environment of a shell that did `source scripts/env.sh --no-install` and the workspace's setup.bash."""
    script = f"source {ROOT}/scripts/env.sh --no-install" + ("" if build else f" && source {ws}/install/setup.bash")
    out = subprocess.run(["bash", "-c", f"{script} && env -0"], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "PYTHONPATH")})
    return dict(line.split("=", 1) for line in out.stdout.split("\0") if "=" in line)


def _launch(ws, *args, cwd):
    keys = ws / "keys"
    cmd = ["ros2", "launch", "hypervla", "sim.launch.py", "use_aggregator:=false",
           f"signing_key_file:={keys / 'signing'}", f"trusted_keys_file:={keys / 'signing.pub'}", *args]
    log = open(cwd / "launch.log", "wb")
    # Its own process group (as a terminal would give it), so SIGINT goes to launch alone.
    return subprocess.Popen(cmd, cwd=cwd, env=_env(ws), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _suite_processes(ws):
    out = subprocess.run(["pgrep", "-af", str(ws)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if any(n in line for n in SUITE)]


def _stop(proc, ws):
    proc.send_signal(signal.SIGINT)
    # Stops, and leaves nothing behind. The bound only tells a hang from a slow stop: ros2 launch itself escalates
    # to SIGTERM and SIGKILL after 5 s each, and on a busy 2-core machine every step of that is slower.
    rc = proc.wait(60)
    assert wait_until(lambda: not _suite_processes(ws), 30), _suite_processes(ws)
    return rc


def _episode(probe_ns: str, instruction: str, timeout: float) -> dict:
    """Say the instruction under probe_ns and wait for the sim bridge's success event."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("launch_probe", namespace=probe_ns)
    events, statuses = [], []
    node.create_subscription(String, "sim_bridge/events", lambda m: events.append(json.loads(m.data)), LATCHED)
    node.create_subscription(ControllerStatus, "hypervla/status", statuses.append, 10)
    pub = node.create_publisher(String, "hypervla/instruction", LATCHED)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end and (pub.get_subscription_count() < 2 or not statuses):
            ex.spin_once(timeout_sec=0.1)  # controller and sim bridge both listen
        pub.publish(String(data=instruction))
        while time.monotonic() < end and not any(e["event"] in ("success", "timeout") for e in events):
            ex.spin_once(timeout_sec=0.1)
        return {"events": events, "status": statuses[-1] if statuses else None}
    finally:
        ex.remove_node(node)
        node.destroy_node()
        assert rclpy.ok()


def test_ros2_launch_runs_an_episode_from_any_folder_and_stops_on_sigint(ros, workspace, tmp_path):
    proc = _launch(workspace, cwd=tmp_path)  # tmp_path: an unrelated folder, no models/ or config/ in it
    try:
        result = _episode("/", "open the drawer", 240)
        log = (tmp_path / "launch.log").read_text(errors="replace")
        assert any(e["event"] == "success" for e in result["events"]), (result, log[-3000:])
        assert "share/hypervla/models/hypervla-mt10" in log or result["status"].policy_id
        _param_set_changes_what_is_enforced(workspace)
    finally:
        rc = _stop(proc, workspace)
    log = (tmp_path / "launch.log").read_text(errors="replace")
    assert rc == 0 and "Traceback" not in log, log[-3000:]


def _ros2(ws, *args, timeout=60.0):
    """A ros2 CLI call; its daemon may not have discovered the node yet (more so on a busy machine): retry."""
    end = time.monotonic() + timeout
    while True:
        out = subprocess.run(["ros2", *args], env=_env(ws), capture_output=True, text=True, timeout=60)
        text = out.stdout + out.stderr
        if "node not found" not in text.lower() or time.monotonic() > end:
            return text
        time.sleep(1.0)


def _param_set_changes_what_is_enforced(ws):
    """`ros2 param set` on a safety limit takes effect; a start-up-only parameter is refused with a reason."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from hypervla_msgs.msg import EndEffectorAction

    assert "read-only" in _ros2(ws, "param", "set", "/policy_controller", "control_rate_hz", "10.0").lower()
    assert "out of range" in _ros2(ws, "param", "set", "/policy_controller", "max_translation", "5.0").lower()
    assert "successful" in _ros2(ws, "param", "set", "/policy_controller", "max_translation", "0.002").lower()
    assert "0.002" in _ros2(ws, "param", "get", "/policy_controller", "max_translation")
    node = Node("limit_probe")
    acts = []
    node.create_subscription(EndEffectorAction, "/hypervla/action", acts.append, 100)
    pub = node.create_publisher(String, "/hypervla/instruction", LATCHED)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        pub.publish(String(data="close the drawer"))  # a fresh episode, moving under the lowered limit
        end = time.monotonic() + 30
        while time.monotonic() < end and len(acts) < 40:
            ex.spin_once(timeout_sec=0.1)
    finally:
        ex.remove_node(node)
        node.destroy_node()
    assert len(acts) >= 40 and rclpy.ok()
    assert max(max(abs(a.translation.x), abs(a.translation.y), abs(a.translation.z)) for a in acts) <= 0.002 + 1e-6


def test_namespace_puts_every_name_under_it(ros, workspace, tmp_path):
    proc = _launch(workspace, "namespace:=arm1", cwd=tmp_path)
    try:
        result = _episode("/arm1", "open the drawer", 240)
        assert any(e["event"] == "success" for e in result["events"]), result
        names = subprocess.run(["ros2", "node", "list", "--spin-time", "3"], env=_env(workspace), capture_output=True,
                               text=True, timeout=60).stdout.split()
        assert {f"/arm1/{n}" for n in SUITE} <= set(names), names
        services = subprocess.run(["ros2", "service", "list", "--spin-time", "3"], env=_env(workspace),
                                  capture_output=True, text=True, timeout=60).stdout.split()
        assert "/arm1/hypervla/generate_policy" in services and "/arm1/policy_controller/reset_estop" in services
    finally:
        assert _stop(proc, workspace) == 0


def test_a_failed_launch_leaves_no_orphan(workspace, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy_controller: {ros__parameters: {checkpoint: /nonexistent}}\n")
    proc = _launch(workspace, f"params_file:={bad}", cwd=tmp_path)
    try:
        proc.wait(120)  # a node that cannot start shuts the whole launch down
    except subprocess.TimeoutExpired:
        _stop(proc, workspace)
        pytest.fail("launch kept running after its nodes failed")
    assert wait_until(lambda: not _suite_processes(workspace), 20), _suite_processes(workspace)
    log = (tmp_path / "launch.log").read_text(errors="replace")
    assert "cannot start" in log, log[-3000:]


def test_a_fleet_of_three_arms_shares_one_generator_and_stops_one_arm_alone(ros, workspace, tmp_path):
    """arms:=arm1,arm2,arm3: three controllers and sim bridges in their namespaces, one generator. Each arm is told
    a different task at the same moment and runs its own policy; arm2's e-stop stops arm2 only."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import Bool

    from hypervla_msgs.msg import EndEffectorAction

    tasks = {"arm1": "pick up the puck and place it at the goal", "arm2": "close the window", "arm3": "open the door"}
    proc = _launch(workspace, "arms:=" + ",".join(tasks), cwd=tmp_path)
    node = Node("fleet_probe")
    status, actions = {}, {arm: [] for arm in tasks}
    say, estop = {}, {}
    for arm in tasks:
        node.create_subscription(ControllerStatus, f"/{arm}/hypervla/status",
                                 lambda m, arm=arm: status.__setitem__(arm, m), 10)
        node.create_subscription(EndEffectorAction, f"/{arm}/hypervla/action",
                                 lambda m, arm=arm: actions[arm].append(time.monotonic()), 100)
        say[arm] = node.create_publisher(String, f"/{arm}/hypervla/instruction", LATCHED)
        estop[arm] = node.create_publisher(Bool, f"/{arm}/hypervla/estop", LATCHED)
    ex = SingleThreadedExecutor()
    ex.add_node(node)

    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            ex.spin_once(timeout_sec=0.1)
        return pred()

    try:
        log = lambda: (tmp_path / "launch.log").read_text(errors="replace")[-3000:]  # noqa: E731
        assert spin_until(lambda: len(status) == 3 and all(p.get_subscription_count() >= 2 for p in say.values()),
                          300), (status, log())
        for arm, text in tasks.items():  # the same moment
            say[arm].publish(String(data=text))
        running = lambda: all(status[a].state == ControllerStatus.RUNNING and status[a].instruction == t  # noqa: E731
                              for a, t in tasks.items())
        assert spin_until(running, 120), ({a: (s.state_name, s.reason, s.instruction) for a, s in status.items()},
                                          log())
        ids = {arm: status[arm].policy_id for arm in tasks}
        assert len(set(ids.values())) == 3 and all(ids.values()), ids

        seen = {arm: set() for arm in tasks}  # every state each arm reports from the e-stop on
        estop["arm2"].publish(Bool(data=True))
        assert spin_until(lambda: status["arm2"].state == ControllerStatus.ESTOP, 10), status["arm2"]
        t0 = time.monotonic()
        for _ in range(30):
            spin_until(lambda: False, 0.1)
            for arm in tasks:
                seen[arm].add(status[arm].state)
        assert seen["arm2"] == {ControllerStatus.ESTOP}
        assert sum(t > t0 + 0.3 for t in actions["arm2"]) == 0  # after commands in flight, none
        for arm in ("arm1", "arm3"):  # running, or holding at its episode's end: never latched by arm2's e-stop
            assert ControllerStatus.ESTOP not in seen[arm], (arm, seen[arm], status[arm].reason)
            assert status[arm].policy_id == ids[arm]
    finally:
        ex.remove_node(node)
        node.destroy_node()
        assert rclpy.ok()
        assert _stop(proc, workspace) == 0
