"""Compressors: unbiasedness, variance factors ω and ω_av, bit counts, shared randomness."""

import math

import numpy as np
import pytest

from federation.compressors import (
    FLOAT_BITS,
    Identity,
    LatticeCompressor,
    Natural,
    RandK,
    shared_coins,
    shared_rand_k_indices,
)
from federation.learning_errors import CompressionError

DIMENSION = 24


def fixed_vector() -> np.ndarray:
    # Entries of mixed signs and magnitudes over several binades.
    return np.random.default_rng(123).standard_normal(DIMENSION) * np.logspace(-2, 1, DIMENSION)


def draws(compressor, x: np.ndarray, count: int, rng: np.random.Generator, batch: int = 50) -> np.ndarray:
    """(count, d) independent compressions of x, ``batch`` clients per call (one per call for a
    shared-randomness compressor, whose rows in one call are identical)."""
    if getattr(compressor, "shared", False):
        batch = 1
    rows = [compressor.compress(np.tile(x, (batch, 1)), rng) for _ in range(count // batch)]
    return np.concatenate(rows)


COMPRESSORS = [
    pytest.param(RandK(6, shared=True), id="rand-k-shared"),
    pytest.param(RandK(6, shared=False), id="rand-k-independent"),
    pytest.param(Natural(), id="natural"),
    pytest.param(LatticeCompressor("E8", resolution=3.0), id="lattice-E8"),
    pytest.param(LatticeCompressor("Z", resolution=3.0, rotate=False), id="lattice-Z-unrotated"),
]


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_compressor_is_unbiased(compressor):
    # z-test per coordinate against the empirical standard error; a false failure needs some
    # coordinate beyond 5 standard errors: probability < 24 * 6e-7 ~ 1.4e-5 per run (CLT).
    x = fixed_vector()
    count = 3000 if isinstance(compressor, LatticeCompressor) else 20000
    samples = draws(compressor, x, count, np.random.default_rng(7))
    standard_error = samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
    z = np.abs(samples.mean(axis=0) - x) / np.maximum(standard_error, 1e-300)
    assert z.max() < 5.0, z.max()


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_relative_variance_matches_omega(compressor):
    # E‖C(x) − x‖² = ω‖x‖² for rand-k (exactly) and for the lattice with all clients at the
    # common scale (dither error is uniform on the Voronoi cell whatever x is); natural
    # compression meets its bound ω = 1/8 with room. Tolerances are > 6 Monte Carlo standard errors.
    x = fixed_vector()
    count = 3000 if isinstance(compressor, LatticeCompressor) else 20000
    samples = draws(compressor, x, count, np.random.default_rng(11))
    errors = ((samples - x) ** 2).sum(axis=1) / (x @ x)
    spread = 6 * errors.std(ddof=1) / math.sqrt(errors.size)
    omega = compressor.omega(DIMENSION)
    if isinstance(compressor, Natural):
        assert errors.mean() < omega
    else:
        assert abs(errors.mean() - omega) < spread + 1e-12, (errors.mean(), omega)


def test_natural_compression_attains_omega_one_eighth_at_four_thirds():
    # Variance of randomized rounding of |t| = (4/3)·2^a is (1/3)(2/3)·4^a = t²/8: the worst case.
    x = (4.0 / 3.0) * 2.0 ** np.arange(-5, 5, dtype=np.float64)
    samples = draws(Natural(), x, 40000, np.random.default_rng(3), batch=100)
    relative = ((samples - x) ** 2).sum(axis=1).mean() / (x @ x)
    assert abs(relative - 1 / 8) < 0.003
    # Outputs are signed powers of two: exactly representable with sign + exponent.
    mantissa, _ = np.frexp(np.abs(samples[samples != 0]))
    assert np.all(mantissa == 0.5)


@pytest.mark.parametrize(
    ("compressor", "correlated"),
    [(RandK(6, shared=True), True), (RandK(6, shared=False), False), (Natural(), False),
     (LatticeCompressor("E8", resolution=3.0, rotate=False), False)],
    ids=["rand-k-shared", "rand-k-independent", "natural", "lattice"],
)
def test_average_of_clients_has_variance_omega_average(compressor, correlated):
    # Shared randomness does not average out (ω_av = ω); independent compressions do (ω/n).
    clients, x = 8, fixed_vector()
    rng = np.random.default_rng(5)
    repeats = 800 if isinstance(compressor, LatticeCompressor) else 3000
    means = np.stack([compressor.compress(np.tile(x, (clients, 1)), rng).mean(axis=0) for _ in range(repeats)])
    relative = ((means - x) ** 2).sum(axis=1).mean() / (x @ x)
    omega_average = compressor.omega_average(DIMENSION, clients)
    expected = compressor.omega(DIMENSION) / (1 if correlated else clients)
    assert omega_average == pytest.approx(expected)
    if isinstance(compressor, Natural):
        assert relative < 1.1 * omega_average
    else:
        assert relative == pytest.approx(omega_average, rel=0.12)


def test_shared_rand_k_keeps_the_same_coordinates_for_every_client_and_scales_by_d_over_k():
    x = np.arange(1.0, DIMENSION + 1)
    out = RandK(6, shared=True).compress(np.tile(x, (5, 1)), np.random.default_rng(0))
    kept = out != 0
    assert np.all(kept == kept[0]) and kept[0].sum() == 6
    assert np.allclose(out[kept], (DIMENSION / 6) * np.tile(x, (5, 1))[kept])
    independent = RandK(6, shared=False).compress(np.tile(x, (5, 1)), np.random.default_rng(0))
    assert np.all((independent != 0).sum(axis=1) == 6)
    assert not np.all((independent != 0) == (independent[0] != 0))


def test_uplink_bits_follow_the_table():
    d = 1000
    assert Identity().uplink_bits(d, 10) == FLOAT_BITS * d
    assert RandK(10, shared=True).uplink_bits(d, 10) == 32 * 10
    assert RandK(10, shared=False).uplink_bits(d, 10) == 32 * 10 + 10 * 10  # ⌈log2 1000⌉ = 10
    assert Natural().uplink_bits(d, 10) == 9 * d
    lattice = LatticeCompressor("E8", resolution=2.0)
    codec = lattice.codec(d, 10)
    assert lattice.uplink_bits(d, 10) == codec.config.bits * codec.coordinates(d) + FLOAT_BITS
    assert codec.coordinates(d) == 1024  # rotation pads to a power of two


def test_lattice_secure_sum_decodes_to_the_sum_of_client_estimates():
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((30, 100)) * rng.uniform(0.1, 2.0, (30, 1))
    for rotate in (True, False):
        estimates, total = LatticeCompressor("E8", resolution=1.0, rotate=rotate).compress_with_sum(vectors, rng)
        assert np.allclose(total, estimates.sum(axis=0), atol=1e-9)
        assert not np.allclose(estimates, vectors)  # it did quantize
    zero, zero_sum = LatticeCompressor().compress_with_sum(np.zeros((3, 9)), rng)
    assert not zero.any() and not zero_sum.any()


def test_shared_indices_and_coins_are_reproducible_from_the_round_seed():
    seed = bytes(range(32))
    first = shared_rand_k_indices(seed, 1000, 50)
    assert np.array_equal(first, shared_rand_k_indices(seed, 1000, 50))
    assert first.dtype == np.int64 and np.all(np.diff(first) > 0) and first.size == 50
    assert not np.array_equal(first, shared_rand_k_indices(bytes(32), 1000, 50))
    assert not np.array_equal(first, shared_rand_k_indices(seed, 1000, 50, tensor="other"))
    coins = shared_coins(seed, 0.25, 40000)
    assert np.array_equal(coins, shared_coins(seed, 0.25, 40000))
    # Binomial(40000, 0.25): standard deviation ~87; 6 sigma.
    assert abs(coins.sum() - 10000) < 6 * 87


def test_shared_indices_are_uniform_over_coordinates():
    # Chi-square over 20 coordinates, 400 seeds x 5 indices: 99.99% quantile of chi2(19) ~ 50.
    counts = np.zeros(20)
    for i in range(400):
        counts[shared_rand_k_indices(i.to_bytes(32, "big"), 20, 5)] += 1
    expected = 400 * 5 / 20
    assert ((counts - expected) ** 2 / expected).sum() < 50


def test_compressors_reject_bad_input():
    with pytest.raises(CompressionError, match="k <= d"):
        RandK(30).compress(np.ones((2, 10)), np.random.default_rng(0))
    with pytest.raises(CompressionError, match="2-D"):
        Identity().compress(np.ones(5), np.random.default_rng(0))
    with pytest.raises(CompressionError, match="NaN"):
        Natural().compress(np.full((1, 3), np.nan), np.random.default_rng(0))
    with pytest.raises(CompressionError, match="k must"):
        RandK(0)
    with pytest.raises(CompressionError, match="lattice"):
        LatticeCompressor("Leech")
    with pytest.raises(CompressionError, match="resolution"):
        LatticeCompressor(resolution=-1.0)
    with pytest.raises(CompressionError, match="probability"):
        shared_coins(bytes(32), 1.5, 3)
