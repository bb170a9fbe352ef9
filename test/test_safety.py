"""Action post-processing: clamps, rate limits, NaN rejection (property-based with hypothesis)."""
import numpy as np
import yaml
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


def test_controller_limits_are_the_configs_with_the_overrides_file_over_them(tmp_path):
    from hypervla_core.safety import controller_limits

    base = yaml.safe_load(open("config/hypervla.yaml"))["policy_controller"]["ros__parameters"]
    demo = yaml.safe_load(open("config/libero_demo.yaml"))["policy_controller"]["ros__parameters"]
    assert controller_limits("config/hypervla.yaml") == SafetyLimits(
        base["max_translation"], base["max_rotation"], base["max_step_change"])
    assert controller_limits("config/libero_demo.yaml") == SafetyLimits(
        demo["max_translation"], demo["max_rotation"], demo["max_step_change"])
    partial = tmp_path / "p.yaml"
    partial.write_text("policy_controller:\n  ros__parameters:\n    max_rotation: 0.3\n")
    assert controller_limits(partial) == SafetyLimits(base["max_translation"], 0.3, base["max_step_change"])


def test_limited_policy_commands_what_the_controller_would_and_counts_the_changes():
    from hypervla_core.safety import LimitedPolicy

    class Policy:  # stands in for a TaskPolicy: only its step() is used
        def __init__(self, actions):
            self.actions = iter(actions)

        def step(self, image, proprio=None):
            return next(self.actions)

    small = np.array([0.001, 0, 0, 0, 0, 0, 0.9], np.float32)
    big = np.array([0.5, -0.5, 0, 0.3, 0, 0, 0.2], np.float32)
    p = LimitedPolicy(Policy([small, big, small]), LIMITS)
    out = [p.step(None) for _ in range(3)]
    np.testing.assert_allclose(out[0], [0.001, 0, 0, 0, 0, 0, 1.0])  # within the limits: unchanged, grip snapped
    np.testing.assert_allclose(out[1][:4], [0.006, -0.005, 0, 0.005], atol=1e-7)  # clamped and rate limited
    np.testing.assert_allclose(out[2][:6], small[:6], atol=1e-7)  # back within one step's change: unchanged
    assert p.limited == 1
