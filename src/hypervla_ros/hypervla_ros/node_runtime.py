"""What every node process shares: start-up with a clear error, spin, clean shutdown, diagnostics."""
from __future__ import annotations

import cProfile
import os
import signal
import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from hypervla_core.checkpoint import CheckpointError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions


def run(node_class, name: str, args=None) -> None:
    """rclpy.init, build the node (a bad checkpoint or config exits 1 with one clear line), spin until
    SIGINT/SIGTERM, then the node's close() (if any), destroy, shutdown. HYPERVLA_PROFILE=DIR writes
    DIR/<name>.prof (cProfile) at shutdown: how `make bench` attributes the controller's time."""
    # Our own SIGINT/SIGTERM handler instead of rclpy's: the first signal ends the spin, later ones (a second
    # Ctrl-C, launch's SIGTERM after SIGINT) are ignored, so clean-up never ends in a traceback.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stopping = []

    def on_signal(_signum, _frame):
        if stopping:
            return
        stopping.append(True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        node = node_class()
    except (CheckpointError, OSError, KeyError, ValueError) as exc:  # PermissionError of a key file included
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        sys.exit(1)
    except KeyboardInterrupt:  # stopped while loading
        rclpy.try_shutdown()
        sys.exit(0)
    profile = os.environ.get("HYPERVLA_PROFILE")  # a folder: cProfile of the spin, written at shutdown
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok():  # a timeout, so the Python-level signal handler runs within 0.1 s
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stopping.append(True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
