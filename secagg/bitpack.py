"""Exact b-bit packing of ``uint32`` vectors: ceil(m*b/8) bytes, little-endian bit order.

Coordinate i occupies stream bits [i*b, (i+1)*b), least significant bit first, where stream bit k
is bit (k mod 8) of byte k // 8; equivalently the byte string read as one little-endian integer is
Σ_i v_i 2**(i*b). The unused high bits of the last byte are zero and are checked on unpacking, so
every vector has exactly one encoding (Flower ships int64 .npy: 8 bytes per coordinate).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from secagg.errors import ConfigurationError, MalformedMessageError

MAX_BITS = 32
_BYTES_LIKE = (bytes, bytearray, memoryview)
_LITTLE_WORD = np.dtype("<u4")

__all__ = ["pack_bits", "packed_length", "unpack_bits"]


@njit(cache=True, nogil=True)
def _pack_words(values, bits, words):  # pragma: no cover - compiled
    """Pack ``values`` into ``words`` (uint32, zero-filled); return the OR of all bits above ``bits``."""
    accumulator = np.uint64(0)
    filled = 0  # bits held in accumulator, always < 32 between iterations
    out = 0
    overflow = np.uint64(0)
    for i in range(values.shape[0]):
        value = np.uint64(values[i])
        overflow |= value >> np.uint64(bits)
        accumulator |= value << np.uint64(filled)
        filled += bits
        if filled >= 32:
            words[out] = np.uint32(accumulator & np.uint64(0xFFFFFFFF))
            out += 1
            accumulator >>= np.uint64(32)
            filled -= 32
    if filled > 0:
        words[out] = np.uint32(accumulator)
    return overflow


@njit(cache=True, nogil=True)
def _unpack_words(words, bits, values):  # pragma: no cover - compiled
    low_bits_mask = np.uint64((1 << bits) - 1)
    accumulator = np.uint64(0)
    filled = 0  # bits held in accumulator, always < bits before a refill
    source = 0
    for i in range(values.shape[0]):
        if filled < bits:
            accumulator |= np.uint64(words[source]) << np.uint64(filled)
            source += 1
            filled += 32
        values[i] = np.uint32(accumulator & low_bits_mask)
        accumulator >>= np.uint64(bits)
        filled -= bits


def _check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ConfigurationError(f"bits must be an int, got {type(bits).__name__}")
    if not 1 <= bits <= MAX_BITS:
        raise ConfigurationError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    return int(bits)


def _check_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ConfigurationError(f"count must be a non-negative int, got {count!r}")
    return int(count)


def packed_length(count: int, bits: int) -> int:
    """ceil(count * bits / 8): the exact size in bytes of ``count`` packed ``bits``-bit values.

    Raises:
        ConfigurationError: ``count`` is negative or ``bits`` is not in 1..32.
    """
    return (_check_count(count) * _check_bits(bits) + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack ``(m,) uint32`` values, each < 2**bits, into exactly ceil(m*bits/8) bytes.

    Raises:
        ConfigurationError: ``values`` is not a 1-D uint32 array, ``bits`` is not in 1..32, or a
            value is >= 2**bits (it would be silently truncated otherwise).
    """
    bits = _check_bits(bits)
    if not isinstance(values, np.ndarray) or values.dtype != np.uint32 or values.ndim != 1:
        raise ConfigurationError("values must be a 1-D numpy uint32 array")
    count = values.shape[0]
    words = np.zeros((count * bits + 31) // 32, dtype=np.uint32)
    overflow = _pack_words(np.ascontiguousarray(values), bits, words)
    if overflow:
        largest = int(values.max())
        raise ConfigurationError(f"value {largest} does not fit in {bits} bits (max {2**bits - 1})")
    little_endian = words.astype(_LITTLE_WORD, copy=False)  # a no-op on little-endian hosts
    return little_endian.view(np.uint8)[: packed_length(count, bits)].tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits``: ``(count,) uint32``, each < 2**bits.

    Raises:
        MalformedMessageError: ``data`` is not bytes, its length is not exactly
            ceil(count*bits/8), or the padding bits after the last value are not zero.
        ConfigurationError: ``bits`` is not in 1..32 or ``count`` is not a non-negative int.
    """
    bits, count = _check_bits(bits), _check_count(count)
    if not isinstance(data, _BYTES_LIKE):
        raise MalformedMessageError(f"packed data must be bytes, got {type(data).__name__}")
    raw = memoryview(data).cast("B")
    expected = packed_length(count, bits)
    if len(raw) != expected:
        raise MalformedMessageError(
            f"{count} values of {bits} bits pack into {expected} bytes, got {len(raw)}"
        )
    used_in_last_byte = (count * bits) % 8
    if used_in_last_byte and raw[-1] >> used_in_last_byte:
        raise MalformedMessageError("padding bits after the last value are not zero")
    padded = np.zeros(((expected + 3) // 4) * 4, dtype=np.uint8)
    padded[:expected] = np.frombuffer(raw, dtype=np.uint8)
    words = padded.view(_LITTLE_WORD)
    values = np.empty(count, dtype=np.uint32)
    _unpack_words(words if words.dtype.isnative else words.astype(np.uint32), bits, values)
    return values
