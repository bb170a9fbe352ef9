"""`make demo`: the sim stack on the shipped checkpoint, several tasks, a table and runs/demo/summary.json.

Starts policy_generator, policy_controller and sim_bridge as separate processes (same YAML), then plays
operator: publishes an instruction per episode (the bridge loads the task and resets; the controller
asks for a policy with the episode's first frame), waits for the episode's end and records the timing.
DEMO_EPISODES=n overrides episodes per task; DEMO_TASKS=a,b picks tasks. DEMO_SUITE=libero_goal runs the LIBERO
Panda (libero_bridge, two cameras) on models/hypervla-libero-goal instead, with config/libero_demo.yaml's
parameters over the configuration's.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import threading
import time

import numpy as np
import rclpy
import yaml
from hypervla_core.sim import load_tasks, tasks_file
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

from hypervla_msgs.msg import ControllerStatus, EndEffectorAction

from .bringup import Stack
from .node_config import LATCHED, config_path, declare, init_index_request, node_defaults, resolve_path

SCHEMA = {
    "suite": ("mt10 (Meta-World, sim_bridge) or libero_goal (the Panda, libero_bridge); DEMO_SUITE overrides", None),
    "tasks": ("tasks to run", None),
    "episodes_per_task": ("episodes per task (DEMO_EPISODES overrides)", (1, 10000)),
    "episode_timeout_s": ("give up on an episode after this long", (1.0, 3600.0)),
    "output": ("folder for summary.json", None),
}


def pct(values, q):
    return round(float(np.percentile(values, q)), 3) if values else None


class DemoOperator(Node):
    def __init__(self, bridge: str):
        super().__init__("demo")
        self.p = declare(self, SCHEMA, node_defaults("demo"))
        self.bridge_params = self.create_client(SetParameters, f"/{bridge}/set_parameters")
        self.instruction_pub = self.create_publisher(String, "/hypervla/instruction", LATCHED)
        self.events: list[dict] = []
        self.status: ControllerStatus | None = None
        self.first_new_action: float | None = None
        self.reset_at: float | None = None
        self._old_policy = None
        self._lock = threading.Lock()
        self.create_subscription(String, f"/{bridge}/events", self.on_event, LATCHED)
        self.create_subscription(ControllerStatus, "/hypervla/status", self.on_status, 10)
        self.create_subscription(EndEffectorAction, "/hypervla/action", self.on_action, 10)

    def on_event(self, msg):
        event = json.loads(msg.data)
        with self._lock:
            self.events.append(event)
            if event["event"] == "reset":
                self.reset_at = time.monotonic()

    def on_status(self, msg):
        self.status = msg

    def on_action(self, msg):
        if self.first_new_action is None and self._old_policy is not None and msg.policy_id != self._old_policy:
            self.first_new_action = time.monotonic()

    def set_init(self, init: int, timeout: float = 10.0) -> None:
        """The LIBERO bridge's next initial state: episode k of every task from LIBERO's standard state k, the
        same episodes `hypervla eval` runs in process."""
        if not self.bridge_params.wait_for_service(timeout):
            raise RuntimeError("the LIBERO bridge's parameter service is not up: see log/demo/libero_bridge.log")
        future = self.bridge_params.call_async(init_index_request(init))
        if not wait(future.done, timeout) or not future.result().results[0].successful:
            raise RuntimeError(f"the LIBERO bridge did not take init_index {init}")

    def start_episode(self, instruction: str, old_policy: str) -> float:
        self.first_new_action, self._old_policy, self.reset_at = None, old_policy, None
        with self._lock:
            self.events.clear()
        t = time.monotonic()
        self.instruction_pub.publish(String(data=instruction))
        return t

    def episode_end(self) -> dict | None:
        with self._lock:
            return next((e for e in self.events if e["event"] in ("success", "timeout")), None)


def wait(pred, timeout, period=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(period)
    return False


def libero_config(base: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """The configuration with config/libero_demo.yaml's parameters over it, written to out/hypervla.yaml, its
    file paths made absolute where the configuration finds them (the copy lives elsewhere)."""
    merged = yaml.safe_load(base.read_text())
    overrides = yaml.safe_load(base.parent.joinpath("libero_demo.yaml").read_text())
    for node, section in overrides.items():
        merged.setdefault(node, {"ros__parameters": {}})["ros__parameters"].update(section["ros__parameters"])
    for section in merged.values():
        params = section.get("ros__parameters", {})
        for key in ("checkpoint", "signing_key_file", "trusted_keys_file"):
            if params.get(key):
                params[key] = resolve_path(params[key])
    out.mkdir(parents=True, exist_ok=True)
    path = out / "hypervla.yaml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


def run(config: str | None) -> dict:
    if config:
        os.environ["HYPERVLA_CONFIG"] = str(pathlib.Path(config).resolve())
    suite = os.environ.get("DEMO_SUITE") or node_defaults("demo").get("suite", "mt10")
    if suite not in ("mt10", "libero_goal"):
        raise SystemExit(f"demo: DEMO_SUITE must be mt10 or libero_goal, got {suite!r}")
    libero = suite == "libero_goal"
    if libero:
        try:
            merged = libero_config(config_path(), pathlib.Path(node_defaults("demo")["output"]))
        except FileNotFoundError as exc:  # the checkpoint or a key file
            raise SystemExit(f"demo: {exc}") from None
        os.environ["HYPERVLA_CONFIG"] = str(merged.resolve())
    rclpy.init()
    op = DemoOperator("libero_bridge" if libero else "sim_bridge")
    executor = SingleThreadedExecutor()
    executor.add_node(op)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    p = op.p
    tasks = [t for t in os.environ.get("DEMO_TASKS", "").split(",") if t] or list(p["tasks"])
    episodes = int(os.environ.get("DEMO_EPISODES", p["episodes_per_task"]))
    phrasings = load_tasks(tasks_file("libero_tasks.yaml") if libero else None)["tasks"]
    ckpt = resolve_path(node_defaults("policy_controller")["checkpoint"])
    print(f"demo: {len(tasks)} task(s) x {episodes} episode(s) on checkpoint {ckpt}")
    stack = Stack(config_path(), log_dir="log/demo")
    results, switch_ms = [], []
    try:
        stack.start("generator", "controller", "libero" if libero else "sim")
        if not wait(lambda: op.status is not None, 120):
            raise RuntimeError("the controller did not come up: see log/demo/policy_controller.log")
        if not wait(lambda: op.count_publishers("/hypervla/action") > 0 and op.count_subscribers("/hypervla/instruction") >= 2, 120):
            raise RuntimeError("the stack did not come up: see log/demo/")
        for task in tasks:
            for k in range(episodes):
                text = phrasings[task]["train"][k % len(phrasings[task]["train"])]
                old = op.status.policy_id if op.status else ""
                if libero:
                    op.set_init(k)
                op.start_episode(text, old or "<none>")
                ok = wait(lambda: op.episode_end() is not None, p["episode_timeout_s"])
                end = op.episode_end() or {"event": "timeout", "steps": None}
                if op.first_new_action is not None and op.reset_at is not None:
                    # from the episode's first frame (scene loaded and reset) to the first action of its policy
                    switch_ms.append((op.first_new_action - op.reset_at) * 1000)
                row = {"task": task, "instruction": text, "success": bool(end.get("success", False)),
                       "steps": end.get("steps"), "duration_s": end.get("duration_s"),
                       "e2e_ms_p50": end.get("e2e_ms_p50"), "e2e_ms_p99": end.get("e2e_ms_p99"),
                       "completed": ok}
                if libero:  # every goal of the suite that holds at the end: another task's is a wrong goal
                    row.update(init_index=end.get("init_index"), goals_reached=end.get("goals"),
                               wrong_goal=any(g != task for g in end.get("goals") or ()))
                results.append(row)
                print(f"  {task:45s} ep {k}  {'SUCCESS' if row['success'] else 'fail   '}  steps {row['steps']}")
        st = op.status
    finally:
        stack.stop()
        executor.shutdown()
        # The spinning thread leaves the wait set before the node and the context go; left in it at exit, C++
        # aborted the finished demo ("terminate called without an active exception", exit -6).
        spin.join(timeout=10)
        op.destroy_node()
        rclpy.try_shutdown()
    e2e50 = [r["e2e_ms_p50"] for r in results if r["e2e_ms_p50"]]
    e2e99 = [r["e2e_ms_p99"] for r in results if r["e2e_ms_p99"]]
    summary = {
        "checkpoint": ckpt, "suite": suite, "episodes": results,
        "success_rate": sum(r["success"] for r in results) / max(1, len(results)),
        "per_task": {t: float(np.mean([r["success"] for r in results if r["task"] == t])) for t in tasks},
        "control_loop_latency_ms": {"p50": round(st.latency_p50_ms, 3), "p99": round(st.latency_p99_ms, 3)},
        "camera_to_action_ms": {"p50": pct(e2e50, 50), "p99": round(max(e2e99), 3) if e2e99 else None},
        "policy_switch_ms": {"p50": pct(switch_ms, 50), "p99": pct(switch_ms, 99)},
        "deadline_misses": int(st.deadline_misses), "loop_rate_hz": round(st.loop_rate_hz, 2),
        **({"wrong_goal_rate": sum(r["wrong_goal"] for r in results) / max(1, len(results))} if libero else {}),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = pathlib.Path(p["output"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print()
    print(f"{'task':45s} success")
    for t, v in summary["per_task"].items():
        print(f"{t:45s} {v:.2f}")
    print(f"overall success {summary['success_rate']:.2f} over {len(results)} episodes" +
          (f", wrong goal {summary['wrong_goal_rate']:.2f}" if libero else ""))
    print(f"control loop (camera stamp -> action publish) p50 {summary['control_loop_latency_ms']['p50']} ms, "
          f"p99 {summary['control_loop_latency_ms']['p99']} ms; deadline misses {summary['deadline_misses']}")
    print(f"camera -> action end to end p50 {summary['camera_to_action_ms']['p50']} ms, "
          f"p99 {summary['camera_to_action_ms']['p99']} ms")
    print(f"policy switch (first frame of the episode -> first action of its policy) p50 "
          f"{summary['policy_switch_ms']['p50']} ms, p99 {summary['policy_switch_ms']['p99']} ms")
    print(f"wrote {out / 'summary.json'}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="HyperVLA simulated demo")
    parser.add_argument("--config", default=None, help="parameters YAML (default config/hypervla.yaml)")
    args = parser.parse_args(argv)
    run(args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
