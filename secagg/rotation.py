"""Randomized Hadamard rotation: spread a vector's energy evenly before lattice quantization.

x' = H·diag(ξ)·x/√d' with H the d'×d' Sylvester–Hadamard matrix, d' = 2^⌈log₂ d⌉ (zero padding)
and ξ ∈ {±1}^{d'} from the shared PRG (Suresh, Yu, Kumar, McMahan, "Distributed mean estimation
with limited communication", ICML 2017; docs/ALGORITHMS.md §2.6). H/√d' is orthogonal and
symmetric, so the rotation preserves the L2 norm and its inverse is diag(ξ)·H·x'/√d'. After it,
every coordinate is ≈ N(0, ‖x‖²/d'), which is what lets a modest bit width hold the sum.
Computed with the fast Walsh–Hadamard transform in O(d' log d').
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from secagg import prg
from secagg.errors import ConfigurationError, LatticeError

__all__ = ["MAX_DIMENSION", "padded_dimension", "rotate", "unrotate"]

MAX_DIMENSION = 2**31


@njit(cache=True)
def _walsh_hadamard_in_place(values):
    """values ← H·values (unnormalized, Sylvester order): butterflies of width 1, 2, 4, ..."""
    size = values.shape[0]
    half = 1
    while half < size:
        for first in range(0, size, 2 * half):
            # Views indexed from 0 let numba drop its negative-index checks, and LLVM vectorize:
            # 3x faster than indexing values[i], values[i + half] directly.
            left = values[first : first + half]
            right = values[first + half : first + 2 * half]
            for i in range(half):
                a = left[i]
                b = right[i]
                left[i] = a + b
                right[i] = a - b
        half *= 2


def padded_dimension(length: int) -> int:
    """d' = the smallest power of two >= ``length`` (``length`` >= 1)."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        raise ConfigurationError(f"length must be an int, got {type(length).__name__}")
    if not 1 <= length <= MAX_DIMENSION:
        raise ConfigurationError(f"length must be in 1..2**31, got {length}")
    return 1 << (int(length) - 1).bit_length()


def _signs(seed: bytes, info: bytes, size: int) -> np.ndarray:
    return prg.random_signs(seed, info, size).astype(np.float64)


def rotate(x: np.ndarray, seed: bytes, info: bytes) -> np.ndarray:
    """x' = H·diag(ξ)·[x, 0...]/√d'.

    Args:
        x: (d,) finite reals, d >= 1.
        seed: 32-byte seed shared by every client of the round (the same rotation for all, so sums
            rotate back to sums).
        info: context bytes for the signs (``encode_parts(...)``).
    Returns:
        (d',) float64 with d' = ``padded_dimension(d)``; ‖x'‖ = ‖x‖.
    Raises:
        LatticeError: x is not a finite 1-D real vector.
    """
    vector = np.asarray(x)
    if vector.ndim != 1 or vector.shape[0] == 0:
        raise LatticeError(f"x must be a non-empty 1-D array, got shape {vector.shape}")
    if vector.dtype.kind not in "iuf":
        raise LatticeError(f"x must be real numbers, got dtype {vector.dtype}")
    size = padded_dimension(vector.shape[0])
    rotated = np.zeros(size)
    rotated[: vector.shape[0]] = vector
    if not np.all(np.isfinite(rotated)):
        raise LatticeError("x contains NaN or infinity")
    rotated *= _signs(seed, info, size)
    _walsh_hadamard_in_place(rotated)
    rotated *= 1.0 / math.sqrt(size)
    return rotated


def unrotate(y: np.ndarray, seed: bytes, info: bytes, length: int) -> np.ndarray:
    """The inverse of ``rotate``: diag(ξ)·H·y/√d', truncated to the original ``length``.

    Args:
        y: (d',) finite reals, d' a power of two.
        seed, info: the same as for ``rotate``.
        length: d, the original length (``padded_dimension(length)`` must equal d').
    Returns:
        (length,) float64.
    Raises:
        LatticeError: y is not a finite 1-D real vector.
        ConfigurationError: ``length`` does not pad to len(y).
    """
    vector = np.asarray(y)
    if vector.ndim != 1 or vector.shape[0] == 0:
        raise LatticeError(f"y must be a non-empty 1-D array, got shape {vector.shape}")
    if vector.dtype.kind not in "iuf":
        raise LatticeError(f"y must be real numbers, got dtype {vector.dtype}")
    size = vector.shape[0]
    if padded_dimension(length) != size:
        raise ConfigurationError(f"length {length} pads to {padded_dimension(length)} coordinates, not {size}")
    restored = np.array(vector, dtype=np.float64)
    if not np.all(np.isfinite(restored)):
        raise LatticeError("y contains NaN or infinity")
    _walsh_hadamard_in_place(restored)
    restored *= 1.0 / math.sqrt(size)
    restored *= _signs(seed, info, size)
    return restored[:length].copy()
