"""Specification of the unlearning rules (Fast-FedUL/MEDU correction, FedEraser healing)."""

import gc
import tracemalloc

import numpy as np
import pytest

from unlearning.errors import UnlearningConfigurationError, UnlearningInputError
from unlearning.rules import (
    RoundHistory,
    RoundWeights,
    beta_factor,
    calibrate_update,
    fast_fedul_correction,
    healing_step,
    join_round_history,
    unlearn_fast_fedul,
)


def _random_run(rng, rounds=12, clients=6, dimension=40, targets=(1, 4)):
    """Per round: random survivors (targets in about half the rounds), weights, updates."""
    history = []
    for t in range(rounds):
        survivors = [k for k in range(clients) if rng.random() < 0.6] or [0]
        weights = {k: float(rng.uniform(0.05, 0.3)) for k in survivors}
        updates = {k: rng.normal(size=dimension) for k in survivors}
        probability = float(rng.uniform(0.3, 1.0))
        history.append((t, weights, updates, probability))
    return history


def _direct_correction(history, targets, alpha, theta, learning_rate):
    """All-in-memory closed form: θ·Σ_t (Π_{s>t} β_s)·(η/π_t)·Σ_{c∈𝒯∩S_t} p_c·(−Δ_t^c)."""
    betas = [1.0 - alpha * sum(p for k, p in w.items() if k not in targets) for _, w, _, _ in history]
    total = np.zeros(len(next(iter(history[0][2].values()))))
    for index, (_, weights, updates, probability) in enumerate(history):
        contribution = sum(weights[c] * -updates[c] for c in targets if c in weights)
        if isinstance(contribution, int):
            continue
        total = total + np.prod(betas[index + 1:]) * (learning_rate / probability) * contribution
    return theta * total


def _stream(history, targets):
    for t, weights, updates, probability in history:
        yield RoundHistory(t, weights, {c: updates[c] for c in targets if c in weights}, probability)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_rule_matches_direct_computation_of_the_same_formula(seed):
    rng = np.random.default_rng(seed)
    history = _random_run(rng)
    targets = {1, 4}
    streamed = fast_fedul_correction(_stream(history, targets), targets, 40, alpha=0.3, theta=0.8,
                                     server_learning_rate=0.5)
    direct = _direct_correction(history, targets, 0.3, 0.8, 0.5)
    np.testing.assert_allclose(streamed, direct, rtol=0, atol=1e-12)
    assert np.linalg.norm(direct) > 0.1  # the comparison is not between two zero vectors


def test_defaults_are_the_papers_alpha_and_theta():
    rng = np.random.default_rng(7)
    history = _random_run(rng, rounds=5)
    streamed = fast_fedul_correction(_stream(history, {1}), {1}, 40)
    np.testing.assert_allclose(streamed, _direct_correction(history, {1}, 0.07, 1.0, 1.0),
                               rtol=0, atol=1e-12)


def test_without_contraction_the_rule_removes_exactly_the_targets_additive_steps():
    # w_T = w_0 + Σ_t Σ_k p_k Δ_t^k (fedvault's server adds local − global). With α = 0 (β = 1)
    # and θ = 1, w_T + U must equal the trajectory without the targets: this pins the sign.
    rng = np.random.default_rng(3)
    history = _random_run(rng, rounds=8)
    history = [(t, w, u, 1.0) for t, w, u, _ in history]
    w0 = rng.normal(size=40)
    final = w0 + sum(p * u[k] for _, w, u, _ in history for k, p in w.items())
    without = w0 + sum(p * u[k] for _, w, u, _ in history for k, p in w.items() if k != 4)
    unlearned = unlearn_fast_fedul(final, _stream(history, {4}), {4}, alpha=0.0, theta=1.0)
    np.testing.assert_allclose(unlearned, without, rtol=0, atol=1e-12)


def test_beta_counts_only_the_remaining_survivors():
    assert beta_factor({1: 0.25, 2: 0.5, 3: 0.25}, {2}, 0.1) == pytest.approx(1 - 0.1 * 0.5, abs=1e-15)
    assert beta_factor({2: 1.0}, {2}, 0.5) == 1.0


def test_other_clients_records_never_enter_the_correction():
    weights = {1: 0.5, 2: 0.5}
    only_target = fast_fedul_correction([RoundHistory(0, weights, {1: np.ones(3)})], {1}, 3)
    with_other = fast_fedul_correction([RoundHistory(0, weights, {1: np.ones(3), 2: np.full(3, 9.0)})],
                                       {1}, 3)
    np.testing.assert_array_equal(only_target, with_other)
    np.testing.assert_array_equal(only_target, np.full(3, -0.5))


def test_rule_holds_one_round_at_a_time():
    # 60 rounds of d = 20 000 float64 (160 kB each, 9.6 MB in all): a rule that kept the rounds
    # would peak near 10 MB; a streaming one holds a few vectors (< 1.5 MB with slack).
    dimension, rounds = 20_000, 60
    consumed = []

    def generate():
        rng = np.random.default_rng(11)
        for t in range(rounds):
            consumed.append(t)
            yield RoundHistory(t, {0: 0.5, 1: 0.5}, {0: rng.normal(size=dimension)})

    gc.collect()
    tracemalloc.start()
    try:
        correction = fast_fedul_correction(generate(), {0}, dimension)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert consumed == list(range(rounds))
    assert correction.shape == (dimension,)
    assert peak < 1.5e6, peak


def test_rounds_out_of_order_are_refused():
    rounds = [RoundHistory(3, {0: 1.0}), RoundHistory(3, {0: 1.0})]
    with pytest.raises(UnlearningInputError, match="strictly increasing"):
        fast_fedul_correction(rounds, {0}, 2)


def test_update_of_a_client_that_did_not_take_part_is_refused():
    with pytest.raises(UnlearningInputError, match="no weight"):
        RoundHistory(0, {1: 1.0}, {2: np.zeros(3)})


def test_wrong_length_update_is_refused():
    with pytest.raises(UnlearningInputError, match="length"):
        fast_fedul_correction([RoundHistory(0, {1: 1.0}, {1: np.zeros(4)})], {1}, 3)


@pytest.mark.parametrize("kwargs", [{"alpha": -0.1}, {"alpha": float("nan")}, {"theta": float("inf")},
                                    {"server_learning_rate": 0.0}])
def test_bad_hyperparameters_name_the_knob(kwargs):
    with pytest.raises(UnlearningConfigurationError, match=next(iter(kwargs))):
        fast_fedul_correction([], {0}, 3, **kwargs)


def test_non_finite_updates_and_empty_targets_are_refused():
    with pytest.raises(UnlearningInputError, match="NaN"):
        RoundHistory(0, {1: 1.0}, {1: np.array([1.0, np.nan])})
    with pytest.raises(UnlearningInputError, match="empty"):
        fast_fedul_correction([], set(), 3)


def test_join_merges_records_of_several_targets_by_round():
    rounds = [RoundWeights(t, {0: 0.3, 1: 0.3, 2: 0.4}) for t in range(4)]
    records = {1: iter([(0, np.full(2, 1.0)), (2, np.full(2, 3.0))]),
               2: iter([(1, np.full(2, 5.0)), (2, np.full(2, 7.0))])}
    joined = list(join_round_history(rounds, records))
    assert [h.round_index for h in joined] == [0, 1, 2, 3]
    assert [sorted(h.target_updates) for h in joined] == [[1], [2], [1, 2], []]
    np.testing.assert_array_equal(joined[2].target_updates[2], [7.0, 7.0])


def test_join_refuses_a_record_for_a_round_the_client_did_not_survive():
    rounds = [RoundWeights(0, {0: 1.0}), RoundWeights(1, {0: 0.5, 1: 0.5})]
    with pytest.raises(UnlearningInputError, match="not a stored round it survived in"):
        list(join_round_history(rounds, {1: [(0, np.zeros(2))]}))
    with pytest.raises(UnlearningInputError, match="after the last stored round"):
        list(join_round_history(rounds, {1: [(1, np.zeros(2)), (5, np.zeros(2))]}))


def test_calibration_keeps_reference_magnitude_and_new_direction_per_layer():
    rng = np.random.default_rng(5)
    reference, new = rng.normal(size=10), rng.normal(size=10)
    calibrated = calibrate_update(reference, new, [4, 6])
    for layer in (slice(0, 4), slice(4, 10)):
        assert np.linalg.norm(calibrated[layer]) == pytest.approx(np.linalg.norm(reference[layer]), rel=1e-12)
        cosine = calibrated[layer] @ new[layer] / np.linalg.norm(calibrated[layer]) / np.linalg.norm(new[layer])
        assert cosine == pytest.approx(1.0, abs=1e-12)


def test_calibration_of_a_zero_layer_stays_zero_and_sizes_must_cover_the_vector():
    calibrated = calibrate_update(np.ones(4), np.array([0.0, 0.0, 3.0, 4.0]), [2, 2])
    np.testing.assert_allclose(calibrated, [0, 0, 0.6 * np.sqrt(2), 0.8 * np.sqrt(2)], atol=1e-15)
    with pytest.raises(UnlearningInputError, match="sum to 3"):
        calibrate_update(np.ones(4), np.ones(4), [1, 2])


def test_healing_step_adds_the_scaled_calibrated_update():
    model = np.array([1.0, 1.0])
    stepped = healing_step(model, np.array([0.0, 2.0]), np.array([1.0, 0.0]), server_learning_rate=0.5)
    np.testing.assert_allclose(stepped, [2.0, 1.0], atol=1e-15)
