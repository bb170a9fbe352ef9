"""Action post-processing: clamps, rate limits, NaN rejection (property-based with hypothesis)."""
import numpy as np
import pytest
from hypervla_core.safety import SafetyFilter, SafetyLimits
from hypervla_core.task_policy import ChunkEnsembler
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

LIMITS = SafetyLimits(max_translation=0.02, max_rotation=0.1, max_step_change=0.005)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, (20, 7), elements=finite))
def test_commands_are_bounded_and_rate_limited(actions):
    f = SafetyFilter(LIMITS)
    prev = np.zeros(6, np.float32)
    for a in actions:
        out = f(a)
        assert np.all(np.abs(out[:3]) <= LIMITS.max_translation + 1e-7)
        assert np.all(np.abs(out[3:6]) <= LIMITS.max_rotation + 1e-7)
        assert np.all(np.abs(out[:6] - prev) <= LIMITS.max_step_change + 1e-6)
        assert out[6] in (0.0, 1.0)
        prev = out[:6]


@given(arrays(np.float32, 7, elements=finite), st.integers(0, 6), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_actions_are_refused(action, index, bad):
    action[index] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        SafetyFilter(LIMITS)(action)


def test_reset_starts_from_rest():
    f = SafetyFilter(LIMITS)
    for _ in range(10):
        f(np.full(7, 1.0, np.float32))
    f.reset()
    assert np.allclose(f(np.full(7, 1.0, np.float32))[:6], LIMITS.max_step_change)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), arrays(np.float32, (12, 6, 7), elements=st.floats(-10, 10, width=32)))
def test_ensembled_action_lies_within_the_predictions(horizon, chunks):
    ens = ChunkEnsembler(horizon)
    for t, chunk in enumerate(chunks):
        out = ens.push(chunk[:horizon])
        preds = np.stack([chunks[t - age][age] for age in range(min(t + 1, horizon))])
        assert np.all(out >= preds.min(0) - 1e-4) and np.all(out <= preds.max(0) + 1e-4)
        np.testing.assert_allclose(out, preds.mean(0), rtol=1e-5, atol=1e-5)
