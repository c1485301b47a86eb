"""Lattices Z, A2, D4, E8: constants, exact nearest points (vs brute force), coordinates, and the
numba kernels agreeing with the numpy reference bit for bit (docs/ALGORITHMS.md §2.1, §2.4)."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secagg import lattice_kernels
from secagg.errors import LatticeError
from secagg.lattice import LATTICE_NAMES, get_lattice

RNG = np.random.default_rng(20240601)  # test data only; nothing secret

# Conway & Sloane (SPLAG table 2.3) normalized second moments, as tabulated in docs/ALGORITHMS.md §2.4.
PUBLISHED_SECOND_MOMENTS = {"Z": 1 / 12, "A2": 0.080188, "D4": 0.076603, "E8": 0.071682}


def in_d_n(points):
    """Membership by definition: integer vectors with an even coordinate sum."""
    integral = np.all(points == np.rint(points), axis=-1)
    return integral & (np.rint(points.sum(axis=-1)).astype(np.int64) % 2 == 0)


def in_e8(points):
    """Membership by definition: E8 = D8 ∪ (D8 + ½·1)."""
    return in_d_n(points) | in_d_n(points - 0.5)


def brute_force_nearest_distance(name, x):
    """Squared distance from each row of x to the lattice, by exhaustive search of a neighbourhood
    that must contain the nearest point (every coordinate of it is within the covering radius 1 of
    x for D4/E8; a ±2 coefficient box around the Babai point for the reduced A2 and Z bases)."""
    lattice = get_lattice(name)
    best = np.empty(x.shape[0])
    if name in ("D4", "E8"):
        offsets = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=lattice.dimension)))
        for i, point in enumerate(x):
            candidates = np.rint(point) + offsets
            if name == "E8":
                candidates = np.concatenate([candidates, np.rint(point - 0.5) + 0.5 + offsets])
                members = candidates[in_e8(candidates)]
            else:
                members = candidates[in_d_n(candidates)]
            best[i] = np.min(np.sum((members - point) ** 2, axis=1))
    else:
        offsets = np.array(list(itertools.product(range(-2, 3), repeat=lattice.dimension)), dtype=float)
        babai = np.rint(x @ lattice.generator_inverse)
        for i, point in enumerate(x):
            members = (babai[i] + offsets) @ lattice.generator
            best[i] = np.min(np.sum((members - point) ** 2, axis=1))
    return best


def near_tie_points(name, count):
    """Midpoints between neighbouring lattice points, deep holes, and both nudged by ±1e−13."""
    lattice = get_lattice(name)
    n = lattice.dimension
    base = lattice.from_coordinates(RNG.integers(-50, 50, size=(count, n)))
    neighbour = lattice.from_coordinates(RNG.integers(-1, 2, size=(count, n)))
    midpoints = base + 0.5 * neighbour
    deep_holes = base + np.eye(n)[RNG.integers(0, n, size=count)] * lattice.covering_radius
    ties = np.concatenate([midpoints, deep_holes])
    nudged = ties + RNG.choice([-1e-13, 0.0, 1e-13], size=ties.shape)
    return np.concatenate([ties, nudged])


@pytest.mark.parametrize("name", LATTICE_NAMES)
def test_volume_is_the_generator_determinant(name):
    lattice = get_lattice(name)
    assert abs(abs(np.linalg.det(lattice.generator)) - lattice.volume) < 1e-12
    expected = {"Z": 1.0, "A2": math.sqrt(3) / 2, "D4": 2.0, "E8": 1.0}[name]
    assert lattice.volume == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("name", LATTICE_NAMES)
def test_published_normalized_second_moments(name):
    assert get_lattice(name).normalized_second_moment == pytest.approx(PUBLISHED_SECOND_MOMENTS[name], abs=5e-7)


@pytest.mark.parametrize("name", ["D4", "E8"])
def test_generator_spans_exactly_the_lattice_of_the_definition(name):
    # Every row is a member, and the covolume equals the defined lattice's (index 2 in Z^4 for D4,
    # unimodular for E8): a sublattice of equal covolume is the whole lattice.
    lattice = get_lattice(name)
    member = in_e8 if name == "E8" else in_d_n
    assert np.all(member(lattice.generator))
    assert abs(np.linalg.det(lattice.generator)) == pytest.approx({"D4": 2.0, "E8": 1.0}[name])


@pytest.mark.parametrize("name", ["Z", "D4", "E8"])
def test_generator_inverse_is_exact(name):
    lattice = get_lattice(name)
    assert np.array_equal(lattice.generator @ lattice.generator_inverse, np.eye(lattice.dimension))


def test_lattice_constants_are_read_only():
    lattice = get_lattice("E8")
    with pytest.raises(ValueError):
        lattice.generator[0, 0] = 3.0
    with pytest.raises(AttributeError):
        lattice.volume = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("name", LATTICE_NAMES)
def test_nearest_point_agrees_with_brute_force_on_random_points(name):
    lattice = get_lattice(name)
    x = RNG.normal(scale=3.0, size=(300, lattice.dimension))
    nearest = lattice.nearest_point(x)
    achieved = np.sum((nearest - x) ** 2, axis=1)
    np.testing.assert_allclose(achieved, brute_force_nearest_distance(name, x), rtol=0, atol=1e-12)
    lattice.to_coordinates(nearest)  # on the lattice, or this raises


@pytest.mark.parametrize("name", LATTICE_NAMES)
def test_nearest_point_agrees_with_brute_force_near_ties(name):
    lattice = get_lattice(name)
    x = near_tie_points(name, 60)
    nearest = lattice.nearest_point(x)
    achieved = np.sum((nearest - x) ** 2, axis=1)
    np.testing.assert_allclose(achieved, brute_force_nearest_distance(name, x), rtol=0, atol=1e-11)
    lattice.to_coordinates(nearest)


@pytest.mark.parametrize("name", LATTICE_NAMES)
def test_generated_points_are_fixed_points(name):
    lattice = get_lattice(name)
    z = RNG.integers(-10**6, 10**6, size=(500, lattice.dimension))
    points = lattice.from_coordinates(z)
    assert np.array_equal(lattice.to_coordinates(points), z)
    nearest = lattice.nearest_point(points)
    if name == "A2":  # √3 makes the points inexact floats; the coordinates must still be exact
        assert np.array_equal(lattice.to_coordinates(nearest), z)
    else:
        assert np.array_equal(nearest, points)
    # Anything strictly inside the packing ball around a point quantizes to that point.
    direction = RNG.normal(size=points.shape)
    direction *= (0.999 * lattice.packing_radius / np.linalg.norm(direction, axis=1))[:, None]
    assert np.array_equal(lattice.to_coordinates(lattice.nearest_point(points + direction)), z)


@pytest.mark.parametrize("name", LATTICE_NAMES)
def test_every_point_is_within_the_covering_radius_and_deep_holes_reach_it(name):
    lattice = get_lattice(name)
    x = RNG.uniform(-20, 20, size=(20000, lattice.dimension))
    distance = np.linalg.norm(lattice.nearest_point(x) - x, axis=1)
    assert distance.max() <= lattice.covering_radius + 1e-12
    hole = {"Z": [0.5], "A2": [0.5, math.sqrt(3) / 6], "D4": [1, 0, 0, 0], "E8": [1, 0, 0, 0, 0, 0, 0, 0]}[name]
    hole = np.array([hole], dtype=float)
    assert np.linalg.norm(lattice.nearest_point(hole) - hole) == pytest.approx(lattice.covering_radius, abs=1e-12)


def test_one_tie_rule_everywhere():
    # Rounding is half to even; the D_n fix moves the first worst coordinate towards x; the
    # integer coset wins a coset tie.
    assert np.array_equal(get_lattice("Z").nearest_point(np.array([[0.5], [1.5], [-0.5], [2.5]])).ravel(), [0, 2, 0, 2])
    d4 = get_lattice("D4")
    # (0.5, 0.5, 0, 0): rint → (0, 0, 0, 0) even, kept (tie with (1, 1, 0, 0) and (1, 0, ...)±).
    assert np.array_equal(d4.nearest_point(np.array([0.5, 0.5, 0.0, 0.0])), [0, 0, 0, 0])
    # (0.6, 0.2, 0, 0): rint → (1, 0, 0, 0) odd; worst coordinate is index 0 (error 0.4) → 0.
    assert np.array_equal(d4.nearest_point(np.array([0.6, 0.2, 0.0, 0.0])), [0, 0, 0, 0])
    # (1, 0, 0, 0) exactly: odd, all errors 0 → first coordinate moves up: (2, 0, 0, 0).
    assert np.array_equal(d4.nearest_point(np.array([1.0, 0.0, 0.0, 0.0])), [2, 0, 0, 0])
    e8 = get_lattice("E8")
    quarter = np.full(8, 0.25)  # equidistant from 0 and ½·1
    assert np.array_equal(e8.nearest_point(quarter), np.zeros(8))
    assert np.array_equal(e8.nearest_point(quarter + 1e-9), np.full(8, 0.5))


@pytest.mark.parametrize("name", LATTICE_NAMES)
def test_numba_kernel_equals_numpy_reference_bit_for_bit(name):
    lattice = get_lattice(name)
    n = lattice.dimension
    x = np.concatenate(
        [
            RNG.normal(scale=5.0, size=(2000, n)),
            near_tie_points(name, 200),
            np.round(RNG.normal(scale=4.0, size=(500, n)) * 4) / 4,  # exact quarter/half values
            np.full((1, n), -0.0),
            RNG.uniform(-1e9, 1e9, size=(100, n)),
        ]
    )
    reference = lattice.nearest_point(x)
    fast = lattice_kernels.nearest_points(lattice, x)
    assert np.array_equal(fast, reference)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(LATTICE_NAMES),
    values=arrays(np.float64, 16, elements=st.floats(-1e4, 1e4, allow_nan=False, width=64)),
)
def test_numba_kernel_equals_reference_on_arbitrary_inputs(name, values):
    lattice = get_lattice(name)
    x = values.reshape(-1, lattice.dimension)
    assert np.array_equal(lattice_kernels.nearest_points(lattice, x), lattice.nearest_point(x))


def test_unknown_lattice_is_refused():
    for bad in ("E7", "z", "", None, 8):
        with pytest.raises(LatticeError, match="unknown lattice"):
            get_lattice(bad)  # type: ignore[arg-type]
    assert LATTICE_NAMES == ("Z", "A2", "D4", "E8")


def test_bad_inputs_raise_lattice_error():
    e8 = get_lattice("E8")
    with pytest.raises(LatticeError, match="NaN"):
        e8.nearest_point(np.full(8, np.nan))
    with pytest.raises(LatticeError, match="NaN"):
        e8.nearest_point(np.array([np.inf] + [0.0] * 7))
    with pytest.raises(LatticeError, match="shape"):
        e8.nearest_point(np.zeros((3, 4)))
    with pytest.raises(LatticeError, match="shape"):
        e8.nearest_point(np.float64(1.0))
    with pytest.raises(LatticeError, match="numeric"):
        e8.nearest_point(np.array(["a"] * 8))
    with pytest.raises(LatticeError, match="magnitude"):
        e8.nearest_point(np.full(8, 1e15))
    with pytest.raises(LatticeError, match="not on the E8 lattice"):
        e8.to_coordinates(np.full(8, 0.25))
    with pytest.raises(LatticeError, match="integers"):
        e8.from_coordinates(np.zeros(8))
    with pytest.raises(LatticeError, match="2\\*\\*44"):
        e8.from_coordinates(np.array([2**62] + [0] * 7))
    with pytest.raises(LatticeError, match="2\\*\\*44"):
        e8.from_coordinates(np.array([-(2**63)] + [0] * 7))
