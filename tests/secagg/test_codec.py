"""LatticeCodec (docs/ALGORITHMS.md §2.3, §2.6): the sum mod 2**b of clients' encodings decodes to
the sum of their quantized updates; bit widths are planned, and refused with a BitWidthError that
names the knob, whenever the sum could wrap."""

import math

import numpy as np
import pytest

from secagg.codec import CodecConfig, LatticeCodec, check_bits, plan_bits
from secagg.errors import BitWidthError, ConfigurationError, LatticeError
from secagg.lattice import LATTICE_NAMES, get_lattice
from secagg.modular import wrap

RNG = np.random.default_rng(3)  # test data only
ROUND_SEED = bytes(range(100, 132))


def clipped(count, dimension, clip_norm=1.0):
    vectors = RNG.normal(size=(count, dimension))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * clip_norm * RNG.uniform(0.1, 1.0, (count, 1))


def secure_sum(encodings, bits):
    """What SecAgg delivers: Σ wrap(z_i) mod 2**b, accumulated in uint32 as the protocol does."""
    total = np.zeros(encodings[0].shape[0], dtype=np.uint32)
    for z in encodings:
        total = (total + wrap(z, bits)) & np.uint32((1 << bits) - 1 if bits < 32 else 0xFFFFFFFF)
    return total


def codec(lattice="E8", step=0.01, bits=16, clip_norm=1.0, rotate=True, backend="numba"):
    config = CodecConfig(lattice=lattice, step=step, bits=bits, clip_norm=clip_norm, rotate=rotate)
    return LatticeCodec(config, backend=backend)


def test_config_defaults_and_validation():
    config = CodecConfig(step=0.01, bits=16, clip_norm=1.0)
    assert config.lattice == "E8" and config.rotate is True
    with pytest.raises(AttributeError):
        config.bits = 8  # type: ignore[misc]
    bad = [
        dict(lattice="E7"), dict(step=0.0), dict(step=math.nan), dict(bits=0), dict(bits=33),
        dict(bits=16.0), dict(clip_norm=-1.0), dict(clip_norm=math.inf), dict(rotate=1),
    ]
    for change in bad:
        arguments = dict(step=0.01, bits=16, clip_norm=1.0) | change
        with pytest.raises(ConfigurationError):
            CodecConfig(**arguments)


@pytest.mark.parametrize("lattice", LATTICE_NAMES)
@pytest.mark.parametrize("rotate", [True, False])
@pytest.mark.parametrize("clients", [1, 3, 10, 40])
def test_secure_sum_decodes_to_the_sum_of_individual_decodes(lattice, rotate, clients):
    dimension = 300
    bits = plan_bits(1.0, 0.01, lattice, clients, dimension, rotate=rotate)
    lattice_codec = codec(lattice, bits=bits, rotate=rotate)
    updates = clipped(clients, dimension)
    ids = list(range(100, 100 + clients))
    encodings = [lattice_codec.encode(u, ROUND_SEED, i) for u, i in zip(updates, ids)]
    assert all(z.shape == (lattice_codec.coordinates(dimension),) and z.dtype == np.int64 for z in encodings)
    decoded = lattice_codec.decode_sum(secure_sum(encodings, bits), ROUND_SEED, ids, dimension)
    individual = np.sum([lattice_codec.decode(z, ROUND_SEED, i, dimension) for z, i in zip(encodings, ids)], axis=0)
    np.testing.assert_allclose(decoded, individual, rtol=0, atol=1e-9)
    # The quantized sum is the true sum up to independent per-client errors of known MSE.
    shape = get_lattice(lattice)
    predicted = clients * 0.01**2 * shape.second_moment_per_coordinate
    assert np.mean((decoded - updates.sum(axis=0)) ** 2) < 2.0 * predicted


def test_decoding_a_subset_uses_exactly_those_clients_dithers():
    lattice_codec = codec("D4", bits=plan_bits(1.0, 0.01, "D4", 6, 200))
    updates = clipped(6, 200)
    encodings = [lattice_codec.encode(u, ROUND_SEED, i) for i, u in enumerate(updates)]
    survivors = [0, 2, 3, 5]
    total = secure_sum([encodings[i] for i in survivors], lattice_codec.config.bits)
    decoded = lattice_codec.decode_sum(total, ROUND_SEED, survivors, 200)
    individual = np.sum([lattice_codec.decode(encodings[i], ROUND_SEED, i, 200) for i in survivors], axis=0)
    np.testing.assert_allclose(decoded, individual, rtol=0, atol=1e-9)
    wrong_ids = lattice_codec.decode_sum(total, ROUND_SEED, [0, 1, 2, 3], 200)
    assert np.max(np.abs(wrong_ids - decoded)) > 0.01


def test_the_same_inputs_give_the_same_encoding_and_clients_and_tensors_get_their_own_dither():
    lattice_codec = codec()
    update = clipped(1, 64)[0]
    first = lattice_codec.encode(update, ROUND_SEED, 7)
    assert np.array_equal(first, lattice_codec.encode(update, ROUND_SEED, 7))
    assert not np.array_equal(first, lattice_codec.encode(update, ROUND_SEED, 8))
    assert not np.array_equal(first, lattice_codec.encode(update, ROUND_SEED, 7, tensor="bias"))
    assert not np.array_equal(first, lattice_codec.encode(update, bytes(32), 7))
    np.testing.assert_allclose(
        lattice_codec.decode(lattice_codec.encode(update, ROUND_SEED, 7, "bias"), ROUND_SEED, 7, 64, "bias"),
        update, rtol=0, atol=0.01 * 1.0 * 3,
    )


@pytest.mark.parametrize("lattice", LATTICE_NAMES)
def test_numba_and_numpy_backends_agree_end_to_end(lattice):
    fast, reference = codec(lattice, bits=12), codec(lattice, bits=12, backend="numpy")
    updates = clipped(3, 100)
    encodings = [fast.encode(u, ROUND_SEED, i) for i, u in enumerate(updates)]
    for i, u in enumerate(updates):
        assert np.array_equal(encodings[i], reference.encode(u, ROUND_SEED, i))
    total = secure_sum(encodings, 12)
    assert np.array_equal(
        fast.decode_sum(total, ROUND_SEED, [0, 1, 2], 100), reference.decode_sum(total, ROUND_SEED, [0, 1, 2], 100)
    )


def test_coordinates_count():
    assert codec("E8").coordinates(1000) == 1024  # rotated: next power of two
    assert codec("E8", rotate=False).coordinates(1000) == 1000
    assert codec("E8", rotate=False).coordinates(1001) == 1008
    assert codec("A2", rotate=False).coordinates(3) == 4
    assert codec("Z").coordinates(1) == 1


@pytest.mark.parametrize("lattice", LATTICE_NAMES)
def test_planned_bits_survive_the_worst_case_and_fewer_bits_wrap(lattice):
    # Worst case without rotation: every client sends the same spike of norm C, so the sum piles
    # up in one block. The planned (deterministic) b decodes it exactly; b − 2 wraps visibly.
    clients, dimension, step = 20, 64, 0.01
    bits = plan_bits(1.0, step, lattice, clients, dimension, rotate=False)
    spike = np.zeros(dimension)
    spike[5] = 1.0
    for width, exact in ((bits, True), (bits - 2, False)):
        lattice_codec = codec(lattice, step=step, bits=width, rotate=False)
        encodings = [lattice_codec.encode(spike, ROUND_SEED, i) for i in range(clients)]
        decoded = lattice_codec.decode_sum(secure_sum(encodings, width), ROUND_SEED, list(range(clients)), dimension)
        individual = np.sum(
            [lattice_codec.decode(z, ROUND_SEED, i, dimension) for i, z in enumerate(encodings)], axis=0
        )
        assert np.allclose(decoded, individual, rtol=0, atol=1e-9) is exact
        if not exact:
            with pytest.raises(BitWidthError):
                lattice_codec.check_bits(clients, dimension)
        else:
            lattice_codec.check_bits(clients, dimension)


@pytest.mark.parametrize("lattice", LATTICE_NAMES)
def test_statistical_plan_holds_for_aligned_rotated_updates(lattice):
    # All clients send the same direction (the worst case for the sum's variance); with rotation
    # and overflow probability 1e−6 the planned b must decode exactly.
    clients, dimension = 50, 4096
    bits = plan_bits(1.0, 0.001, lattice, clients, dimension)
    assert bits < plan_bits(1.0, 0.001, lattice, clients, dimension, rotate=False)  # rotation saves bits
    lattice_codec = codec(lattice, step=0.001, bits=bits)
    direction = clipped(1, dimension)[0]
    direction /= np.linalg.norm(direction)
    encodings = [lattice_codec.encode(direction, ROUND_SEED, i) for i in range(clients)]
    decoded = lattice_codec.decode_sum(secure_sum(encodings, bits), ROUND_SEED, list(range(clients)), dimension)
    np.testing.assert_allclose(decoded, clients * direction, rtol=0, atol=clients * 0.001 * 1.0)


def test_check_bits_names_the_knobs_and_the_minimum():
    needed = plan_bits(1.0, 0.01, "E8", 100, 10**5)
    check_bits(needed, 1.0, 0.01, "E8", 100, 10**5)
    with pytest.raises(BitWidthError) as caught:
        check_bits(needed - 1, 1.0, 0.01, "E8", 100, 10**5)
    message = str(caught.value)
    assert f"increase --bits to at least {needed}" in message
    assert "raise --step" in message and "lower --clip" in message
    assert isinstance(caught.value, ConfigurationError)


def test_a_configuration_no_bit_width_can_hold_is_refused():
    with pytest.raises(BitWidthError, match="raise --step .* or lower --clip"):
        plan_bits(1e6, 1e-6, "E8", 1000, 10, rotate=False)


def test_plan_bits_grows_with_clients_and_noise_and_shrinks_with_step():
    base = plan_bits(1.0, 0.01, "E8", 10, 10**4)
    assert plan_bits(1.0, 0.01, "E8", 1000, 10**4) > base
    assert plan_bits(1.0, 0.01, "E8", 10, 10**4, noise_std=50.0) > base
    assert plan_bits(1.0, 0.1, "E8", 10, 10**4) < base
    assert plan_bits(1.0, 0.01, "E8", 10, 10**4, overflow_probability=1e-3) <= base


def test_plan_bits_refuses_bad_parameters():
    good = dict(clip_norm=1.0, step=0.01, lattice="E8", clients=10, dimension=100)
    for change in (
        dict(clip_norm=0.0), dict(step=-1.0), dict(lattice="E7"), dict(lattice=3), dict(clients=0),
        dict(dimension=0), dict(noise_std=-1.0), dict(noise_std=math.nan), dict(overflow_probability=0.0),
        dict(overflow_probability=1.0), dict(rotate="yes"),
    ):
        with pytest.raises(ConfigurationError):
            plan_bits(**(good | change))
    with pytest.raises(ConfigurationError, match="bits"):
        check_bits(0, **good)


def test_encode_refuses_unclipped_or_malformed_updates():
    lattice_codec = codec(clip_norm=1.0)
    with pytest.raises(ConfigurationError, match="exceeds clip_norm"):
        lattice_codec.encode(np.full(4, 0.6), ROUND_SEED, 1)
    lattice_codec.encode(np.full(4, 0.5), ROUND_SEED, 1)  # norm exactly 1.0 is allowed
    with pytest.raises(LatticeError, match="NaN"):
        lattice_codec.encode(np.array([np.nan, 0.0]), ROUND_SEED, 1)
    with pytest.raises(LatticeError, match="1-D"):
        lattice_codec.encode(np.zeros((2, 2)), ROUND_SEED, 1)
    with pytest.raises(LatticeError, match="float32 or float64"):
        lattice_codec.encode(np.zeros(4, dtype=np.int64), ROUND_SEED, 1)
    assert lattice_codec.encode(np.zeros(4, dtype=np.float32), ROUND_SEED, 1).shape == (8,)
    with pytest.raises(ConfigurationError, match="round_seed"):
        lattice_codec.encode(np.zeros(4), b"short", 1)
    with pytest.raises(ConfigurationError, match="client id"):
        lattice_codec.encode(np.zeros(4), ROUND_SEED, True)
    with pytest.raises(ConfigurationError, match="client id"):
        lattice_codec.encode(np.zeros(4), ROUND_SEED, -1)
    with pytest.raises(ConfigurationError, match="tensor"):
        lattice_codec.encode(np.zeros(4), ROUND_SEED, 1, tensor="")


def test_decode_sum_refuses_malformed_sums_and_ids():
    lattice_codec = codec(bits=12)
    total = secure_sum([lattice_codec.encode(np.zeros(10), ROUND_SEED, 1)], 12)
    with pytest.raises(ConfigurationError, match="duplicates"):
        lattice_codec.decode_sum(total, ROUND_SEED, [1, 1], 10)
    with pytest.raises(ConfigurationError, match="empty"):
        lattice_codec.decode_sum(total, ROUND_SEED, [], 10)
    with pytest.raises(LatticeError, match="shape"):
        lattice_codec.decode_sum(total[:8], ROUND_SEED, [1], 10)
    with pytest.raises(LatticeError, match="uint32"):
        lattice_codec.decode_sum(total.astype(np.int64), ROUND_SEED, [1], 10)
    with pytest.raises(LatticeError, match="not reduced"):
        lattice_codec.decode_sum(total | np.uint32(1 << 20), ROUND_SEED, [1], 10)
    with pytest.raises(ConfigurationError):
        LatticeCodec("E8")  # type: ignore[arg-type]
