"""SecAgg+ carrying lattice coordinates: the secure sum decodes exactly to the sum of the
individual decodes, for every lattice and under dropouts (docs/ALGORITHMS.md §2.3)."""

import os

import numpy as np
import pytest
from scipy.stats import chi2

from secagg.codec import CodecConfig, LatticeCodec, plan_bits
from secagg.lattice import get_lattice
from secagg.modular import voronoi_lift, wrap
from secagg.simulate import run_secure_sum
from secagg.stages import MASKED_INPUT, SHARE_KEYS, UNMASK

RNG = np.random.default_rng(7)  # test data only


def clipped_updates(ids, dimension, clip_norm):
    updates = {}
    for client_id in ids:
        direction = RNG.standard_normal(dimension)
        updates[client_id] = direction / np.linalg.norm(direction) * clip_norm * RNG.uniform(0.2, 0.99)
    return updates


@pytest.mark.parametrize(
    "lattice, n, dimension, dropouts",
    [
        ("Z", 3, 300, {}),
        ("A2", 4, 333, {MASKED_INPUT: {1}}),
        ("D4", 6, 500, {SHARE_KEYS: {0}, MASKED_INPUT: {5}}),
        ("E8", 9, 1000, {MASKED_INPUT: {2, 7}, UNMASK: {3}}),
        ("E8", 12, 512, {}),
    ],
)
def test_secure_sum_decodes_exactly_to_the_sum_of_individual_decodes(lattice, n, dimension, dropouts):
    clip_norm, step = 1.0, 0.02
    bits = plan_bits(clip_norm, step, lattice, n, dimension)
    codec = LatticeCodec(CodecConfig(lattice=lattice, step=step, bits=bits, clip_norm=clip_norm))
    round_seed = os.urandom(32)
    updates = clipped_updates(range(n), dimension, clip_norm)
    coordinates = {i: codec.encode(u, round_seed, i) for i, u in updates.items()}
    result = run_secure_sum(
        {i: wrap(z, bits) for i, z in coordinates.items()},
        bits,
        neighbours_k=n - 1,
        threshold=max(2, n // 2),
        dropouts=dropouts,
    )
    survivors = sorted(result.survivors)
    integer_sum = sum(coordinates[i] for i in survivors)
    # Integers: the secure sum is the plaintext sum mod 2**b, and lifts back to it exactly.
    assert np.array_equal(result.sum, wrap(integer_sum, bits))
    assert np.array_equal(voronoi_lift(result.sum, bits, get_lattice(lattice)), integer_sum)
    # Floats: decoding the secure sum is decoding the plaintext sum, bit for bit ...
    secure = codec.decode_sum(result.sum, round_seed, survivors, dimension)
    assert np.array_equal(secure, codec.decode_sum(wrap(integer_sum, bits), round_seed, survivors, dimension))
    # ... and equals the sum of each survivor's own decode up to float64 summation order.
    individual = sum(codec.decode(coordinates[i], round_seed, i, dimension) for i in survivors)
    np.testing.assert_allclose(secure, individual, rtol=0, atol=1e-9)
    # It is the quantized sum: subtractive dither makes each client's error uniform on the
    # Voronoi cell, independent across clients, with second moment G(Λ)·V^(2/n)·Δ² per coordinate;
    # the orthogonal unrotation spreads it evenly, so the d kept coordinates carry d of it. Each
    # of them is a sum of many independent uniform errors (near Gaussian), so the squared error is
    # spread about like sigma**2 * chi-square(d) (measured: at most 1.15x chi-square's standard
    # deviation, from the padding cut). Bounds at chi-square quantiles 1e-9 per side keep the
    # false-failure rate below 1e-6 even with that excess.
    shape = get_lattice(lattice)
    per_coordinate = shape.normalized_second_moment * shape.volume ** (2 / shape.dimension) * step**2
    expected = len(survivors) * dimension * per_coordinate
    true_sum = sum(updates[i] for i in survivors)
    low, high = chi2.ppf(1e-9, dimension) / dimension, chi2.ppf(1 - 1e-9, dimension) / dimension
    assert low * expected <= np.sum((secure - true_sum) ** 2) <= high * expected
