"""Self-describing array blobs: lattice integers entropy-coded, floats as fp16/bf16, or raw.

Every blob is ``header || payload``::

    offset  size      field
    0       4         magic b"FVBL"
    4       1         format version (1)
    5       1         codec id            (CODEC_IDS)
    6       1         logical dtype code  (what decode returns)
    7       1         ndim                (0..MAX_NDIM)
    8       8*ndim    shape, uint64 little-endian
    .       8         payload length in bytes, uint64 little-endian
    .       16        BLAKE2b-128 of every header byte before it, then of the payload
    .       ...       payload

Codecs (the payload):

- ``raw``: the array's bytes, little-endian, any supported dtype. Exact.
- ``zigzag-zstd``: integers (e.g. summed lattice coordinates, ``(m,) int64``). Signed values are
  zigzag-mapped (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...) so small magnitudes become small unsigned
  numbers, stored at the narrowest width of 1, 2, 4, 8, 16, 32 or 64 bits that holds the largest
  (sub-byte widths packed several to a byte, low bits first; wider ones split into byte planes, all
  low bytes then the next ...) and compressed with Zstandard, whose Huffman/FSE literal coding and
  match finder are the entropy coder. Payload = width-in-bits byte || zstd frame. Exact.
- ``fp16``: IEEE binary16 (11-bit significand). A finite value beyond ±65504 is refused rather
  than silently stored as infinity. Decodes to the original float dtype.
- ``bf16``: bfloat16, float32 rounded to nearest-even to its top 16 bits (8-bit significand, full
  float32 range). Decodes to the original float dtype.

The checksum is for accidental damage (torn pages, bit rot, truncation); it is not a MAC. Sealed
history records are authenticated by their own AEAD tag, and the audit log records each blob's
SHA-256.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from storage.errors import BlobEncodingError, CorruptBlobError, StorageValueError

MAGIC = b"FVBL"
FORMAT_VERSION = 1
MAX_NDIM = 32
CHECKSUM_BYTES = 16
#: Zstandard level for ``zigzag-zstd``. On i.i.d. lattice coordinates of low entropy (< 3 bits)
#: level 19's long-range matching beats the fast levels by 15-25 %; above ~4 bits all levels are
#: within 1 % of each other (measured: bench/storage_bench.py). Level 19 costs about 0.4 s per
#: million coordinates on one core; pass ``level=3`` where encode time matters more than bytes.
DEFAULT_ZSTD_LEVEL = 19

RAW = "raw"
ZIGZAG_ZSTD = "zigzag-zstd"
FP16 = "fp16"
BF16 = "bf16"
CODEC_IDS: dict[str, int] = {RAW: 1, ZIGZAG_ZSTD: 2, FP16: 3, BF16: 4}
CODEC_NAMES = tuple(CODEC_IDS)
_CODEC_BY_ID = {number: name for name, number in CODEC_IDS.items()}

_DTYPE_CODES: dict[np.dtype, int] = {
    np.dtype(np.int8): 1,
    np.dtype(np.int16): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.int64): 4,
    np.dtype(np.uint8): 5,
    np.dtype(np.uint16): 6,
    np.dtype(np.uint32): 7,
    np.dtype(np.uint64): 8,
    np.dtype(np.float16): 9,
    np.dtype(np.float32): 10,
    np.dtype(np.float64): 11,
}
_DTYPE_BY_CODE = {code: dtype for dtype, code in _DTYPE_CODES.items()}
_FIXED_HEADER = struct.Struct("<4sBBBB")
_UINT64 = struct.Struct("<Q")
_FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class BlobHeader:
    """What a blob's header says about it.

    ``dtype`` and ``shape`` are those :func:`decode_array` returns; ``header_bytes`` +
    ``payload_bytes`` is the blob's length.
    """

    codec: str
    dtype: np.dtype
    shape: tuple[int, ...]
    header_bytes: int
    payload_bytes: int

    @property
    def element_count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes


def as_numpy(array: Any) -> np.ndarray:
    """A numpy view or copy of ``array`` (numpy array, torch tensor on any device, or sequence).

    Torch is not imported here: a tensor is recognised by its ``detach``/``numpy`` methods, and a
    bfloat16 tensor (which numpy cannot represent) is widened to float32 first, exactly.
    """
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "detach") and hasattr(array, "numpy"):
        tensor = array.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as error:
        raise StorageValueError(f"cannot store {type(array).__name__} as an array: {error}") from None


def encode_array(array: Any, codec: str, *, level: int = DEFAULT_ZSTD_LEVEL) -> bytes:
    """Encode ``array`` (any shape) as a self-describing blob with ``codec`` (one of CODEC_NAMES).

    ``level`` is the Zstandard level (1..22) for ``zigzag-zstd`` and is ignored otherwise.
    Raises BlobEncodingError when the dtype does not suit the codec or a value does not fit.
    """
    if codec not in CODEC_IDS:
        raise StorageValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODEC_NAMES)}")
    values = as_numpy(array)
    if values.dtype not in _DTYPE_CODES:
        raise BlobEncodingError(
            f"dtype {values.dtype} is not storable; use one of "
            + ", ".join(sorted(str(d) for d in _DTYPE_CODES))
        )
    if values.ndim > MAX_NDIM:
        raise BlobEncodingError(f"arrays of more than {MAX_NDIM} dimensions are not storable")
    if codec == RAW:
        payload = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    elif codec == ZIGZAG_ZSTD:
        payload = _encode_zigzag_zstd(values, level)
    elif codec == FP16:
        payload = _encode_fp16(values)
    else:
        payload = _encode_bf16(values)
    return _assemble(codec, values.dtype, values.shape, payload)


def read_header(blob: bytes) -> BlobHeader:
    """Parse and check a blob's header and checksum without decoding the payload.

    Raises CorruptBlobError for a bad magic or version, an unknown codec or dtype, a length that
    disagrees with the header, or a checksum mismatch.
    """
    data = _as_bytes(blob)
    if len(data) < _FIXED_HEADER.size:
        raise CorruptBlobError(f"blob of {len(data)} bytes is shorter than a header")
    magic, version, codec_id, dtype_code, ndim = _FIXED_HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptBlobError(f"bad magic {magic!r}: not a fedvault blob")
    if version != FORMAT_VERSION:
        raise CorruptBlobError(f"blob format version {version} is not {FORMAT_VERSION}")
    if ndim > MAX_NDIM:
        raise CorruptBlobError(f"header claims {ndim} dimensions (at most {MAX_NDIM})")
    shape_end = _FIXED_HEADER.size + 8 * ndim
    header_bytes = shape_end + 8 + CHECKSUM_BYTES
    if len(data) < header_bytes:
        raise CorruptBlobError(f"blob of {len(data)} bytes is truncated inside its header")
    shape = struct.unpack_from(f"<{ndim}Q", data, _FIXED_HEADER.size)
    (payload_bytes,) = _UINT64.unpack_from(data, shape_end)
    if len(data) != header_bytes + payload_bytes:
        raise CorruptBlobError(
            f"blob is {len(data)} bytes but its header promises {header_bytes + payload_bytes}"
        )
    stored_checksum = data[shape_end + 8 : header_bytes]
    checksum = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    checksum.update(data[: shape_end + 8])
    checksum.update(data[header_bytes:])
    if checksum.digest() != stored_checksum:
        raise CorruptBlobError("blob checksum mismatch: the stored bytes were damaged")
    # Only trusted after the checksum: a damaged id must not be reported as "unknown codec".
    if codec_id not in _CODEC_BY_ID:
        raise CorruptBlobError(f"unknown codec id {codec_id}")
    if dtype_code not in _DTYPE_BY_CODE:
        raise CorruptBlobError(f"unknown dtype code {dtype_code}")
    return BlobHeader(
        codec=_CODEC_BY_ID[codec_id],
        dtype=_DTYPE_BY_CODE[dtype_code],
        shape=tuple(int(n) for n in shape),
        header_bytes=header_bytes,
        payload_bytes=int(payload_bytes),
    )


def decode_array(blob: bytes) -> np.ndarray:
    """Decode a blob written by :func:`encode_array`: a new, writable array of its dtype and shape.

    Raises CorruptBlobError when the blob is damaged in any way.
    """
    data = _as_bytes(blob)
    header = read_header(data)
    payload = memoryview(data)[header.header_bytes :]
    count = header.element_count
    if header.codec == RAW:
        flat = _frombuffer(payload, header.dtype.newbyteorder("<"), count).astype(header.dtype)
    elif header.codec == ZIGZAG_ZSTD:
        flat = _decode_zigzag_zstd(payload, header.dtype, count)
    elif header.codec == FP16:
        flat = _frombuffer(payload, np.dtype("<f2"), count).astype(header.dtype)
    else:
        bits = _frombuffer(payload, np.dtype("<u2"), count).astype(np.uint32) << 16
        flat = bits.view(np.float32).astype(header.dtype)
    return flat.reshape(header.shape)


def bits_per_parameter(blob: bytes) -> float:
    """Stored bits per array element, header included: ``8 * len(blob) / element_count``."""
    header = read_header(blob)
    if header.element_count == 0:
        raise StorageValueError("an empty array has no bits per parameter")
    return 8.0 * header.total_bytes / header.element_count


# --- codec internals -----------------------------------------------------------------------------


def _assemble(codec: str, dtype: np.dtype, shape: tuple[int, ...], payload: bytes) -> bytes:
    prefix = _FIXED_HEADER.pack(MAGIC, FORMAT_VERSION, CODEC_IDS[codec], _DTYPE_CODES[dtype], len(shape))
    prefix += struct.pack(f"<{len(shape)}Q", *shape) + _UINT64.pack(len(payload))
    checksum = hashlib.blake2b(prefix, digest_size=CHECKSUM_BYTES)
    checksum.update(payload)
    return prefix + checksum.digest() + payload


def _as_bytes(blob: Any) -> bytes:
    if isinstance(blob, (bytes, bytearray, memoryview)):
        return bytes(blob)
    raise StorageValueError(f"a blob must be bytes, got {type(blob).__name__}")


def _frombuffer(payload: memoryview, dtype: np.dtype, count: int) -> np.ndarray:
    if len(payload) != count * dtype.itemsize:
        raise CorruptBlobError(
            f"payload of {len(payload)} bytes does not hold {count} values of {dtype.itemsize} bytes"
        )
    return np.frombuffer(payload, dtype=dtype, count=count)


_WIDTHS_BITS = (1, 2, 4, 8, 16, 32, 64)


def _encode_zigzag_zstd(values: np.ndarray, level: int) -> bytes:
    if values.dtype.kind not in "iu":
        raise BlobEncodingError(f"zigzag-zstd stores integers, got {values.dtype}")
    if not (isinstance(level, int) and 1 <= level <= 22):
        raise StorageValueError(f"zstd level must be an int in 1..22, got {level!r}")
    flat = values.reshape(-1)
    if values.dtype.kind == "i":
        signed = flat.astype(np.int64)
        # Zigzag: x >= 0 -> 2x, x < 0 -> -2x - 1; exact on the whole int64 range in uint64.
        unsigned = (signed.view(np.uint64) << np.uint64(1)) ^ (signed >> 63).view(np.uint64)
    else:
        unsigned = flat.astype(np.uint64)
    largest = int(unsigned.max()) if unsigned.size else 0
    width = next(w for w in _WIDTHS_BITS if largest < 1 << w)
    if width < 8:
        # Several symbols per byte: zstd's literal coder spends at least ~1 bit per byte, so
        # low-entropy coordinates (|z| <= 1 is common) compress far better when packed first.
        per_byte = 8 // width
        padded = np.zeros(-(-unsigned.size // per_byte) * per_byte, dtype=np.uint8)
        padded[: unsigned.size] = unsigned
        lanes = padded.reshape(-1, per_byte)
        packed = np.zeros(lanes.shape[0], dtype=np.uint8)
        for lane in range(per_byte):
            packed |= lanes[:, lane] << np.uint8(lane * width)
        body = packed.tobytes()
    else:
        narrow = unsigned.astype(np.dtype(f"<u{width // 8}"))
        # Byte planes: the high bytes of small numbers are all zero and compress to almost nothing.
        body = np.ascontiguousarray(narrow.view(np.uint8).reshape(-1, width // 8).T).tobytes()
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return bytes([width]) + compressor.compress(body)


def _decode_zigzag_zstd(payload: memoryview, dtype: np.dtype, count: int) -> np.ndarray:
    if dtype.kind not in "iu":
        raise CorruptBlobError(f"zigzag-zstd blob claims non-integer dtype {dtype}")
    if len(payload) < 1 or payload[0] not in _WIDTHS_BITS:
        raise CorruptBlobError("zigzag-zstd payload has no valid bit width")
    width = payload[0]
    expected = -(-count * width // 8) if width < 8 else count * (width // 8)
    try:
        raw = zstandard.ZstdDecompressor().decompress(bytes(payload[1:]), max_output_size=expected)
    except zstandard.ZstdError as error:
        raise CorruptBlobError(f"zstd frame does not decompress: {error}") from None
    if len(raw) != expected:
        raise CorruptBlobError(f"zstd frame holds {len(raw)} bytes, expected {expected}")
    if width < 8:
        per_byte = 8 // width
        packed = np.frombuffer(raw, dtype=np.uint8)
        mask = np.uint8((1 << width) - 1)
        lanes = np.empty((packed.size, per_byte), dtype=np.uint8)
        for lane in range(per_byte):
            lanes[:, lane] = (packed >> np.uint8(lane * width)) & mask
        unsigned = lanes.reshape(-1)[:count].astype(np.uint64)
    else:
        planes = np.frombuffer(raw, dtype=np.uint8).reshape(width // 8, count)
        unsigned = np.ascontiguousarray(planes.T).view(np.dtype(f"<u{width // 8}")).reshape(count)
        unsigned = unsigned.astype(np.uint64)
    if dtype.kind == "u":
        if count and int(unsigned.max()) > np.iinfo(dtype).max:
            raise CorruptBlobError(f"decoded value does not fit {dtype}")
        return unsigned.astype(dtype)
    signed = (unsigned >> np.uint64(1)).view(np.int64) ^ -(unsigned & np.uint64(1)).view(np.int64)
    info = np.iinfo(dtype)
    if count and (int(signed.min()) < info.min or int(signed.max()) > info.max):
        raise CorruptBlobError(f"decoded value does not fit {dtype}")
    return signed.astype(dtype)


def _check_float(values: np.ndarray, codec: str) -> None:
    if values.dtype.kind != "f":
        raise BlobEncodingError(f"{codec} stores floating-point arrays, got {values.dtype}")


def _encode_fp16(values: np.ndarray) -> bytes:
    _check_float(values, FP16)
    finite = np.isfinite(values)
    if np.any(np.abs(values[finite]) > _FP16_MAX):
        raise BlobEncodingError(
            f"a finite value exceeds the fp16 range ±{_FP16_MAX:g}; store it with codec 'bf16' or 'raw'"
        )
    return np.ascontiguousarray(values, dtype="<f2").tobytes()


def _encode_bf16(values: np.ndarray) -> bytes:
    _check_float(values, BF16)
    with np.errstate(over="ignore"):
        single = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    bits = single.view(np.uint32)
    # Round to nearest, ties to even, on the 16 bits that are dropped.
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) >> 16
    nan = np.isnan(single)
    rounded[nan] = 0x7FC0  # a quiet NaN; rounding a NaN's payload could carry it into infinity
    overflowed = np.isinf((rounded.astype(np.uint32) << 16).view(np.float32)) & np.isfinite(values.reshape(-1))
    if np.any(overflowed):
        raise BlobEncodingError("a finite value rounds beyond the bf16 range; store it with codec 'raw'")
    return rounded.astype("<u2").tobytes()
