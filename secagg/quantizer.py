"""Subtractive-dithered lattice quantizer: x ↦ integer coordinates, and sums of them back to sums of x.

With a dither d uniform on the Voronoi cell V_0 (regenerated from a seed, never sent), the encoder
sends z = coords(Q_Λ(x/Δ + d)) and the decoder forms x̂ = Δ(zG − d). The error x̂ − x is then
uniform on −ΔV_0 and independent of x (Zamir & Feder, "On lattice quantization noise", IEEE
Trans. IT 42(4), 1996), with per-coordinate MSE Δ²·G(Λ)·V^{2/n}. Because decoding is linear in z,
Σ_i x̂_i = Δ((Σ_i z_i)G − Σ_i d_i): a secure sum of the z_i decodes to the sum of the x̂_i
(docs/ALGORITHMS.md §2.2–2.3). Quantization is a true nearest-point search, never Babai rounding.

Two backends compute identical results: "numba" (fused kernels, the default) and "numpy" (the
readable reference the tests hold the kernels to, bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from secagg import lattice_kernels, prg
from secagg.errors import ConfigurationError, LatticeError
from secagg.lattice import (
    MAX_ABS_COORDINATE,
    MAX_ABS_INTEGER_COORDINATE,
    Lattice,
    integers_within,
    sequential_matmul,
)

__all__ = ["BACKENDS", "DitheredQuantizer"]

BACKENDS = ("numba", "numpy")



def _check_vector(x: object, what: str) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 1:
        raise LatticeError(f"{what} must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise LatticeError(f"{what} must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise LatticeError(f"{what} contains NaN or infinity")
    return array


def _check_integers(z: object, expected_length: int, what: str) -> np.ndarray:
    array = np.asarray(z)
    if array.ndim != 1:
        raise LatticeError(f"{what} must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise LatticeError(f"{what} must be integers, got dtype {array.dtype}")
    if array.shape[0] != expected_length:
        raise LatticeError(f"{what} has {array.shape[0]} coordinates, expected {expected_length}")
    if not integers_within(array, MAX_ABS_INTEGER_COORDINATE):
        raise LatticeError(f"{what} has entries above 2**44 in magnitude; not a valid encoding")
    return np.ascontiguousarray(array, dtype=np.int64)


@dataclass(frozen=True)
class DitheredQuantizer:
    """Encoder/decoder for one lattice and one common step Δ.

    Attributes:
        lattice: the lattice (``secagg.lattice.get_lattice``).
        step: Δ > 0, the scale of the lattice in input units (a coordinate of x̂ − x has mean
            square Δ²·G(Λ)·V^{2/n}).
        backend: "numba" (default) or "numpy" (reference); the results are identical.
    """

    lattice: Lattice
    step: float
    backend: str = "numba"

    def __post_init__(self) -> None:
        if not isinstance(self.lattice, Lattice):
            raise LatticeError(f"lattice must be a secagg.lattice.Lattice, got {type(self.lattice).__name__}")
        if isinstance(self.step, bool) or not isinstance(self.step, (int, float, np.floating, np.integer)):
            raise ConfigurationError(f"step must be a number, got {type(self.step).__name__}")
        if not math.isfinite(self.step) or self.step <= 0:
            raise ConfigurationError(f"step must be a finite number > 0, got {self.step}")
        object.__setattr__(self, "step", float(self.step))
        if self.backend not in BACKENDS:
            raise ConfigurationError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def blocks(self, length: int) -> int:
        """Number of n-blocks for a vector of ``length`` entries (the last one zero-padded)."""
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ConfigurationError(f"length must be an int >= 0, got {length!r}")
        return -(-int(length) // self.lattice.dimension)

    def coordinates(self, length: int) -> int:
        """Number of integer coordinates ``encode`` produces for ``length`` inputs: blocks·n."""
        return self.blocks(length) * self.lattice.dimension

    def _uniforms(self, seed: bytes, info: bytes, blocks: int) -> np.ndarray:
        return prg.uniform_floats(seed, info, blocks * self.lattice.dimension)

    def _reference_dither(self, uniforms: np.ndarray) -> np.ndarray:
        # Voronoi-uniform: u = rG is uniform on the fundamental parallelepiped; reducing it mod Λ
        # preserves volume, so u − Q(u) is uniform on V_0.
        u = sequential_matmul(uniforms.reshape(-1, self.lattice.dimension), self.lattice.generator)
        return u - self.lattice.nearest_point(u)

    def dither(self, seed: bytes, info: bytes, blocks: int) -> np.ndarray:
        """The dither for ``blocks`` blocks, regenerated from (seed, info).

        Args:
            seed: 32-byte seed (see ``secagg.prg``).
            info: context bytes (``secagg.context.encode_parts(...)``).
            blocks: number of n-blocks.
        Returns:
            (blocks, n) float64, uniform on the Voronoi cell of Λ (lattice units, not scaled by Δ).
        """
        if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 0:
            raise ConfigurationError(f"blocks must be an int >= 0, got {blocks!r}")
        uniforms = self._uniforms(seed, info, int(blocks))
        if self.backend == "numpy":
            return self._reference_dither(uniforms)
        return lattice_kernels.dither_blocks(self.lattice, uniforms).reshape(-1, self.lattice.dimension)

    def encode(self, x: np.ndarray, seed: bytes, info: bytes) -> np.ndarray:
        """z = coords(Q_Λ(x/Δ + d)) with d = ``dither(seed, info, blocks)``.

        Args:
            x: (m,) real vector (cast to float64).
            seed, info: the dither's seed and context.
        Returns:
            (blocks·n,) int64 lattice coordinates, blocks = ceil(m / n).
        Raises:
            LatticeError: x is not a finite 1-D real vector, or |x|/Δ is too large for exact coordinates.
        """
        vector = _check_vector(x, "x")
        scale = 1.0 / self.step
        if vector.size and np.max(np.abs(vector)) * scale > MAX_ABS_COORDINATE / 2:
            raise LatticeError("x/step exceeds 2**39 in magnitude; raise the step")
        blocks = self.blocks(vector.shape[0])
        padded = np.zeros(blocks * self.lattice.dimension)
        padded[: vector.shape[0]] = vector
        uniforms = self._uniforms(seed, info, blocks)
        if self.backend == "numba":
            return lattice_kernels.encode_blocks(self.lattice, padded, uniforms, scale)
        shifted = padded.reshape(blocks, self.lattice.dimension) * scale + self._reference_dither(uniforms)
        return self.lattice.to_coordinates(self.lattice.nearest_point(shifted)).reshape(-1)

    def decode(self, z: np.ndarray, seed: bytes, info: bytes, length: int) -> np.ndarray:
        """x̂ = Δ(zG − d): one contributor's reconstruction.

        Args:
            z: (blocks·n,) integers from ``encode`` of a length-``length`` vector.
            seed, info: the same dither seed and context as the encoder's.
            length: m, the original length.
        Returns:
            (length,) float64.
        """
        return self.decode_sum(z, [(seed, info)], length)

    def decode_sum(
        self, z_sum: np.ndarray, dither_keys: Sequence[tuple[bytes, bytes]], length: int
    ) -> np.ndarray:
        """Σ_i x̂_i = Δ((Σ_i z_i)G − Σ_i d_i) from the summed coordinates.

        Args:
            z_sum: (blocks·n,) integers, the exact sum of the contributors' encodings (e.g. the
                centred lift of a secure sum mod 2**b).
            dither_keys: one (seed, info) per contributor, each exactly once.
            length: m, the original length of every contributor's vector.
        Returns:
            (length,) float64, the sum of the contributors' reconstructions.
        Raises:
            LatticeError: z_sum has the wrong shape, dtype or range.
            ConfigurationError: a dither key is malformed.
        """
        blocks = self.blocks(length)
        count = blocks * self.lattice.dimension
        coordinates = _check_integers(z_sum, count, "z_sum")
        if isinstance(dither_keys, (bytes, str)) or not isinstance(dither_keys, Sequence):
            raise ConfigurationError("dither_keys must be a sequence of (seed, info) pairs")
        dither_sum = np.zeros(count)
        for position, key in enumerate(dither_keys):
            if not isinstance(key, tuple) or len(key) != 2:
                raise ConfigurationError(f"dither_keys[{position}] must be a (seed, info) pair")
            uniforms = self._uniforms(key[0], key[1], blocks)
            if self.backend == "numba":
                lattice_kernels.accumulate_dither(self.lattice, uniforms, dither_sum)
            else:
                dither_sum = dither_sum + self._reference_dither(uniforms).reshape(-1)
        if self.backend == "numba":
            decoded = lattice_kernels.decode_blocks(self.lattice, coordinates, dither_sum, self.step)
        else:
            points = self.lattice.from_coordinates(coordinates.reshape(blocks, self.lattice.dimension))
            decoded = (self.step * (points.reshape(-1) - dither_sum))
        return decoded[:length]
