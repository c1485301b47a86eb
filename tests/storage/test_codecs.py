"""Blob codecs: exact round trips, float rounding against numpy/torch oracles, corruption detection,
and entropy coding close to the empirical entropy."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from storage.codecs import (
    BF16,
    CODEC_NAMES,
    FP16,
    RAW,
    ZIGZAG_ZSTD,
    bits_per_parameter,
    decode_array,
    encode_array,
    read_header,
)
from storage.errors import BlobEncodingError, CorruptBlobError, StorageValueError

INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)
FAST = settings(max_examples=60, deadline=None)


@FAST
@given(data=st.data(), dtype=st.sampled_from(INTEGER_DTYPES))
def test_integer_arrays_round_trip_exactly_through_every_lossless_codec(data, dtype):
    values = data.draw(hnp.arrays(dtype, SHAPES))
    for codec in (RAW, ZIGZAG_ZSTD):
        decoded = decode_array(encode_array(values, codec))
        assert decoded.dtype == values.dtype and decoded.shape == values.shape
        assert np.array_equal(decoded, values)


@FAST
@given(data=st.data(), dtype=st.sampled_from(FLOAT_DTYPES))
def test_raw_float_arrays_round_trip_bit_for_bit(data, dtype):
    values = data.draw(hnp.arrays(dtype, SHAPES, elements={"allow_nan": True}))
    decoded = decode_array(encode_array(values, RAW))
    assert decoded.dtype == values.dtype
    assert decoded.tobytes() == values.tobytes()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64])
def test_zigzag_handles_the_extremes_of_the_dtype(dtype):
    info = np.iinfo(dtype)
    values = np.array([info.min, info.max, 0, info.min + 1, info.max - 1, 1], dtype=dtype)
    assert np.array_equal(decode_array(encode_array(values, ZIGZAG_ZSTD)), values)


@FAST
@given(values=hnp.arrays(np.float32, SHAPES, elements=st.floats(-65000, 65000, width=32)))
def test_fp16_equals_numpy_half_rounding_and_restores_the_dtype(values):
    decoded = decode_array(encode_array(values, FP16))
    assert decoded.dtype == np.float32 and decoded.shape == values.shape
    assert np.array_equal(decoded, values.astype(np.float16).astype(np.float32))


@FAST
@given(values=hnp.arrays(np.float32, SHAPES, elements=st.floats(width=32, allow_nan=False, allow_infinity=False).filter(lambda v: abs(v) < 3.3e38)))
def test_bf16_equals_torch_round_to_nearest_even(values):
    decoded = decode_array(encode_array(values, BF16))
    oracle = torch.from_numpy(values.copy()).to(torch.bfloat16).to(torch.float32).numpy()
    assert np.array_equal(decoded, oracle)


def test_bf16_relative_error_is_at_most_half_an_ulp_of_8_bits():
    values = np.random.default_rng(1).standard_normal(10_000).astype(np.float32)
    decoded = decode_array(encode_array(values, BF16))
    assert np.max(np.abs(decoded - values) / np.abs(values)) <= 2.0**-8


def test_bf16_keeps_nan_and_infinities():
    values = np.array([np.nan, np.inf, -np.inf, np.float32(np.uint32(0x7F800001).view(np.float32))], dtype=np.float32)
    decoded = decode_array(encode_array(values, BF16))
    assert np.isnan(decoded[0]) and decoded[1] == np.inf and decoded[2] == -np.inf and np.isnan(decoded[3])


def test_torch_tensors_are_accepted_including_bfloat16():
    tensor = torch.randn(3, 4).to(torch.bfloat16)
    decoded = decode_array(encode_array(tensor, BF16))
    assert decoded.dtype == np.float32
    assert torch.equal(torch.from_numpy(decoded), tensor.float())


def test_fp16_refuses_a_finite_value_it_would_turn_into_infinity():
    with pytest.raises(BlobEncodingError, match="fp16 range"):
        encode_array(np.array([1.0, 70000.0], dtype=np.float32), FP16)


def test_bf16_refuses_a_finite_value_that_rounds_to_infinity():
    with pytest.raises(BlobEncodingError, match="bf16 range"):
        encode_array(np.array([np.finfo(np.float32).max], dtype=np.float32), BF16)


def test_codec_and_dtype_mismatches_are_refused():
    with pytest.raises(BlobEncodingError, match="integers"):
        encode_array(np.ones(3, dtype=np.float32), ZIGZAG_ZSTD)
    with pytest.raises(BlobEncodingError, match="floating-point"):
        encode_array(np.ones(3, dtype=np.int64), FP16)
    with pytest.raises(BlobEncodingError, match="not storable"):
        encode_array(np.ones(3, dtype=np.complex64), RAW)
    with pytest.raises(StorageValueError, match="unknown codec"):
        encode_array(np.ones(3, dtype=np.int64), "gzip")
    with pytest.raises(StorageValueError, match="level"):
        encode_array(np.ones(3, dtype=np.int64), ZIGZAG_ZSTD, level=23)


def test_header_records_codec_dtype_and_shape():
    blob = encode_array(np.zeros((2, 3, 5), dtype=np.float64), FP16)
    header = read_header(blob)
    assert (header.codec, header.dtype, header.shape) == (FP16, np.dtype(np.float64), (2, 3, 5))
    assert header.total_bytes == len(blob)
    assert header.payload_bytes == 2 * 30


BLOBS = {
    codec: encode_array(
        np.arange(-40, 40, dtype=np.int64) if codec in (RAW, ZIGZAG_ZSTD) else np.linspace(-3, 3, 80, dtype=np.float32),
        codec,
    )
    for codec in CODEC_NAMES
}


@settings(max_examples=120, deadline=None)
@given(codec=st.sampled_from(CODEC_NAMES), data=st.data())
def test_any_flipped_byte_raises_corrupt_blob_error(codec, data):
    blob = bytearray(BLOBS[codec])
    position = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    blob[position] ^= flip
    with pytest.raises(CorruptBlobError):
        decode_array(bytes(blob))


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_every_truncation_and_extension_raises_corrupt_blob_error(codec):
    blob = BLOBS[codec]
    for length in range(len(blob)):
        with pytest.raises(CorruptBlobError):
            decode_array(blob[:length])
    with pytest.raises(CorruptBlobError, match="promises"):
        decode_array(blob + b"\0")


def test_corrupt_blob_errors_say_what_is_wrong():
    blob = BLOBS[ZIGZAG_ZSTD]
    with pytest.raises(CorruptBlobError, match="magic"):
        decode_array(b"XXXX" + blob[4:])
    with pytest.raises(CorruptBlobError, match="checksum"):
        decode_array(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(StorageValueError, match="bytes"):
        decode_array("not bytes")


@pytest.mark.parametrize("sigma", [0.3, 1.0, 5.0, 40.0])
def test_entropy_coding_is_within_a_few_percent_of_the_empirical_entropy(sigma):
    # Rounded Gaussians stand in for lattice coordinates. The empirical entropy H of the symbols
    # is what an ideal i.i.d. coder would reach; zstd's byte-level coding must stay within 8 %
    # (+0.05 bit) of it, and far below the 64 bits of the raw int64 array.
    values = np.round(np.random.default_rng(7).standard_normal(200_000) * sigma).astype(np.int64)
    _, counts = np.unique(values, return_counts=True)
    probabilities = counts / values.size
    entropy = float(-(probabilities * np.log2(probabilities)).sum())
    bits = bits_per_parameter(encode_array(values, ZIGZAG_ZSTD))
    assert entropy <= bits <= 1.08 * entropy + 0.05


def test_bits_per_parameter_counts_the_header_and_refuses_empty_arrays():
    blob = encode_array(np.zeros(1000, dtype=np.float32), RAW)
    assert bits_per_parameter(blob) == 8 * len(blob) / 1000
    with pytest.raises(StorageValueError):
        bits_per_parameter(encode_array(np.zeros(0, dtype=np.int64), ZIGZAG_ZSTD))
