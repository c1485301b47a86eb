"""Exact integer noise samplers: coins, discrete Gaussian, Poisson, Skellam.

Statistical checks run on fixed seeds of ``DeterministicTestSource`` (so they are deterministic);
each threshold is stated with the false-failure rate it would have on a fresh random seed.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privacy import exact_sampling as es
from privacy.discrete_gaussian import (
    discrete_gaussian_delta,
    discrete_gaussian_parameters,
    discrete_gaussian_pmf,
    rational_ceiling,
    sample_discrete_gaussian,
)
from privacy.errors import RandomnessError, SamplerParameterError
from privacy.randomness import DeterministicTestSource, SystemRandomSource
from privacy.skellam import (
    poisson_parameters,
    poisson_pmf,
    sample_poisson,
    sample_skellam,
    skellam_pmf,
)

# Chi-square p-value threshold: a correct sampler fails one test with probability 1e-4.
P_VALUE_FLOOR = 1e-4
# |z| threshold for single-proportion checks: false failure about 7e-6 per check.
Z_LIMIT = 4.5


def _chi_square_pvalue(samples: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> float:
    """Pearson chi-square of integer samples against a pmf on ``support`` (mass outside it and
    cells with expectation < 20 pooled into neighbours, so the asymptotics hold)."""
    n = samples.size
    lo, hi = int(support[0]), int(support[-1])
    counts = np.bincount(np.clip(samples, lo, hi) - lo, minlength=hi - lo + 1).astype(float)
    probs = pmf.astype(float).copy()
    probs[0] += max(0.0, 1.0 - probs.sum()) / 2  # the clipped tails: both sides pooled at the ends
    probs[-1] += max(0.0, 1.0 - probs.sum())
    observed, expected = [], []
    acc_o = acc_e = 0.0
    for o, p in zip(counts, probs * n):
        acc_o += o
        acc_e += p
        if acc_e >= 20:
            observed.append(acc_o)
            expected.append(acc_e)
            acc_o = acc_e = 0.0
    observed[-1] += acc_o
    expected[-1] += acc_e
    observed, expected = np.array(observed), np.array(expected)
    expected *= observed.sum() / expected.sum()
    return float(stats.chisquare(observed, expected).pvalue)


@nb.njit
def _coin_frequency(words, numerator, denominator, trials):
    cursor = np.zeros(2, dtype=np.int64)
    hits = 0
    for _ in range(trials):
        hits += es.bernoulli_exp(words, cursor, numerator, denominator)
    return hits, cursor[1]


@pytest.mark.parametrize("numerator,denominator", [(0, 1), (1, 3), (1, 1), (5, 2), (7, 1), (123456789, 98765432)])
def test_exact_exp_coin_has_probability_exp_minus_gamma(numerator, denominator):
    words = DeterministicTestSource(b"coin").words(1 << 20)
    trials = 100_000
    hits, exhausted = _coin_frequency(words, numerator, denominator, trials)
    assert exhausted == 0
    p = math.exp(-numerator / denominator)
    z = (hits - trials * p) / math.sqrt(trials * p * (1 - p)) if 0 < p < 1 else 0.0
    assert abs(z) < Z_LIMIT
    if p == 1.0:
        assert hits == trials


@nb.njit
def _square_coin_frequency(words, a, d, trials):
    cursor = np.zeros(2, dtype=np.int64)
    hits = 0
    for _ in range(trials):
        hits += es.bernoulli_exp_square_ratio(words, cursor, a, d)
    return hits


@pytest.mark.parametrize("a,d", [(3, 10), (1 << 20, 1 << 41), (3_000_000_000, 9 * 10**18 // 2)])
def test_exp_square_coin_matches_exp_of_minus_a_squared_over_d(a, d):
    words = DeterministicTestSource(b"square-coin").words(1 << 20)
    trials = 100_000
    hits = _square_coin_frequency(words, a, d, trials)
    p = math.exp(-(a * a) / d)
    z = (hits - trials * p) / math.sqrt(trials * p * (1 - p))
    assert abs(z) < Z_LIMIT


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, (1 << 63) - 1), d=st.integers(1, (1 << 62) - 1))
def test_divmod_square_is_exact_beyond_64_bits(a, d):
    high, low, rest = es.divmod_square(a, d)
    quotient = (int(high) << 64) | int(low)
    assert (quotient, int(rest)) == divmod(a * a, d)


@nb.njit
def _uniform_draws(words, bound, count):
    cursor = np.zeros(2, dtype=np.int64)
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        out[i] = es.uniform_below(words, cursor, bound)
    return out


def test_uniform_below_is_uniform_on_an_awkward_range():
    draws = _uniform_draws(DeterministicTestSource(b"uniform").words(1 << 16), 37, 50_000)
    assert draws.min() == 0 and draws.max() == 36
    counts = np.bincount(draws, minlength=37)
    assert stats.chisquare(counts).pvalue > P_VALUE_FLOOR


def test_spent_stream_makes_every_coin_fail_instead_of_spinning():
    words = np.zeros(1, dtype=np.uint64)
    cursor = np.array([64, 0], dtype=np.int64)
    assert not es.bernoulli_exp_minus_one(words, cursor)
    assert cursor[1] == 1
    assert not es.bernoulli_ratio(words, cursor, 5, 5)


def test_samples_do_not_depend_on_where_buffers_end():
    """The driver rewinds an unfinished sample, so tiny and huge buffers give the same output."""
    for kernel_args in (
        (es.discrete_gaussian_kernel, discrete_gaussian_parameters(2.5)),
        (es.poisson_kernel, poisson_parameters(40.25)),
    ):
        kernel, params = kernel_args
        if kernel is es.discrete_gaussian_kernel:
            args = (params.variance_numerator, params.variance_denominator, params.laplace_scale, 1 << 40)
            resolve = None
        else:
            args = params.kernel_arguments()
            resolve = params.resolve
        outputs = [
            es.run_sampler(kernel, args, 3000, DeterministicTestSource(b"rewind"), words_per_sample, resolve)
            for words_per_sample in (0.01, 1.0, 500.0)
        ]
        assert np.array_equal(outputs[0], outputs[1])
        assert np.array_equal(outputs[0], outputs[2])


def test_rational_ceiling_never_rounds_the_variance_down():
    for value in (0.015625, 1.0, 2.25, math.pi, 1e6 + 0.1, 2.0**30 - 1):
        numerator, denominator = rational_ceiling(value)
        assert numerator * 1.0 / denominator >= value
        assert numerator / denominator <= value * (1 + 2.0**-20)


@pytest.mark.parametrize("sigma", [0.6, 1.5, 3.0, 20.0])
def test_discrete_gaussian_matches_its_pmf(sigma):
    samples = sample_discrete_gaussian(sigma, 200_000, DeterministicTestSource(f"dg-{sigma}".encode()))
    half = int(8 * sigma) + 3
    support = np.arange(-half, half + 1)
    assert _chi_square_pvalue(samples, support, discrete_gaussian_pmf(support, sigma)) > P_VALUE_FLOOR


@pytest.mark.parametrize("sigma", [1000.0, 30000.0])
def test_large_discrete_gaussian_moments_and_tails(sigma):
    n = 200_000
    samples = sample_discrete_gaussian(sigma, n, DeterministicTestSource(f"dg-big-{sigma}".encode()))
    # For sigma >= 1 the discrete Gaussian's variance equals sigma^2 to within 1e-100.
    assert abs(samples.mean()) < Z_LIMIT * sigma / math.sqrt(n)
    assert abs(samples.var() / sigma**2 - 1) < Z_LIMIT * math.sqrt(2 / n)
    tail = np.mean(np.abs(samples) > 2 * sigma)
    p = 2 * stats.norm.sf(2.0)
    assert abs(tail - p) < Z_LIMIT * math.sqrt(p * (1 - p) / n)


def test_discrete_gaussian_exact_delta_oracle():
    # Canonne, Kamath, Steinke: sigma = 3, Delta = 1, eps = 0.5.
    assert discrete_gaussian_delta(3.0, 1, 0.5) == pytest.approx(0.0119157, abs=5e-7)


@pytest.mark.parametrize("mean", [0.001, 0.3, 4.5, 20.5, 1000.7, 200_000.0])
def test_poisson_matches_its_pmf(mean):
    samples = sample_poisson(mean, 200_000, DeterministicTestSource(f"pois-{mean}".encode()))
    sd = math.sqrt(mean)
    support = np.arange(max(0, int(mean - 7 * sd) - 2), int(mean + 7 * sd) + 4)
    assert _chi_square_pvalue(samples, support, poisson_pmf(support, mean)) > P_VALUE_FLOOR


@pytest.mark.parametrize("mean", [3.3, 20.5])
def test_exact_fallback_decisions_keep_poisson_exact(mean):
    """With 4 decision bits most window coins are settled by the exact-rational fallback."""
    params = poisson_parameters(mean, decision_bits=4)
    calls = []

    def counting_resolve(words, position, y, u, side):
        calls.append(side)
        return params.resolve(words, position, y, u, side)

    samples = es.run_sampler(
        es.poisson_kernel,
        params.kernel_arguments(),
        100_000,
        DeterministicTestSource(f"fallback-{mean}".encode()),
        params.words_per_draw(),
        counting_resolve,
    )
    assert len(calls) > 10_000
    assert {0, 1} <= set(calls)
    support = np.arange(0, int(mean + 8 * math.sqrt(mean)) + 4)
    assert _chi_square_pvalue(samples, support, poisson_pmf(support, mean)) > P_VALUE_FLOOR


@pytest.mark.parametrize("mu", [1.0, 50.0, 1000.0])
def test_skellam_matches_its_pmf(mu):
    samples = sample_skellam(mu, 200_000, DeterministicTestSource(f"sk-{mu}".encode()))
    half = int(7 * math.sqrt(mu)) + 3
    support = np.arange(-half, half + 1)
    assert _chi_square_pvalue(samples, support, skellam_pmf(support, mu)) > P_VALUE_FLOOR


def test_sum_of_client_skellam_shares_is_the_central_skellam():
    """Ten clients adding Sk(mu/10) give exactly Sk(mu) in the secure sum."""
    mu, clients, n = 300.0, 10, 50_000
    source = DeterministicTestSource(b"shares")
    total = sum(sample_skellam(mu / clients, n, source) for _ in range(clients))
    half = int(7 * math.sqrt(mu))
    support = np.arange(-half, half + 1)
    assert _chi_square_pvalue(total, support, skellam_pmf(support, mu)) > P_VALUE_FLOOR


def test_system_source_draws_differ_and_have_the_declared_type():
    a = sample_skellam(100.0, 1000)
    b = sample_discrete_gaussian(10.0, 1000, SystemRandomSource())
    assert a.dtype == np.int64 and b.dtype == np.int64 and a.shape == b.shape == (1000,)
    assert not np.array_equal(a, sample_skellam(100.0, 1000))


def test_seeded_source_is_reproducible_and_seed_sensitive():
    x = sample_discrete_gaussian(4.0, 500, DeterministicTestSource(7))
    assert np.array_equal(x, sample_discrete_gaussian(4.0, 500, DeterministicTestSource(7)))
    assert not np.array_equal(x, sample_discrete_gaussian(4.0, 500, DeterministicTestSource(8)))


@pytest.mark.parametrize(
    "call",
    [
        lambda: sample_discrete_gaussian(0.0, 10),
        lambda: sample_discrete_gaussian(float("nan"), 10),
        lambda: sample_discrete_gaussian(2.0**16, 10),
        lambda: sample_discrete_gaussian(True, 10),
        lambda: sample_discrete_gaussian(1.0, -1),
        lambda: sample_discrete_gaussian(1.0, 2.5),
        lambda: sample_skellam(-1.0, 10),
        lambda: sample_skellam(2.0**33, 10),
        lambda: sample_poisson(1.0, 10, decision_bits=63),
    ],
)
def test_out_of_range_parameters_are_refused(call):
    with pytest.raises(SamplerParameterError):
        call()


def test_bad_sources_and_seeds_are_refused():
    with pytest.raises(RandomnessError):
        sample_skellam(1.0, 10, source=object())
    with pytest.raises(RandomnessError):
        DeterministicTestSource(-1)
    with pytest.raises(RandomnessError):
        SystemRandomSource().words(-5)


def test_the_chi_square_check_detects_a_two_percent_scale_error():
    """Power check for the tests above: a sampler 2% off in scale would be caught."""
    samples = sample_discrete_gaussian(3.0, 200_000, DeterministicTestSource(b"power"))
    support = np.arange(-30, 31)
    assert _chi_square_pvalue(samples, support, discrete_gaussian_pmf(support, 3.0 * 1.02)) < 1e-6
    samples = sample_skellam(50.0, 200_000, DeterministicTestSource(b"power"))
    support = np.arange(-60, 61)
    assert _chi_square_pvalue(samples, support, skellam_pmf(support, 50.0 * 1.02**2)) < 1e-6


def test_every_supported_scale_fits_exact_64_bit_arithmetic():
    """Parameter construction checks its integer bounds and raises rather than overflow."""
    for sigma in np.geomspace(2.0**-6, 2.0**15, 60):
        params = discrete_gaussian_parameters(float(sigma))
        assert params.variance >= float(sigma) ** 2
    for mean in np.geomspace(2.0**-20, 2.0**30, 60):
        params = poisson_parameters(float(mean))
        assert params.exact_mean >= float(mean)
        assert params.window_low[params.below] == 1 << params.decision_bits
        assert np.all(params.window_low <= params.window_high)
