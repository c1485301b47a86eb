"""Noise calibration: published tables, round trips, and the rounding-inflated sensitivities."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.calibration import (
    analytic_gaussian_delta,
    analytic_gaussian_epsilon,
    analytic_gaussian_sigma,
    calibrate_ddgauss_local_sigma,
    calibrate_discrete_gaussian_sigma,
    calibrate_skellam_mu,
    classical_gaussian_sigma,
    ddgauss_epsilon,
    discrete_gaussian_epsilon,
    local_l2_sensitivity,
    rounded_l1_bound,
    rounded_l2_bound,
    skellam_epsilon,
)
from privacy.discrete_gaussian import discrete_gaussian_delta
from privacy.errors import CalibrationError

DELTA = 1e-5


@pytest.mark.parametrize(
    "epsilon,classical,analytic",
    [(0.5, 9.690, 7.032), (1.0, 4.845, 3.731), (2.0, 2.422, 1.994), (4.0, 1.211, 1.081), (8.0, 0.606, 0.600)],
)
def test_gaussian_sigma_table(epsilon, classical, analytic):
    assert classical_gaussian_sigma(epsilon, DELTA) == pytest.approx(classical, abs=5e-4)
    assert analytic_gaussian_sigma(epsilon, DELTA) == pytest.approx(analytic, abs=5e-4)


def test_analytic_sigma_agrees_with_dp_accounting():
    import dp_accounting

    for epsilon in (0.3, 1.0, 3.0, 10.0):
        assert analytic_gaussian_sigma(epsilon, DELTA) == pytest.approx(
            dp_accounting.get_sigma_gaussian(epsilon, DELTA), rel=1e-3
        )


def test_continuous_and_discrete_one_dimensional_delta_values():
    assert analytic_gaussian_delta(3.0, 0.5, 1.0) == pytest.approx(0.0124182, abs=5e-7)
    discrete = discrete_gaussian_delta(3.0, 1, 0.5)
    assert discrete == pytest.approx(0.0119157, abs=5e-7)
    assert discrete < analytic_gaussian_delta(3.0, 0.5, 1.0)


@settings(max_examples=40, deadline=None)
@given(epsilon=st.floats(0.05, 20.0), delta=st.floats(1e-12, 1e-2), sensitivity=st.floats(0.01, 100.0))
def test_analytic_gaussian_round_trip(epsilon, delta, sensitivity):
    sigma = analytic_gaussian_sigma(epsilon, delta, sensitivity)
    assert analytic_gaussian_delta(sigma, epsilon, sensitivity) <= delta
    # The smallest such sigma: 0.1% less noise breaks the target.
    assert analytic_gaussian_delta(sigma * 0.999, epsilon, sensitivity) > delta
    assert analytic_gaussian_epsilon(sigma, delta, sensitivity) == pytest.approx(epsilon, rel=1e-6)


@settings(max_examples=30, deadline=None)
@given(epsilon=st.floats(0.1, 16.0), sensitivity=st.floats(0.5, 1000.0), rounds=st.integers(1, 500))
def test_discrete_gaussian_round_trip_per_round_and_over_rounds(epsilon, sensitivity, rounds):
    sigma = calibrate_discrete_gaussian_sigma(epsilon, DELTA, sensitivity, compositions=rounds)
    assert discrete_gaussian_epsilon(sigma, DELTA, sensitivity, rounds) <= epsilon
    assert discrete_gaussian_epsilon(sigma * (1 - 1e-6), DELTA, sensitivity, rounds) > epsilon * (1 - 1e-5)


@settings(max_examples=30, deadline=None)
@given(epsilon=st.floats(0.1, 16.0), l2=st.floats(1.0, 100.0), dimension=st.integers(1, 10**6), rounds=st.integers(1, 200))
def test_skellam_round_trip(epsilon, l2, dimension, rounds):
    l1 = min(math.sqrt(dimension) * l2, l2 * l2)
    mu = calibrate_skellam_mu(epsilon, DELTA, l2, l1, compositions=rounds)
    assert skellam_epsilon(mu, DELTA, l2, l1, rounds) <= epsilon
    assert skellam_epsilon(mu * (1 - 1e-5), DELTA, l2, l1, rounds) > epsilon * (1 - 1e-4)


def test_skellam_needs_at_least_the_gaussian_variance():
    """The Skellam bound adds a discretisation surcharge to the Gaussian's alpha D^2/(2 mu)."""
    mu = calibrate_skellam_mu(1.0, DELTA, 2.0, 4.0)
    sigma = calibrate_discrete_gaussian_sigma(1.0, DELTA, 2.0)
    assert mu >= sigma**2
    assert mu == pytest.approx(sigma**2, rel=0.1)


def test_ddgauss_round_trip_and_central_equivalence():
    sigma_local = calibrate_ddgauss_local_sigma(2.0, DELTA, 10.0, 100.0, 1000, clients=25, compositions=10)
    assert ddgauss_epsilon(sigma_local, DELTA, 10.0, 100.0, 1000, 25, 10) <= 2.0
    central = calibrate_discrete_gaussian_sigma(2.0, DELTA, 10.0, compositions=10)
    # With sigma_l well above 1 the tau term vanishes: sqrt(n) sigma_l is the central sigma, up
    # to DDGauss reading fractional orders at the next integer (never less noise).
    assert central <= math.sqrt(25) * sigma_local <= central * 1.001


def test_more_rounds_need_more_noise():
    sigmas = [calibrate_discrete_gaussian_sigma(4.0, DELTA, 1.0, compositions=t) for t in (1, 10, 100)]
    assert sigmas[0] < sigmas[1] < sigmas[2]


def test_rounded_sensitivity_formulas():
    # beta = 0: c + sqrt(d).
    assert rounded_l2_bound(10.0, 100) == pytest.approx(20.0)
    # Conditional rounding: sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2)).
    beta = math.exp(-0.5)
    expected = math.sqrt(100 + 25 + 1.0 * (10 + 5))
    assert rounded_l2_bound(10.0, 100, beta) == pytest.approx(expected)
    assert rounded_l2_bound(10.0, 100, beta) < rounded_l2_bound(10.0, 100)
    assert local_l2_sensitivity(10.0, 100, beta) == pytest.approx(2 * expected)
    assert rounded_l1_bound(3.0, 100) == pytest.approx(9.0)
    assert rounded_l1_bound(30.0, 100) == pytest.approx(300.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: analytic_gaussian_sigma(0.0, DELTA),
        lambda: analytic_gaussian_sigma(1.0, 1.0),
        lambda: analytic_gaussian_sigma(float("nan"), DELTA),
        lambda: calibrate_discrete_gaussian_sigma(1.0, DELTA, -1.0),
        lambda: calibrate_skellam_mu(1.0, DELTA, 1.0, 1.0, compositions=0),
        lambda: calibrate_ddgauss_local_sigma(1.0, DELTA, 1.0, 1.0, 10, clients=True),
        lambda: rounded_l2_bound(1.0, 10, beta=1.0),
    ],
)
def test_invalid_calibration_requests_are_refused(call):
    with pytest.raises(CalibrationError):
        call()
