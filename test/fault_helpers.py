"""Shared predicates of the fault-injection suites."""
import time

from hypervla_msgs.msg import ControllerStatus as S

UP = 120.0  # start-up (model load, ONNX export) on a busy machine can take a minute


def running(probe, old=""):
    st = probe.latest_status()
    return st is not None and st.state == S.RUNNING and st.policy_id != old


def state_is(probe, state, text=""):
    st = probe.latest_status()
    return st is not None and st.state == state and text in st.reason


def still(probe, seconds=0.4):
    """No action published during `seconds` (after a short settle)."""
    time.sleep(0.1)
    t0 = time.monotonic()
    time.sleep(seconds)
    return probe.actions_since(t0) == []


def diag_value(probe, key):
    for d in reversed(list(probe.diagnostics)):
        for st in d.status:
            if st.name == "hypervla: policy_controller":
                return {kv.key: kv.value for kv in st.values}.get(key)
    return None
