"""`make soak` (outside CI): 30 Hz camera, 50 Hz control, a task switch every few seconds, for minutes.

Reports controller/generator RSS growth (first minute -> end), deadline-miss rate, node restarts (a node
that died), unhandled exceptions in the node logs, and actions per frame. Writes bench/soak.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

import rclpy  # noqa: E402
from hypervla_ros.bringup import Stack  # noqa: E402
from ros_helpers import Probe, Spinner, wait_until, write_config  # noqa: E402

INSTRUCTIONS = ["open the drawer", "close the window", "push the puck to the goal", "reach the goal position",
                "press the button from the top", "open the door"]


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--switch-every-s", type=float, default=4.0)
    parser.add_argument("--checkpoint", default=str(ROOT / "models" / "hypervla-mt10"))
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))
    tmp = pathlib.Path("runs/soak")
    tmp.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp, args.checkpoint)
    rclpy.init()
    report = {}
    with Stack(config, log_dir=str(tmp / "logs")) as stack:
        stack.start("generator", "controller")
        probe = Probe("soak_probe")
        spinner = Spinner(probe)
        try:
            probe.camera_on()
            probe.say(INSTRUCTIONS[0])
            assert wait_until(lambda: probe.latest_status() is not None and probe.latest_status().state == 2, 120)
            start = time.monotonic()
            end = start + args.minutes * 60
            rss0, misses0, frames0 = None, probe.latest_status().deadline_misses, probe.frames_sent
            samples, switches, i = [], 0, 0
            next_switch = start + args.switch_every_s
            while time.monotonic() < end:
                time.sleep(1.0)
                now = time.monotonic()
                if not (stack.alive("controller") and stack.alive("generator")):
                    report["died"] = [n for n in ("controller", "generator") if not stack.alive(n)]
                    break
                if now >= next_switch:
                    i += 1
                    probe.say(INSTRUCTIONS[i % len(INSTRUCTIONS)])
                    switches += 1
                    next_switch = now + args.switch_every_s
                rss = {"controller": rss_mb(stack.pid("controller")), "generator": rss_mb(stack.pid("generator"))}
                samples.append({"t": round(now - start, 1), **rss})
                if rss0 is None and now - start >= min(60.0, args.minutes * 30):
                    rss0 = rss  # after warm-up: allocator and caches settled
            st = probe.latest_status()
            duration = time.monotonic() - start
            last = samples[-1]
            rss0 = rss0 or samples[0]
            report.update({
                "minutes": round(duration / 60, 2), "switches": switches,
                "frames": probe.frames_sent - frames0, "actions": len(probe.actions),
                "deadline_miss_rate": round((st.deadline_misses - misses0) / (duration * 50.0), 5),
                "rss_mb_start": rss0, "rss_mb_end": {k: last[k] for k in ("controller", "generator")},
                "rss_growth_pct": {k: round(100 * (last[k] - rss0[k]) / rss0[k], 2) for k in ("controller", "generator")},
                "restarts": len(report.get("died", [])),
            })
        finally:
            spinner.close()
    rclpy.try_shutdown()
    logs = "".join(p.read_text(errors="replace") for p in (tmp / "logs").glob("*.log"))
    report["unhandled_exceptions"] = logs.count("Traceback (most recent call last)")
    (ROOT / "bench" / "soak.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    ok = (report["restarts"] == 0 and report["unhandled_exceptions"] == 0 and report["deadline_miss_rate"] < 0.01
          and all(v <= 5.0 for v in report["rss_growth_pct"].values()))
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
