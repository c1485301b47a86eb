"""Arithmetic mod 2**b (docs/ALGORITHMS.md §2.6): wrap and lifts are exact inside their ranges, the
headroom and statistical rules size b as documented, and the Voronoi lift is exact on R·V_0."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from secagg.errors import ConfigurationError, LatticeError
from secagg.lattice import LATTICE_NAMES, get_lattice
from secagg.modular import (
    centered_lift,
    norm_bits,
    required_bits,
    statistical_bits,
    voronoi_lift,
    wrap,
)

RNG = np.random.default_rng(11)  # test data only


@pytest.mark.parametrize("bits", [1, 2, 8, 16, 31, 32])
def test_wrap_then_centered_lift_is_exact_inside_the_range(bits):
    half = 1 << (bits - 1)
    z = RNG.integers(-half + 1, half + 1, size=10_000)
    z[:2] = [-half + 1, half]  # both ends of (−2**(b−1), 2**(b−1)]
    wrapped = wrap(z, bits)
    assert wrapped.dtype == np.uint32
    assert int(wrapped.max()) < 1 << bits
    lifted = centered_lift(wrapped, bits)
    assert lifted.dtype == np.int64
    assert np.array_equal(lifted, z)
    # Just outside the range the lift is off by exactly 2**b: −2**(b−1) comes back as +2**(b−1).
    assert centered_lift(wrap(np.array([-half]), bits), bits)[0] == half


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 32),
    values=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30),
)
def test_wrap_is_a_homomorphism_so_sums_of_wraps_wrap_sums(bits, values):
    z = np.array(values, dtype=np.int64)
    modulus_mask = np.uint32((1 << bits) - 1) if bits < 32 else np.uint32(0xFFFFFFFF)
    total = np.uint32(0)
    for value in wrap(z, bits):
        total = np.uint32((int(total) + int(value)) & int(modulus_mask))
    assert int(total) == int(z.sum()) % (1 << bits)
    assert int(wrap(np.array([z.sum()]), bits)[0]) == int(total)


def test_required_bits_is_declearns_headroom_rule():
    for max_abs, clients in [(0, 1), (1, 1), (1, 2), (127, 100), (128, 100), (1000, 1000), (2**20, 3)]:
        expected = math.ceil(math.log2(max_abs + 1)) + 1 + math.ceil(math.log2(clients))
        assert required_bits(max_abs, clients) == expected
    assert required_bits(127, 100) == 15


@settings(max_examples=100, deadline=None)
@given(max_abs=st.integers(0, 2**30), clients=st.integers(1, 10_000))
def test_required_bits_never_lets_the_sum_wrap(max_abs, clients):
    bits = required_bits(max_abs, clients)
    assert clients * max_abs < 1 << (bits - 1)  # |Σz| < 2**(b−1): the centred lift is exact


def test_statistical_bits_reproduces_the_documented_7_14_sigma():
    # docs/ALGORITHMS.md §2.6: overflow 1e−6 over d' = 2**20 coordinates needs R/2 >= 7.14·σ_S.
    for sigma, bits in [(8192 / 7.137 * 0.999, 14), (8192 / 7.137 * 1.001, 15)]:
        assert statistical_bits(sigma, 2**20, 1e-6) == bits
    # TFF's per-coordinate 1e−4 gives 3.9·σ_S.
    assert statistical_bits(1024 / 3.891 * 0.999, 1, 1e-4) == 11
    assert statistical_bits(1024 / 3.891 * 1.001, 1, 1e-4) == 12
    assert statistical_bits(0.0, 10, 1e-6) == 1


def test_statistical_bits_holds_its_overflow_probability_by_simulation():
    # 1000 coordinates, allowed overflow 0.05: simulate 4000 sums; the fraction that wrap
    # somewhere must not exceed 0.05 (+ 5 binomial standard errors), and one bit fewer must wrap
    # far more often, so the rule is neither unsafe nor wasteful by a bit.
    # σ = 62 puts √2·σ·erfcinv(0.05/1000) = 251.5 just under 2**8, so b − 1 = 8 is tight.
    sigma, coordinates, allowed = 62.0, 1000, 0.05
    bits = statistical_bits(sigma, coordinates, allowed)
    sums = np.rint(RNG.normal(scale=sigma, size=(4000, coordinates)))
    half = 1 << (bits - 1)
    wrapped = np.mean(np.any((sums > half) | (sums <= -half), axis=1))
    assert wrapped <= allowed + 5 * math.sqrt(allowed * (1 - allowed) / 4000)
    fewer = np.mean(np.any((sums > half // 2) | (sums <= -half // 2), axis=1))
    assert fewer > 0.5


def test_block_statistical_rule_matches_the_chi_square_quantile():
    assert statistical_bits(100.0, 2**16, 1e-6, block_dimension=1, packing_radius=0.5) == statistical_bits(
        100.0, 2**16, 1e-6
    )
    for n, radius in [(2, 0.5), (4, math.sqrt(0.5)), (8, math.sqrt(0.5))]:
        for sigma in (3.0, 100.0, 5000.0):
            # Oracle: the ball of radius R·ρ must hold a N(0, σ²I_n) block with probability
            # 1 − p/blocks, i.e. R·ρ >= σ·sqrt(chi2.isf(p/blocks, n)).
            needed = sigma * math.sqrt(chi2.isf(1e-6 / (2**16 // n), n))
            bits = statistical_bits(sigma, 2**16, 1e-6, block_dimension=n, packing_radius=radius)
            assert (1 << bits) * radius >= needed > (1 << (bits - 1)) * radius


def test_norm_bits():
    assert norm_bits(0.0, 0.5) == 1
    assert norm_bits(0.99, 0.5) == 1  # 2·0.5 = 1 > 0.99
    assert norm_bits(1.0, 0.5) == 2  # strict: a point at the boundary may tie
    assert norm_bits(1000.0, math.sqrt(0.5)) == 11  # 2**11·0.707 = 1448 > 1000 >= 724


@pytest.mark.parametrize("name", LATTICE_NAMES)
@pytest.mark.parametrize("bits", [4, 9, 20])
def test_voronoi_lift_is_exact_for_sums_inside_the_scaled_voronoi_cell(name, bits):
    lattice = get_lattice(name)
    n = lattice.dimension
    modulus = 1 << bits
    # Lattice points of norm < R·packing_radius, as coordinates.
    directions = RNG.normal(size=(5000, n))
    radii = RNG.uniform(0, 0.999 * modulus * lattice.packing_radius, size=(5000, 1))
    points = lattice.nearest_point(directions / np.linalg.norm(directions, axis=1, keepdims=True) * radii)
    # Strictly inside (A2 points are inexact floats: one at norm 8 may compute as 7.9999999).
    inside = np.linalg.norm(points, axis=1) < modulus * lattice.packing_radius * (1 - 1e-9)
    z = lattice.to_coordinates(points[inside]).reshape(-1)
    assert np.array_equal(voronoi_lift(wrap(z, bits), bits, lattice), z)
    if name == "Z":
        assert np.array_equal(voronoi_lift(wrap(z, bits), bits, lattice), centered_lift(wrap(z, bits), bits))
    elif name == "E8":
        # The skewed E8 basis puts many such sums outside the per-coordinate range: only the
        # Voronoi lift recovers them.
        assert not np.array_equal(centered_lift(wrap(z, bits), bits), z)


@pytest.mark.parametrize("name", LATTICE_NAMES)
def test_voronoi_lift_returns_the_representative_nearest_the_origin(name):
    lattice = get_lattice(name)
    bits = 6
    v = RNG.integers(0, 1 << bits, size=400 * lattice.dimension).astype(np.uint32)
    lifted = voronoi_lift(v, bits, lattice)
    assert np.array_equal(wrap(lifted, bits), v)  # same class mod 2**b
    points = lattice.from_coordinates(lifted.reshape(-1, lattice.dimension))
    # Inside R·V_0 (up to ties on its boundary): within R·ρ of the origin and no closer to R·Q(p/R) ≠ 0.
    assert np.max(np.linalg.norm(points, axis=1)) <= (1 << bits) * lattice.covering_radius + 1e-9


def test_bad_inputs_are_refused():
    for bits in (0, 33, True, 8.0):
        with pytest.raises(ConfigurationError, match="bits"):
            wrap(np.array([1]), bits)  # type: ignore[arg-type]
    with pytest.raises(LatticeError, match="integers"):
        wrap(np.array([1.5]), 8)
    with pytest.raises(LatticeError, match="uint32"):
        centered_lift(np.array([1], dtype=np.int64), 8)
    with pytest.raises(LatticeError, match="not reduced"):
        centered_lift(np.array([256], dtype=np.uint32), 8)
    with pytest.raises(ConfigurationError):
        required_bits(-1, 3)
    with pytest.raises(ConfigurationError):
        required_bits(3, 0)
    with pytest.raises(ConfigurationError):
        statistical_bits(math.nan, 10, 1e-6)
    with pytest.raises(ConfigurationError):
        statistical_bits(1.0, 0, 1e-6)
    with pytest.raises(ConfigurationError):
        statistical_bits(1.0, 10, 0.0)
    with pytest.raises(ConfigurationError):
        statistical_bits(1.0, 10, 1e-6, block_dimension=4)
    with pytest.raises(ConfigurationError):
        norm_bits(1.0, 0.0)
    with pytest.raises(LatticeError, match="multiple of 8"):
        voronoi_lift(np.zeros(12, dtype=np.uint32), 8, get_lattice("E8"))
    with pytest.raises(LatticeError):
        voronoi_lift(np.zeros(8, dtype=np.uint32), 8, "E8")  # type: ignore[arg-type]
