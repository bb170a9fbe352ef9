"""One generator for many robots: batched generation equal to one at a time, a bounded queue that refuses
with a reason, and (real process, DDS) 64 concurrent GeneratePolicy calls each answered and counted."""
import re
import time

import numpy as np
import pytest
from hypervla_core.runtime import Generator
from hypervla_core.serving import Busy, PolicyServer, ServeConfig
from hypervla_ros.bringup import Stack
from hypervla_ros.node_config import GENERATOR_CLIENT
from hypervla_ros.policy_msgs import from_msg
from ros_helpers import ROOT, wait_until, write_config

from hypervla_msgs.srv import GeneratePolicy

SHIPPED = ROOT / "models" / "hypervla-mt10"
BUSY = re.compile(r"^busy: \d+ requests queued, retry$")
# Batched matrix products round differently in the last bits than one row alone (measured: <= 5e-7 on weights of
# magnitude ~1); the policy ids (content hashes) of a batched and a lone generation therefore differ.
ATOL = 1e-5


def _assert_same_policy(a, b):
    assert a.instruction == b.instruction and a.model_id == b.model_id
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        np.testing.assert_allclose(a.tensors[k], b.tensors[k], rtol=0, atol=ATOL, err_msg=k)


def test_batched_generation_equals_one_at_a_time():
    gen = Generator.load(SHIPPED)
    rng = np.random.default_rng(3)
    requests = [("open the drawer", rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)),
                ("push the puck to the goal", None),  # no first frame beside ones with a frame
                ("close the window", rng.integers(0, 255, (96, 192, 3), dtype=np.uint8)),  # resized
                ("press the button from the top", None),
                ("open the drawer", None)]
    batched = gen.generate_batch(requests)
    assert len(batched) == len(requests)
    for (text, image), b in zip(requests, batched):
        _assert_same_policy(gen.generate(text, image), b)
    key = next(iter(batched[0].tensors))  # and different requests got different policies: nothing mixed up
    assert not np.allclose(batched[0].tensors[key], batched[1].tensors[key], atol=1e-3)


def test_queue_refuses_past_max_queued_joins_identical_and_batches(tiny_checkpoints):
    gen = Generator.load(tiny_checkpoints["hypervla"])
    server = PolicyServer(gen, ServeConfig(cache_size=8, max_queued=3, max_batch=2))
    futures = [server.submit(f"task {i}") for i in range(3)]
    same = server.submit("  task   0 ")  # same words: joins the waiting request
    assert same is futures[0]
    with pytest.raises(Busy, match=r"^busy: 3 requests queued, retry$"):
        server.submit("task 3")
    assert server.serve_once(timeout=0) == 2  # a batch of max_batch
    assert futures[0].result().instruction == "task 0" and futures[1].result().instruction == "task 1"
    assert not futures[2].done()
    assert server.serve_once(timeout=0) == 1 and futures[2].result().instruction == "task 2"
    assert server.serve_once(timeout=0) == 0
    hit = server.submit("task 1")  # cached: answered at once, the same policy
    assert hit.done() and hit.result() is futures[1].result()
    s = server.snapshot()
    assert (s["queued"], s["joined"], s["refused_busy"], s["cache_hits"], s["batches"], s["batched_requests"]) == \
        (3, 1, 1, 1, 2, 3)
    assert s["answered"] == 5 and s["queued_now"] == 0  # 3 generated + the joined one + the cache hit
    with pytest.raises(ValueError, match="empty"):
        server.submit("   ")
    late = server.submit("task 9")
    server.close()  # a request still waiting gets an answer too
    with pytest.raises(Busy, match="shutting down"):
        late.result(timeout=1)


def _burst(node, instructions, timeout=90.0):
    """One client per instruction (as many robots would have), all calls sent at once; (futures, seconds)."""
    from rclpy.executors import SingleThreadedExecutor

    clients = [node.create_client(GeneratePolicy, "/hypervla/generate_policy", qos_profile=GENERATOR_CLIENT)
               for _ in instructions]
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not all(c.service_is_ready() for c in clients):
            ex.spin_once(timeout_sec=0.1)
        start = time.monotonic()
        futures = [c.call_async(GeneratePolicy.Request(instruction=t)) for c, t in zip(clients, instructions)]
        while time.monotonic() - start < timeout and not all(f.done() for f in futures):
            ex.spin_once(timeout_sec=0.05)
        return futures, time.monotonic() - start
    finally:
        ex.remove_node(node)
        for c in clients:
            node.destroy_client(c)


def _generator_counts(node, want_total, timeout=15.0):
    """The generator's /diagnostics values once they account for `want_total` requests."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    seen = {}

    def on_diag(msg):
        for st in msg.status:
            if st.name == "hypervla: policy_generator":
                seen.update({kv.key: kv.value for kv in st.values})

    sub = node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    end = time.monotonic() + timeout
    total = lambda: int(seen.get("answered", 0)) + int(seen.get("refused_busy", 0)) + int(seen.get("failed", 0))  # noqa: E731
    while time.monotonic() < end and not (seen and total() == want_total and seen["queued_now"] == "0"):
        ex.spin_once(timeout_sec=0.1)
    ex.remove_node(node)
    node.destroy_subscription(sub)
    return {k: int(v) for k, v in seen.items() if v.lstrip("-").isdigit()}


def _start(tmp_path, name, **params):
    folder = tmp_path / name
    folder.mkdir()
    return Stack(write_config(folder, SHIPPED, policy_generator=params), log_dir=str(folder)).start("generator")


def test_64_concurrent_calls_each_get_a_policy_or_a_busy_refusal_and_are_counted(ros, tmp_path):
    from rclpy.node import Node

    node = Node("burst_client")
    try:
        # A short queue: some of the 64 must be refused, each with the reason; none may go unanswered.
        with _start(tmp_path, "short", max_queued=4, max_batch=4):
            futures, _ = _burst(node, [f"open the drawer, robot {i}" for i in range(64)])
            assert all(f.done() for f in futures), f"{sum(not f.done() for f in futures)} of 64 never answered"
            answers = [f.result() for f in futures]
            ok = [r for r in answers if r.success]
            refused = [r for r in answers if not r.success]
            assert all(BUSY.match(r.message) for r in refused), {r.message for r in refused}
            assert ok and refused, (len(ok), len(refused))
            counts = _generator_counts(node, 64)
            assert (counts["answered"], counts["refused_busy"], counts["failed"]) == (len(ok), len(refused), 0), counts

        # A queue for the whole fleet: every call gets its own policy; 8 robots asking the same share one.
        with _start(tmp_path, "long", max_queued=64, max_batch=16):
            texts = [f"push the puck, robot {i}" for i in range(56)] + ["close the window"] * 8
            futures, seconds = _burst(node, texts)
            assert all(f.done() for f in futures), f"{sum(not f.done() for f in futures)} of 64 never answered"
            answers = [f.result() for f in futures]
            assert all(r.success for r in answers), {r.message for r in answers if not r.success}
            policies = [from_msg(r.policy) for r in answers]
            assert [p.instruction for p in policies] == texts  # each robot got the answer to its own request
            assert len({p.policy_id for p in policies[56:]}) == 1
            counts = _generator_counts(node, 64)
            assert counts["answered"] == 64 and counts["refused_busy"] == 0
            assert counts["joined"] + counts["cache_hits"] == 7 and counts["queued"] == 57
            assert counts["batches"] < counts["queued"], counts  # requests that waited together were batched
        gen = Generator.load(SHIPPED)
        for p in policies[::15]:  # the same policies as one at a time in this process
            _assert_same_policy(gen.generate(p.instruction), p)
    finally:
        node.destroy_node()
