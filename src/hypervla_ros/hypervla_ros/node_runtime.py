"""What every node process shares: start-up with a clear error, spin, clean shutdown, diagnostics."""
from __future__ import annotations

import cProfile
import os
import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from hypervla_core.checkpoint import CheckpointError


def run(node_class, name: str, args=None) -> None:
    """rclpy.init, build the node (a bad checkpoint or config exits 1 with one clear line), spin until
    SIGINT/SIGTERM, then the node's close() (if any), destroy, shutdown. HYPERVLA_PROFILE=DIR writes
    DIR/<name>.prof (cProfile) at shutdown: how `make bench` attributes the controller's time."""
    rclpy.init(args=args)
    try:
        node = node_class()
    except (CheckpointError, OSError, KeyError, ValueError) as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        sys.exit(1)
    profile = os.environ.get("HYPERVLA_PROFILE")  # a folder: cProfile of the spin, written at shutdown
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if prof:
            prof.disable()
            os.makedirs(profile, exist_ok=True)
            prof.dump_stats(os.path.join(profile, f"{name}.prof"))
        if hasattr(node, "close"):
            node.close()
        node.destroy_node()
        rclpy.try_shutdown()


def diagnostics(node, name: str, hardware_id: str, level: int, message: str, values: dict) -> DiagnosticArray:
    st = DiagnosticStatus(name=name, hardware_id=hardware_id, level=level, message=message)
    st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    msg = DiagnosticArray(status=[st])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg
