"""Multi-process bring-up without `launch`: each node its own OS process over DDS, same YAML.

`ros2 launch hypervla sim.launch.py` does the same on a full ROS 2 install; here (PyPI wheels, no launch)
`bringup` is what `make demo` and the tests use.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from .node_config import config_path

NODES = {"generator": "policy_generator", "controller": "policy_controller", "sim": "sim_bridge",
         "libero": "libero_bridge", "demonstrator": "demonstrator", "record": "record"}


class Stack:
    """Start, restart and stop node processes; stdout/stderr go to log files. `prefix` goes before each command
    (`ip netns exec NS`: the nodes on another simulated host)."""

    def __init__(self, config: str | None = None, log_dir: str = "log/bringup", env: dict | None = None,
                 prefix: list[str] | None = None):
        self.config = str(config or config_path())
        self.log_dir, self.prefix = log_dir, list(prefix or [])
        self.env = {**os.environ, "HYPERVLA_CONFIG": self.config, **(env or {})}
        self.procs: dict[str, subprocess.Popen] = {}
        os.makedirs(log_dir, exist_ok=True)

    def start(self, *names: str) -> "Stack":
        for name in names:
            module = NODES[name]
            log = open(os.path.join(self.log_dir, f"{module}.log"), "ab")
            self.procs[name] = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", f"hypervla_ros.{module}", "--ros-args", "--params-file", self.config],
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self, *names: str, timeout: float = 10.0) -> None:
        for name in names or list(self.procs):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, name: str) -> None:
        """Hard kill (fault injection: a crashed node)."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="start HyperVLA nodes as separate processes")
    parser.add_argument("--config", default=None, help="parameters YAML (default config/hypervla.yaml)")
    parser.add_argument("--nodes", default="generator,controller,sim", help=f"comma-separated, from {sorted(NODES)}")
    args = parser.parse_args(argv)
    stack = Stack(args.config).start(*[n.strip() for n in args.nodes.split(",") if n.strip()])
    print(f"started {', '.join(f'{n} (pid {stack.pid(n)})' for n in stack.procs)}; logs in {stack.log_dir}; Ctrl-C stops")
    try:
        while all(stack.alive(n) for n in list(stack.procs)):
            time.sleep(0.5)
        print("a node exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
