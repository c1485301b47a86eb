"""Specification of the calibrated trajectory correction (``unlearning.correction``).

The reference problem is federated least squares, where retraining has a closed form: client k's
loss is ½(w − a_k)ᵀA_k(w − a_k), local training is one gradient step, Δ_k(w) = −γ·A_k·(w − a_k),
and FedAvg steps with uniform weights over each round's survivors. The remaining clients' update
map is then linear with Jacobian J = −γ·mean A_k, so the rule's linearization is exact and only
its estimate of J (from the stored aggregates) and its cold start separate it from retraining.
"""

import dataclasses

import numpy as np
import pytest

from unlearning.correction import CorrectionSettings, ObservedRound, calibrated_correction, secant_jacobian
from unlearning.deletion import (
    UnlearningSettings,
    correction_rule_for,
    current_model,
    medu_correction,
    observed_rounds,
    unlearn_client,
)
from unlearning.records import open_history
from unlearning.errors import UnlearningConfigurationError, UnlearningInputError
from unlearning.rules import RoundHistory, RoundWeights, fast_fedul_correction, join_round_history
from unlearning.requests import sign_deletion_request

from .conftest import ROUNDS

TARGET = 0


def _quadratic_federation(rng, clients=6, dimension=6, free_coordinate=False):
    """Curvatures A_k (eigenvalues in [0.2, 1]) and optima a_k; with ``free_coordinate`` the last
    coordinate is touched by the target's loss only (as a backdoor trigger's weights are)."""
    curvatures, optima = [], []
    for k in range(clients):
        basis, _ = np.linalg.qr(rng.normal(size=(dimension, dimension)))
        curvature = (basis * rng.uniform(0.2, 1.0, size=dimension)) @ basis.T
        if free_coordinate and k != TARGET:
            curvature[-1, :] = curvature[:, -1] = 0.0
        curvatures.append(curvature)
        optima.append(rng.normal(size=dimension) * (3.0 if k == TARGET else 1.0))
    return curvatures, optima


def _train(curvatures, optima, rounds, survivors, exclude=(), step=0.3, start=None):
    """FedAvg on the quadratic federation; returns the final model and the stored history."""
    w = np.zeros(len(optima[0])) if start is None else start.copy()
    history = []
    for t in range(rounds):
        alive = [k for k in survivors[t] if k not in exclude]
        updates = {k: -step * curvatures[k] @ (w - optima[k]) for k in alive}
        weights = {k: 1.0 / len(alive) for k in alive}
        aggregate = sum(weights[k] * updates[k] for k in alive)
        history.append((t, weights, updates, aggregate))
        w = w + aggregate
    return w, history


def _observed(history):
    return [ObservedRound(RoundHistory(t, weights, {c: u for c, u in updates.items() if c == TARGET}), aggregate)
            for t, weights, updates, aggregate in history]


def _rules(history, final):
    d = final.shape[0]
    histories = [o.history for o in _observed(history)]
    return {"calibrated": final + calibrated_correction(_observed(history), {TARGET}, d),
            "subtraction": final + fast_fedul_correction(histories, {TARGET}, d, alpha=0.0),
            "fast-fedul": final + fast_fedul_correction(histories, {TARGET}, d)}


def _survivors(rng, rounds, clients, drop=0.0):
    return [[k for k in range(clients) if k == TARGET or rng.random() >= drop] for _ in range(rounds)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_on_least_squares_the_estimated_interaction_brings_it_closer_than_plain_subtraction(seed):
    """Subtracting the client's updates ignores how the others would have answered the change;
    the rule's response estimated from the stored aggregates recovers part of that answer."""
    rng = np.random.default_rng(seed)
    curvatures, optima = _quadratic_federation(rng, clients=8)
    survivors = _survivors(rng, 40, len(optima), drop=0.2)
    start = rng.normal(size=6) * 5
    final, history = _train(curvatures, optima, 40, survivors, start=start)
    retrained, _ = _train(curvatures, optima, 40, survivors, exclude={TARGET}, start=start)
    distance = {name: np.linalg.norm(model - retrained) for name, model in _rules(history, final).items()}
    assert distance["calibrated"] < 0.8 * distance["subtraction"]


def test_a_direction_only_the_removed_client_trained_is_removed_in_full():
    """The backdoor case: nobody else's loss touches the last coordinate, so retraining leaves it
    where it started; a fixed per-round shrink leaves part of the client's push there."""
    rng = np.random.default_rng(5)
    curvatures, optima = _quadratic_federation(rng, free_coordinate=True)
    survivors = _survivors(rng, 30, len(optima))
    final, history = _train(curvatures, optima, 30, survivors)
    retrained, _ = _train(curvatures, optima, 30, survivors, exclude={TARGET})
    assert retrained[-1] == 0.0 and abs(final[-1]) > 0.1
    models = _rules(history, final)
    assert abs(models["calibrated"][-1]) < 0.02 * abs(final[-1])
    assert abs(models["fast-fedul"][-1]) > 0.2 * abs(final[-1])


def test_the_secant_fit_recovers_a_known_jacobian_and_its_decay():
    rng = np.random.default_rng(3)
    d = 5
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    decays = np.array([0.02, 0.05, 0.1, 0.15, 0.25])
    jacobian = -(basis * decays) @ basis.T
    steps = rng.normal(size=(8, d))
    fit = secant_jacobian(steps, steps @ jacobian.T, ridge=1e-9)
    q = fit.basis()
    assert np.allclose(q.T @ q, np.eye(d), atol=1e-9)
    assert np.allclose(q @ fit.matrix @ q.T, jacobian, atol=1e-6)
    assert np.allclose(np.sort(-np.linalg.eigvalsh(fit.matrix)), decays, atol=1e-6)
    probe = rng.normal(size=d)
    assert np.allclose(fit.apply(probe), jacobian @ probe, atol=1e-6)


def test_the_secant_fit_never_expands_and_respects_the_largest_contraction():
    rng = np.random.default_rng(4)
    steps = rng.normal(size=(6, 10))
    expanding = steps @ (0.5 * np.eye(10)).T  # a response that would grow errors
    fit = secant_jacobian(steps, expanding)
    assert fit.basis().shape == (10, 6) and np.allclose(fit.matrix, 0.0)
    steep = steps @ (-5.0 * np.eye(10)).T
    fit = secant_jacobian(steps, steep, lowest=-0.3)
    assert np.allclose(np.linalg.eigvalsh(fit.matrix), -0.3)
    dependent = np.vstack([steps, 2.0 * steps[:1]])  # a step along an earlier one adds no direction
    assert secant_jacobian(dependent, dependent @ (-0.1 * np.eye(10)).T).rank == 6


def test_with_no_window_it_is_exact_subtraction_with_renormalized_weights():
    rng = np.random.default_rng(6)
    d, history = 7, []
    expected = np.zeros(d)
    for t in range(6):
        survivors = [0, 1, 2] if t != 3 else [1, 2]
        weights = {k: 1.0 / len(survivors) for k in survivors}
        updates = {k: rng.normal(size=d) for k in survivors}
        aggregate = sum(weights[k] * updates[k] for k in survivors)
        history.append((t, weights, updates, aggregate))
        if TARGET in survivors:  # retraining steps with the mean of the others instead
            expected += np.mean([updates[k] for k in survivors if k != TARGET], axis=0) - aggregate
    got = calibrated_correction(_observed(history), {TARGET}, d, settings=CorrectionSettings(window=0),
                                server_learning_rate=1.0)
    assert np.allclose(got, expected)
    doubled = calibrated_correction(_observed(history), {TARGET}, d, settings=CorrectionSettings(window=0),
                                    server_learning_rate=2.0)
    assert np.allclose(doubled, 2.0 * expected)


def test_a_round_of_the_target_alone_is_undone_entirely():
    update = np.array([1.0, -2.0, 0.5])
    rounds = [ObservedRound(RoundHistory(0, {TARGET: 1.0}, {TARGET: update}), update)]
    assert np.allclose(calibrated_correction(rounds, {TARGET}, 3), -update)


@pytest.mark.parametrize("settings", [{"window": -1}, {"ridge": 0.0}, {"max_contraction": 1.5},
                                      {"ridge": float("nan")}, {"window": 2.5}])
def test_bad_settings_are_refused(settings):
    with pytest.raises(UnlearningConfigurationError):
        CorrectionSettings(**settings)


def test_bad_inputs_are_refused():
    good = ObservedRound(RoundHistory(1, {0: 0.5, 1: 0.5}, {0: np.ones(3)}), np.ones(3))
    with pytest.raises(UnlearningInputError, match="strictly increasing"):
        calibrated_correction([good, good], {0}, 3)
    with pytest.raises(UnlearningInputError, match="length"):
        calibrated_correction([good], {0}, 4)
    with pytest.raises(UnlearningInputError, match="ObservedRound"):
        calibrated_correction([good.history], {0}, 3)
    with pytest.raises(UnlearningInputError, match="NaN"):
        ObservedRound(good.history, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(UnlearningConfigurationError, match="server_learning_rate"):
        calibrated_correction([good], {0}, 3, server_learning_rate=0.0)


# --- wired into the deletion path ---------------------------------------------------------------


def test_the_deletion_path_applies_the_calibrated_rule_by_default_on_a_run_without_noise(synthetic_run):
    run, client = synthetic_run, 3
    assert UnlearningSettings().rule == "auto"
    with run.open() as repository:
        rounds = repository.list_rounds(run.run_id)
        stored = [(r.round_index, r.ciphertext) for r in repository.iter_sealed_records(run.run_id, client)]
        commitment = repository.get_client(run.run_id, client).history_commitment
        opened = [(o.round_index, o.update) for o in open_history(
            stored, history_secret=run.secrets[client], commitment=commitment, run_id=run.run_id,
            client_id=client, config=run.record_config())]
        weights = (RoundWeights(r.round_index, r.client_weights) for r in rounds)
        observed = observed_rounds(join_round_history(weights, {client: iter(opened)}),
                                   repository.iter_aggregates(run.run_id, "mean_update"))
        before = medu_correction(repository, run.run_id, client, run.secrets[client])
        old = medu_correction(repository, run.run_id, client, run.secrets[client], rule="fast-fedul")
        model, _ = current_model(repository, run.run_id)
        direct = calibrated_correction(observed, {client}, model.shape[0])
        outcome = unlearn_client(repository, sign_deletion_request(run.identities[client], run.secrets[client],
                                                                   run.run_id, client))
        checkpoint = repository.load_checkpoint(run.run_id)
    assert outcome.model_version == checkpoint.info.model_version
    assert checkpoint.info.details["rule"] == "auto" and checkpoint.info.details["rule_applied"] == "calibrated"
    assert before.rule == "calibrated" and old.rule == "fast-fedul"
    expected = (model.astype(np.float64) + direct).astype(np.float32)
    assert np.array_equal(before.parameters, expected)
    assert np.array_equal(checkpoint.tensors["flat"], expected)
    assert not np.allclose(old.parameters, expected)  # the two rules really differ here
    assert len(rounds) == ROUNDS


def test_an_unknown_rule_is_refused():
    with pytest.raises(UnlearningConfigurationError, match="rule"):
        UnlearningSettings(rule="fixed-shrink")
    with pytest.raises(UnlearningConfigurationError, match="rule"):
        correction_rule_for("fixed-shrink", [])


def test_auto_falls_back_to_the_fixed_shrink_when_a_round_carried_dp_noise(synthetic_run):
    with synthetic_run.open() as repository:
        rounds = repository.list_rounds(synthetic_run.run_id)
    assert correction_rule_for("auto", rounds) == "calibrated"
    noisy = [dataclasses.replace(info, parameters={**info.parameters, "noise": "distributed"}) if i == 4 else info
             for i, info in enumerate(rounds)]
    assert correction_rule_for("auto", noisy) == "fast-fedul"
    aborted = [dataclasses.replace(info, status="aborted") if i == 4 else info for i, info in enumerate(noisy)]
    assert correction_rule_for("auto", aborted) == "calibrated"  # its noise entered no model
    assert correction_rule_for("calibrated", noisy) == "calibrated"
    assert correction_rule_for("fast-fedul", rounds) == "fast-fedul"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_record_errors_move_the_correction_by_at_most_the_stated_bound(seed):
    """The bound of docs/UNLEARNING.md: coding errors ε_t in the client's records move e_T by at most
    η·Σ_t (c_t·‖ε_t‖ + ‖e_t‖·‖δY_t‖_F / (2·√λ_t)), c_t = p_t/(1 − p_t): the drive's share plus the
    secant fit's (λ_t its ridge, δY_t the errors' effect on the window's responses), since each
    (I + η·J_t) is a contraction. Without a window only the first term remains, with equality
    for errors along one direction."""
    rng = np.random.default_rng(seed)
    rate, settings = 0.5, CorrectionSettings()
    curvatures, optima = _quadratic_federation(rng, clients=5)
    survivors = _survivors(rng, 30, len(optima), drop=0.2)
    final, history = _train(curvatures, optima, 30, survivors, start=rng.normal(size=6) * 5)
    d = final.shape[0]
    errors = [rng.normal(size=d) * 1e-2 for _ in history]
    noisy = [(t, w, {**u, TARGET: u[TARGET] + errors[t]}, g) for t, w, u, g in history]
    share = [w[TARGET] / (1.0 - w[TARGET]) for _, w, _, _ in history]
    moved = np.linalg.norm(calibrated_correction(_observed(noisy), {TARGET}, d, server_learning_rate=rate)
                           - calibrated_correction(_observed(history), {TARGET}, d, server_learning_rate=rate))
    bound = 0.0
    for t in range(len(history)):
        bound += rate * share[t] * np.linalg.norm(errors[t])
        pairs = range(max(1, t - settings.window + 1), t + 1)  # pair k: rounds k − 1 and k
        if not pairs:
            continue
        state = calibrated_correction(_observed(history[:t]), {TARGET}, d, server_learning_rate=rate) if t else 0
        steps = np.stack([rate * history[k - 1][3] for k in pairs])
        ridge = settings.ridge * float(np.sum(steps * steps)) / len(pairs)
        response_errors = np.stack([share[k] * errors[k] - share[k - 1] * errors[k - 1] for k in pairs])
        bound += rate * np.linalg.norm(state) * np.linalg.norm(response_errors) / (2.0 * np.sqrt(ridge))
    assert 0.0 < moved <= bound
    no_window = CorrectionSettings(window=0)
    along = [(t, w, {**u, TARGET: u[TARGET] + 1e-2 * np.eye(d)[0]}, g) for t, w, u, g in history]
    moved = np.linalg.norm(calibrated_correction(_observed(along), {TARGET}, d, server_learning_rate=rate,
                                                 settings=no_window)
                           - calibrated_correction(_observed(history), {TARGET}, d, server_learning_rate=rate,
                                                   settings=no_window))
    assert moved == pytest.approx(rate * sum(share) * 1e-2, rel=1e-9)
