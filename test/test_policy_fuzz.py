"""Short fuzz run of the policy decoders (bytes blob and ROS message): every input either decodes to a
policy whose content hash checks out, or raises PolicyFormatError. Nothing else escapes."""
import numpy as np
import pytest
from hypervla_core.runtime import Generator
from hypervla_core.task_policy import PolicyFormatError, TaskPolicy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def blob(tiny_checkpoints):
    return Generator.load(tiny_checkpoints["hypervla"]).generate("open the drawer").to_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_blob_decoder(blob, data):
    raw = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "header"]))
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[i] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            del raw[i:]
        elif kind == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        elif len(raw) > 9:  # aim at the JSON header, where parsing logic lives
            j = data.draw(st.integers(8, min(len(raw) - 1, 400)))
            raw[j] = data.draw(st.integers(0, 255))
    try:
        policy = TaskPolicy.from_bytes(bytes(raw))
    except PolicyFormatError:
        return
    assert policy.policy_id == policy.content_id()
    assert all(np.isfinite(t).all() for t in policy.tensors.values())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(raw):
    with pytest.raises(PolicyFormatError):
        TaskPolicy.from_bytes(raw)
