"""Empirical audits: published one-run ceilings, and the CI audit of every noise primitive.

The CI audit (docs/ALGORITHMS.md §3.7 requirement) runs the implemented local release 200,000
times per side on x = +C e_1 and x' = -C e_1 with fixed seeds. A correct mechanism must give
epsilon_lb <= claimed epsilon (a sound 95% bound: a random seed would fail this with probability
<= 5%, here the margin is ~2x); a mechanism calibrated for sensitivity C instead of 2C, or one that
skips the noise, must give epsilon_lb > claimed, or the build fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from privacy.accounting import recompute_epsilon
from privacy.audit import (
    audit_release,
    canary_audit,
    canary_audit_over_guesses,
    clopper_pearson_epsilon,
    clopper_pearson_upper,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)
from privacy.errors import AuditError
from privacy.mechanisms import local_noise_for, release_local
from privacy.randomness import DeterministicTestSource

DELTA = 1e-5
CLAIMED_EPSILON = 2.0
CLIP = 4  # integer lattice units
DIMENSION = 4
RUNS = 200_000


@pytest.mark.parametrize("runs,ceiling", [(100, 3.49), (1000, 5.81), (10_000, 8.11)])
def test_one_run_ceilings_with_every_guess_right(runs, ceiling):
    assert one_run_epsilon_lower_bound(runs, runs, runs, 0.0) == pytest.approx(ceiling, abs=0.005)


def test_one_run_randomized_response_at_epsilon_two():
    m = 5000
    expected_correct = round(m * math.exp(2) / (1 + math.exp(2)))
    assert one_run_epsilon_lower_bound(m, m, expected_correct, 0.0) == pytest.approx(1.90, abs=0.05)
    # Simulated: canaries in with probability 1/2, the "model" reveals each bit by RR at eps = 2.
    rng = np.random.default_rng(20231)  # not secret: the auditor's own coin flips
    included = rng.random(m) < 0.5
    keep = rng.random(m) < math.exp(2) / (1 + math.exp(2))
    revealed = np.where(keep, included, ~included)
    scores = revealed + 0.01 * rng.random(m)
    audit = canary_audit(scores, included, int(revealed.sum()), m - int(revealed.sum()), 0.0)
    assert audit.guesses == m
    assert 1.75 <= audit.epsilon_lower_bound <= 2.0


def test_the_delta_term_is_kept():
    without = one_run_p_value(1000, 200, 190, 2.0, 0.0)
    with_delta = one_run_p_value(1000, 200, 190, 2.0, 1e-5)
    assert with_delta > without
    assert one_run_epsilon_lower_bound(1000, 200, 190, 1e-5) < one_run_epsilon_lower_bound(1000, 200, 190, 0.0)


def test_clopper_pearson_upper_bound_definition():
    # Zero failures: the bound solves (1 - p)^n = significance.
    assert clopper_pearson_upper(0, 1000, 0.05) == pytest.approx(1 - 0.05 ** (1 / 1000), rel=1e-9)
    bound = float(clopper_pearson_upper(30, 1000, 0.05))
    assert stats.binom.cdf(30, 1000, bound) == pytest.approx(0.05, rel=1e-6)
    assert clopper_pearson_upper(1000, 1000, 0.05) == 1.0


def _audit(mechanism: str, calibrated_sensitivity: float, label: bytes, *, skip_noise: bool = False):
    noise = local_noise_for(mechanism, CLAIMED_EPSILON, DELTA, calibrated_sensitivity, DIMENSION)
    claimed = recompute_epsilon([noise.event()], DELTA)
    assert claimed <= CLAIMED_EPSILON
    source = DeterministicTestSource(b"ci-audit-" + label)

    def release(coordinates: np.ndarray) -> np.ndarray:
        if skip_noise:
            return coordinates.copy()
        return release_local(coordinates, noise, source, allow_insecure_source=True).noised

    std = noise.scale if mechanism == "discrete_gaussian" else math.sqrt(noise.scale)
    return audit_release(release, CLIP, DIMENSION, RUNS, DELTA, CLAIMED_EPSILON, std)


@pytest.mark.parametrize("mechanism", ["discrete_gaussian", "skellam"])
def test_ci_audit_passes_the_correct_local_mechanism(mechanism):
    result = _audit(mechanism, 2 * CLIP, b"correct-" + mechanism.encode())
    assert not result.flagged
    assert result.epsilon_lower_bound <= CLAIMED_EPSILON
    assert result.epsilon_lower_bound > 0.3 * CLAIMED_EPSILON  # the audit has teeth


@pytest.mark.parametrize("mechanism", ["discrete_gaussian", "skellam"])
def test_ci_audit_flags_sensitivity_c_instead_of_2c(mechanism):
    result = _audit(mechanism, CLIP, b"half-sensitivity-" + mechanism.encode())
    assert result.flagged, f"mis-calibrated {mechanism} went unflagged: eps_lb={result.epsilon_lower_bound}"


def test_ci_audit_flags_skipped_noise():
    result = _audit("discrete_gaussian", 2 * CLIP, b"no-noise", skip_noise=True)
    assert result.flagged
    assert result.epsilon_lower_bound > 4 * CLAIMED_EPSILON


def test_holdout_threshold_also_separates_correct_from_broken():
    rng = np.random.default_rng(5)
    sigma = 10.0
    correct = clopper_pearson_epsilon(rng.normal(1, sigma, 100_000), rng.normal(-1, sigma, 100_000), DELTA, 1.0,
                                      method="holdout")
    broken = clopper_pearson_epsilon(rng.normal(1, 0.2, 100_000), rng.normal(-1, 0.2, 100_000), DELTA, 1.0,
                                     method="holdout")
    assert not correct.flagged and broken.flagged


def test_audit_inputs_are_validated():
    with pytest.raises(AuditError):
        clopper_pearson_epsilon(np.zeros(10), np.zeros(10), DELTA, 1.0)  # Bonferroni needs a grid
    with pytest.raises(AuditError):
        clopper_pearson_epsilon(np.zeros(10), np.zeros(9), DELTA, 1.0, thresholds=[0.0])
    with pytest.raises(AuditError):
        one_run_epsilon_lower_bound(10, 11, 5, 0.0)
    with pytest.raises(AuditError):
        canary_audit(np.zeros(4), np.array([1, 0, 1, 0]), 1, 1, 0.0)
    with pytest.raises(AuditError):
        audit_release(lambda z: z, 0, 4, 10, DELTA, 1.0, 1.0)


def test_canary_audit_over_guesses_is_the_best_bonferroni_share():
    rng = np.random.default_rng(7)
    included = rng.random(400) < 0.5
    scores = rng.normal(size=400) + 3.0 * included
    counts = (20, 40, 80)
    combined = canary_audit_over_guesses(scores, included, counts, 1e-5, 0.05)
    each = [canary_audit(scores, included, k, k, 1e-5, 0.05 / 3) for k in counts]
    assert combined.epsilon_lower_bound == max(a.epsilon_lower_bound for a in each) > 0
    assert combined.significance == 0.05
    # splitting the significance costs: one guess count alone at the full 0.05 certifies more
    best = max(each, key=lambda a: a.epsilon_lower_bound)
    alone = canary_audit(scores, included, best.guesses // 2, best.guesses // 2, 1e-5, 0.05)
    assert alone.epsilon_lower_bound > combined.epsilon_lower_bound


def test_canary_audit_over_guesses_rejects_bad_grids():
    with pytest.raises(AuditError):
        canary_audit_over_guesses(np.zeros(4), np.zeros(4, dtype=bool), (), 1e-5)
    with pytest.raises(AuditError):
        canary_audit_over_guesses(np.zeros(4), np.zeros(4, dtype=bool), (0,), 1e-5)
