"""Two machines for real: the generator in one Linux network namespace, the controller and the sim bridge in another,
joined by a veth pair; discovery and every message between them cross a real UDP link (counted on the link)."""
import json
import os
import subprocess
import sys

import pytest
from hypervla_core.runtime import Generator
from hypervla_ros.bringup import Stack
from ros_helpers import ROOT, write_config
from two_hosts import SIDES, HostPair, available

pytestmark = pytest.mark.skipif(bool(available()), reason=available() or "-")

SHIPPED = ROOT / "models" / "hypervla-mt10"


def test_generator_on_another_host_serves_the_robot_over_udp(tmp_path):
    config = write_config(tmp_path, SHIPPED)
    policy_bytes = sum(t.nbytes for t in Generator.load(SHIPPED).generate("open the drawer").tensors.values())
    with HostPair() as hosts:
        gen = Stack(config, log_dir=str(tmp_path / "gen"), env=hosts.env("gen"), prefix=hosts.prefix("gen"))
        robot = Stack(config, log_dir=str(tmp_path / "robot"), env=hosts.env("robot"), prefix=hosts.prefix("robot"))
        with gen, robot:
            gen.start("generator")
            robot.start("controller", "sim")
            before = {side: hosts.sent_bytes(side) for side in SIDES}
            # The operator is on the generator's side: instruction, status, actions and events cross the link too.
            out = subprocess.run([*hosts.prefix("gen"), sys.executable, str(ROOT / "test" / "link_probe.py"),
                                  "episode", "open the drawer", "--timeout", "240"],
                                 env={**os.environ, **hosts.env("gen")}, capture_output=True, text=True, timeout=300)
            sent = {side: hosts.sent_bytes(side) - before[side] for side in SIDES}
            logs = {p.name: p.read_text(errors="replace")[-1500:] for p in tmp_path.glob("*/*.log")}
            assert out.returncode == 0, (out.stderr[-3000:], logs)
            result = json.loads(out.stdout.splitlines()[-1])
            assert any(e["event"] == "success" for e in result["events"]), (result, logs)
            assert result["policy_id"] and result["instruction"] == "open the drawer" and result["actions"] > 0
            assert gen.alive("generator") and robot.alive("controller") and robot.alive("sim")
    # The generated policy went over the wire (not through shared memory), and the robot's side answered over it.
    assert sent["gen"] >= policy_bytes, (sent, policy_bytes)
    assert sent["robot"] > 10_000, sent
