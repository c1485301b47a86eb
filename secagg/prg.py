"""The one PRG of fedvault: AES-256-CTR keyed through HKDF with context, for masks and public draws.

Construction (docs/ALGORITHMS.md §1.2): for every (seed, purpose) the AES key is
``derive_key(seed, salt=b"", info=encode_parts(label, info, length, ...))``; the counter block starts
at zero and the key is never reused for another stream, so the zero IV is safe. The keystream is
read as little-endian words. Masks keep the low b bits of each 32-bit word: 2**b divides 2**32,
so each entry is exactly uniform on [0, 2**b) (no modulo bias, and 2**b - 1 does occur, unlike
``randint(0, 2**b - 1)``). The full 32-byte seed keys HKDF: nothing is folded into a short seed.

Throughput: the keystream is written by ``update_into`` into a per-thread 256 KiB scratch buffer
(fresh buffers run an order of magnitude slower) and added to the accumulator chunk by chunk by a
numba kernel, one pass over memory. See bench/prg_bench.py.
"""

from __future__ import annotations

import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numba import njit

from secagg.context import encode_parts
from secagg.errors import ConfigurationError, InvalidKeyError
from secagg.kdf import derive_key

SEED_LENGTH = 32
MAX_BITS = 32
# 2**32 words is 16 GiB of keystream, far beyond any model; the AES-CTR counter never wraps.
MAX_LENGTH = 2**32
_MASK_LABEL = "fedvault/prg"
_FLOATS_LABEL = "fedvault/prg/uniform_floats"
_SIGNS_LABEL = "fedvault/prg/random_signs"
_BELOW_LABEL = "fedvault/prg/random_below"
_CHUNK_BYTES = 1 << 18  # 256 KiB: stays in L2 between the AES write and the add; as fast as one pass.
_CHUNK_WORDS = _CHUNK_BYTES // 4
_ZEROS = bytes(_CHUNK_BYTES)  # immutable plaintext: AES-CTR of zeros is the keystream itself
_ZERO_COUNTER_BLOCK = bytes(16)
_BYTES_LIKE = (bytes, bytearray, memoryview)
_LITTLE_WORD = np.dtype("<u4")
_LITTLE_DOUBLE_WORD = np.dtype("<u8")

__all__ = [
    "MAX_BITS",
    "MAX_LENGTH",
    "SEED_LENGTH",
    "add_mask",
    "expand_mask",
    "random_below",
    "random_signs",
    "uniform_floats",
]


class _Scratch(threading.local):
    """One keystream buffer per thread, allocated once: ``add_mask`` never allocates per call."""

    def __init__(self) -> None:
        self.keystream = np.empty(_CHUNK_BYTES, dtype=np.uint8)


_scratch = _Scratch()


@njit(cache=True, nogil=True)
def _add_reduce(accumulator, keystream, low_bits_mask):  # pragma: no cover - compiled
    # uint32 operands promote to 64 bits in numba; the store truncates mod 2**32 and the mask
    # reduces mod 2**b, which is exact because 2**b divides 2**32.
    for i in range(accumulator.shape[0]):
        accumulator[i] = (accumulator[i] + keystream[i]) & low_bits_mask


@njit(cache=True, nogil=True)
def _subtract_reduce(accumulator, keystream, low_bits_mask):  # pragma: no cover - compiled
    for i in range(accumulator.shape[0]):
        accumulator[i] = (accumulator[i] - keystream[i]) & low_bits_mask


def _check_seed(seed: object) -> bytes:
    if not isinstance(seed, _BYTES_LIKE):
        raise InvalidKeyError(f"seed must be {SEED_LENGTH} bytes, got {type(seed).__name__}")
    if len(seed) != SEED_LENGTH:
        raise InvalidKeyError(f"seed must be {SEED_LENGTH} bytes, got {len(seed)}")
    return bytes(seed)


def _check_info(info: object) -> bytes:
    if not isinstance(info, _BYTES_LIKE):
        raise ConfigurationError(f"info must be bytes, got {type(info).__name__}")
    return bytes(info)


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigurationError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value <= MAX_LENGTH:
        raise ConfigurationError(f"{name} must be in 0..{MAX_LENGTH}, got {value}")
    return value


def _check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ConfigurationError(f"bits must be an int, got {type(bits).__name__}")
    bits = int(bits)
    if not 1 <= bits <= MAX_BITS:
        raise ConfigurationError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    return bits


def _keystream(seed: bytes, *context: bytes | str | int):
    """A fresh AES-256-CTR encryptor whose key is bound to ``context``; used for one stream only."""
    key = derive_key(seed, salt=b"", info=encode_parts(*context))
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_COUNTER_BLOCK)).encryptor()


def _fill(encryptor, destination: np.ndarray) -> None:
    """Write the next ``destination.nbytes`` keystream bytes into the contiguous ``destination``."""
    out = destination.reshape(-1).view(np.uint8)
    zeros = memoryview(_ZEROS)
    for start in range(0, out.shape[0], _CHUNK_BYTES):
        stop = min(start + _CHUNK_BYTES, out.shape[0])
        encryptor.update_into(zeros[: stop - start], out[start:stop])


def _native(words: np.ndarray, dtype: type) -> np.ndarray:
    # A no-op on little-endian hosts; a byte swap elsewhere, so results are platform independent.
    return words if words.dtype.isnative else words.astype(dtype)


def expand_mask(seed: bytes, info: bytes, length: int, bits: int) -> np.ndarray:
    """The mask PRG(seed) for one tensor: ``(length,) uint32``, each entry uniform on [0, 2**bits).

    Args:
        seed: 32-byte secret seed (self-mask seed b_i or pairwise seed s_ij).
        info: caller context, ``encode_parts(instance_id, round, tensor_name, ...)``.
        length: number of coordinates m (0 .. 2**32).
        bits: b, 1 .. 32.

    Raises:
        InvalidKeyError: the seed is not 32 bytes.
        ConfigurationError: ``info``, ``length`` or ``bits`` is invalid.
    """
    seed, info = _check_seed(seed), _check_info(info)
    length, bits = _check_count(length, "length"), _check_bits(bits)
    encryptor = _keystream(seed, _MASK_LABEL, info, length, bits)
    words = np.empty(length, dtype=_LITTLE_WORD)
    _fill(encryptor, words)
    mask = _native(words, np.uint32)
    if bits < MAX_BITS:
        np.bitwise_and(mask, np.uint32((1 << bits) - 1), out=mask)
    return mask


def add_mask(
    accumulator: np.ndarray, seed: bytes, info: bytes, bits: int, *, subtract: bool = False
) -> None:
    """In place: ``accumulator = (accumulator ± expand_mask(seed, info, m, bits)) mod 2**bits``.

    Equal to adding ``expand_mask`` (same key, same stream), without materialising the mask: the
    keystream goes through a reused per-thread 256 KiB buffer.

    Args:
        accumulator: ``(m,) uint32``, C-contiguous and writeable; any values (reduced mod 2**bits).
        seed, info, bits: as for ``expand_mask``; the length is ``accumulator.shape[0]``.
        subtract: subtract the mask instead of adding it.

    Raises:
        InvalidKeyError: the seed is not 32 bytes.
        ConfigurationError: the accumulator is not a writeable contiguous 1-D uint32 array, or
            ``info``/``bits`` is invalid.
    """
    if not isinstance(accumulator, np.ndarray):
        raise ConfigurationError(f"accumulator must be a numpy array, got {type(accumulator).__name__}")
    if accumulator.dtype != np.uint32 or accumulator.ndim != 1:
        raise ConfigurationError(
            f"accumulator must be a 1-D uint32 array, got {accumulator.ndim}-D {accumulator.dtype}"
        )
    if not accumulator.flags.c_contiguous or not accumulator.flags.writeable:
        raise ConfigurationError("accumulator must be C-contiguous and writeable")
    seed, info, bits = _check_seed(seed), _check_info(info), _check_bits(bits)
    length = _check_count(accumulator.shape[0], "length")
    encryptor = _keystream(seed, _MASK_LABEL, info, length, bits)
    low_bits_mask = np.uint32((1 << bits) - 1)
    kernel = _subtract_reduce if subtract else _add_reduce
    scratch = _scratch.keystream
    zeros = memoryview(_ZEROS)
    for start in range(0, length, _CHUNK_WORDS):
        count = min(_CHUNK_WORDS, length - start)
        encryptor.update_into(zeros[: 4 * count], scratch[: 4 * count])
        words = _native(scratch[: 4 * count].view(_LITTLE_WORD), np.uint32)
        kernel(accumulator[start : start + count], words, low_bits_mask)


def uniform_floats(seed: bytes, info: bytes, count: int) -> np.ndarray:
    """``(count,) float64`` uniform on [0, 1): k / 2**53 with k the top 53 bits of a 64-bit word.

    Not secret material (dithers derived from a public round seed), but drawn from the same PRG
    so that one construction serves everything. Same validation and errors as ``expand_mask``.
    """
    seed, info, count = _check_seed(seed), _check_info(info), _check_count(count, "count")
    encryptor = _keystream(seed, _FLOATS_LABEL, info, count)
    words = np.empty(count, dtype=_LITTLE_DOUBLE_WORD)
    _fill(encryptor, words)
    # Integers below 2**53 and the power-of-two scale are exact in float64: no rounding to 1.0.
    # In place: one float64 allocation instead of three temporaries (~4x faster at 1e6).
    native = _native(words, np.uint64)
    np.right_shift(native, np.uint64(11), out=native)
    floats = native.astype(np.float64)
    floats *= 2.0**-53
    return floats


def random_signs(seed: bytes, info: bytes, count: int) -> np.ndarray:
    """``(count,) int8`` in {-1, +1}, each independent and fair (one keystream bit each).

    Same validation and errors as ``expand_mask``.
    """
    seed, info, count = _check_seed(seed), _check_info(info), _check_count(count, "count")
    encryptor = _keystream(seed, _SIGNS_LABEL, info, count)
    stream = np.empty((count + 7) // 8, dtype=np.uint8)
    _fill(encryptor, stream)
    bits = np.unpackbits(stream, count=count, bitorder="little").view(np.int8)
    return (1 - 2 * bits).astype(np.int8, copy=False)


def random_below(seed: bytes, info: bytes, count: int, bound: int) -> np.ndarray:
    """``(count,) int64`` uniform on [0, bound) by rejection, reproducible from ``seed``.

    Each draw is a 64-bit little-endian keystream word cut to the bit length of ``bound - 1``;
    words >= bound are skipped (acceptance > 1/2), so there is no modulo bias. The result is the
    first ``count`` accepted words in stream order, whatever the internal batch size.

    Args:
        bound: 1 .. 2**63.

    Raises:
        InvalidKeyError: the seed is not 32 bytes.
        ConfigurationError: ``info``, ``count`` or ``bound`` is invalid.
    """
    seed, info, count = _check_seed(seed), _check_info(info), _check_count(count, "count")
    if isinstance(bound, bool) or not isinstance(bound, (int, np.integer)):
        raise ConfigurationError(f"bound must be an int, got {type(bound).__name__}")
    bound = int(bound)
    if not 1 <= bound <= 2**63:
        raise ConfigurationError(f"bound must be in 1..2**63, got {bound}")
    # bound - 1 (the largest value) fits the signed 64-bit context field even for bound = 2**63.
    encryptor = _keystream(seed, _BELOW_LABEL, info, count, bound - 1)
    low_bits_mask = np.uint64((1 << (bound - 1).bit_length()) - 1)
    limit = np.uint64(bound - 1)
    result = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        needed = count - filled
        # Expected acceptance is above 1/2, so twice the need (plus slack) usually finishes in one batch.
        words = np.empty(2 * needed + 64, dtype=_LITTLE_DOUBLE_WORD)
        _fill(encryptor, words)
        candidates = _native(words, np.uint64) & low_bits_mask
        accepted = candidates[candidates <= limit][:needed]
        result[filled : filled + accepted.shape[0]] = accepted
        filled += accepted.shape[0]
    return result
