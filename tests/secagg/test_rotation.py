"""Randomized Hadamard rotation (docs/ALGORITHMS.md §2.6): equals H·diag(ξ)/√d' with the dense
Sylvester matrix, preserves norms, inverts exactly, and is shared (linear) across clients."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.linalg import hadamard

from secagg import prg
from secagg.context import encode_parts
from secagg.errors import ConfigurationError, InvalidKeyError, LatticeError
from secagg.rotation import padded_dimension, rotate, unrotate

RNG = np.random.default_rng(5)  # test data only
SEED = bytes(range(32))
INFO = encode_parts("test/rotation", "update")


def test_padded_dimension_is_the_next_power_of_two():
    assert [padded_dimension(d) for d in (1, 2, 3, 4, 5, 8, 9, 1000, 1024, 1025)] == [
        1, 2, 4, 4, 8, 8, 16, 1024, 1024, 2048
    ]
    for bad in (0, -3, True, 2.0, 2**31 + 1):
        with pytest.raises(ConfigurationError):
            padded_dimension(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [1, 2, 3, 7, 16, 33, 64])
def test_rotation_equals_the_dense_hadamard_formula(length):
    x = RNG.normal(size=length)
    size = padded_dimension(length)
    signs = prg.random_signs(SEED, INFO, size).astype(float)
    padded = np.zeros(size)
    padded[:length] = x
    expected = hadamard(size) @ (signs * padded) / math.sqrt(size)
    np.testing.assert_allclose(rotate(x, SEED, INFO), expected, rtol=0, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(x=arrays(np.float64, st.integers(1, 300), elements=st.floats(-1e6, 1e6, allow_nan=False, width=64)))
def test_round_trip_and_norm_preservation(x):
    y = rotate(x, SEED, INFO)
    assert y.shape == (padded_dimension(x.shape[0]),)
    scale = max(1.0, float(np.max(np.abs(x))))
    assert abs(np.linalg.norm(y) - np.linalg.norm(x)) <= 1e-12 * scale * math.sqrt(x.shape[0])
    np.testing.assert_allclose(unrotate(y, SEED, INFO, x.shape[0]), x, rtol=0, atol=1e-12 * scale)


def test_rotation_is_linear_so_sums_rotate_back_to_sums():
    vectors = RNG.normal(size=(10, 500))
    rotated_sum = np.sum([rotate(v, SEED, INFO) for v in vectors], axis=0)
    np.testing.assert_allclose(unrotate(rotated_sum, SEED, INFO, 500), vectors.sum(axis=0), rtol=0, atol=1e-11)


def test_rotation_spreads_a_spike_evenly():
    spike = np.zeros(1000)
    spike[123] = 5.0
    y = rotate(spike, SEED, INFO)
    np.testing.assert_allclose(np.abs(y), np.full(1024, 5.0 / 32.0), rtol=0, atol=1e-12)


def test_rotation_depends_on_the_seed_and_context():
    x = RNG.normal(size=256)
    base = rotate(x, SEED, INFO)
    assert np.array_equal(base, rotate(x, SEED, INFO))
    assert not np.allclose(base, rotate(x, bytes(32), INFO))
    assert not np.allclose(base, rotate(x, SEED, encode_parts("test/rotation", "other")))
    # Undoing with the wrong signs does not give x back.
    assert not np.allclose(unrotate(base, bytes(32), INFO, 256), x)


def test_bad_inputs_are_refused():
    with pytest.raises(LatticeError, match="NaN"):
        rotate(np.array([1.0, np.nan]), SEED, INFO)
    with pytest.raises(LatticeError, match="1-D"):
        rotate(np.zeros((2, 2)), SEED, INFO)
    with pytest.raises(LatticeError, match="1-D"):
        rotate(np.zeros(0), SEED, INFO)
    with pytest.raises(LatticeError, match="real"):
        rotate(np.array(["a"]), SEED, INFO)
    y = rotate(np.ones(5), SEED, INFO)
    with pytest.raises(ConfigurationError, match="pads to"):
        unrotate(y, SEED, INFO, 9)
    with pytest.raises(ConfigurationError, match="pads to"):
        unrotate(y, SEED, INFO, 4)
    with pytest.raises(LatticeError, match="NaN"):
        unrotate(np.array([np.inf, 0.0]), SEED, INFO, 2)
    with pytest.raises(InvalidKeyError):  # the PRG refuses a seed that is not 32 bytes
        rotate(np.ones(4), b"short", INFO)
