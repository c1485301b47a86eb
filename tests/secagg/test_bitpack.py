"""pack_bits/unpack_bits: exact b-bit little-endian packing, checked against a big-integer oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.bitpack import pack_bits, packed_length, unpack_bits
from secagg.errors import ConfigurationError, MalformedMessageError


def _oracle(values, bits: int) -> bytes:
    """The specification: the packed bytes are Σ v_i 2**(i*b) written little-endian."""
    total = sum(int(value) << (index * bits) for index, value in enumerate(values))
    return total.to_bytes((len(values) * bits + 7) // 8, "little")


@st.composite
def _vectors(draw):
    bits = draw(st.integers(1, 32))
    values = draw(st.lists(st.integers(0, 2**bits - 1), max_size=80))
    return bits, np.array(values, dtype=np.uint32)


def test_known_three_bit_packing():
    # 1, 2, 3, 5, 7 as 3-bit fields LSB first: 001 010 011 101 111 -> 0b111_101_011_010_001.
    assert pack_bits(np.array([1, 2, 3, 5, 7], dtype=np.uint32), 3) == bytes([0xD1, 0x7A])


@settings(max_examples=400, deadline=None)
@given(_vectors())
def test_round_trip_and_oracle_for_every_bit_width(case):
    bits, values = case
    packed = pack_bits(values, bits)
    assert len(packed) == packed_length(values.shape[0], bits) == (values.shape[0] * bits + 7) // 8
    assert packed == _oracle(values.tolist(), bits)
    unpacked = unpack_bits(packed, bits, values.shape[0])
    assert unpacked.dtype == np.uint32
    np.testing.assert_array_equal(unpacked, values)


@pytest.mark.parametrize("bits", range(1, 33))
def test_long_vectors_round_trip_across_word_boundaries(bits):
    rng = np.random.default_rng(bits)  # test data only
    values = rng.integers(0, 2**bits, 1037, dtype=np.uint64).astype(np.uint32)
    values[-1] = 2**bits - 1
    packed = pack_bits(values, bits)
    assert packed == _oracle(values.tolist(), bits)
    np.testing.assert_array_equal(unpack_bits(packed, bits, values.shape[0]), values)


def test_empty_vector_packs_to_nothing():
    assert pack_bits(np.zeros(0, np.uint32), 13) == b""
    assert unpack_bits(b"", 13, 0).shape == (0,)


def test_strided_views_pack_like_their_copies():
    values = np.arange(40, dtype=np.uint32)
    assert pack_bits(values[::3], 6) == pack_bits(values[::3].copy(), 6)


@pytest.mark.parametrize(("bits", "count"), [(3, 5), (12, 7), (32, 3), (1, 9)])
def test_wrong_lengths_are_malformed(bits, count):
    packed = pack_bits(np.ones(count, np.uint32), bits)
    for bad in (packed[:-1], packed + b"\x00", b""):
        with pytest.raises(MalformedMessageError):
            unpack_bits(bad, bits, count)


@pytest.mark.parametrize(("bits", "count"), [(3, 5), (7, 1), (1, 9), (31, 3)])
def test_non_zero_padding_bits_are_malformed(bits, count):
    packed = bytearray(pack_bits(np.zeros(count, np.uint32), bits))
    assert (count * bits) % 8 != 0
    packed[-1] |= 0x80
    with pytest.raises(MalformedMessageError):
        unpack_bits(bytes(packed), bits, count)


@pytest.mark.parametrize("bits", [1, 7, 16, 31])
def test_values_that_do_not_fit_are_refused(bits):
    values = np.zeros(10, np.uint32)
    values[6] = 2**bits
    with pytest.raises(ConfigurationError, match="does not fit"):
        pack_bits(values, bits)


@pytest.mark.parametrize(
    "values",
    [np.zeros(3, np.int64), np.zeros(3, np.uint64), np.zeros((2, 2), np.uint32), [1, 2, 3]],
)
def test_values_must_be_a_1d_uint32_array(values):
    with pytest.raises(ConfigurationError):
        pack_bits(values, 8)


def test_invalid_widths_and_counts_are_refused():
    for bits in (0, 33, 8.0, True):
        with pytest.raises(ConfigurationError):
            pack_bits(np.zeros(1, np.uint32), bits)
        with pytest.raises(ConfigurationError):
            unpack_bits(b"\x00", bits, 1)
    with pytest.raises(ConfigurationError):
        unpack_bits(b"", 8, -1)
    with pytest.raises(MalformedMessageError):
        unpack_bits("text", 8, 4)
