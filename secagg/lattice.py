"""Lattices for vector quantization: Z, A2, D4, E8 with exact nearest-point search (numpy reference).

A lattice is Λ = {zG : z ∈ Z^n} with generator rows G (docs/ALGORITHMS.md §2.1). Vectors are cut
into n-blocks, so every array here has a trailing axis of length n: ``(..., n)``.

The nearest-point rules are Conway & Sloane's ("Fast quantizing and decoding algorithms for lattice
quantizers and codes", IEEE Trans. IT 28(2), 1982; SPLAG ch. 20). This module is the readable
numpy version and the oracle the tests hold the fast kernels of ``secagg.lattice_kernels`` to:
both perform the same floating-point operations in the same order, so they agree bit for bit.

One tie rule everywhere:
- rounding is IEEE round-half-to-even (``np.rint``);
- D_n's parity fix moves the first coordinate (lowest index) among those with the largest rounding
  error, towards x (upwards when x was already an integer);
- between two cosets (A2, E8) the first coset (the one containing the origin) wins a tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from secagg.errors import LatticeError

__all__ = ["LATTICE_NAMES", "Lattice", "get_lattice", "integers_within", "sequential_matmul"]

LATTICE_NAMES = ("Z", "A2", "D4", "E8")

_SQRT3 = math.sqrt(3.0)

# Lattice points and coordinates must stay exact in float64 (half-integers, sums of up to 64
# terms, all below 2**52); refuse inputs that could break that.
MAX_ABS_COORDINATE = 2.0**40
# Integer coordinates (one encoding or a sum of them) convert to float64 and multiply by G exactly.
MAX_ABS_INTEGER_COORDINATE = 2**44

# Coordinates computed as points @ G^{-1} carry float error only for A2 (irrational √3); a point
# further than this from an integer coordinate vector is not on the lattice.
_COORDINATE_TOLERANCE = 1e-6


def sequential_matmul(left: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``left @ matrix`` for ``(..., n) @ (n, n)``, summing k = 0, 1, ..., n−1 in that order.

    BLAS may reorder or fuse the sum; the fast kernels must reproduce this bit for bit, so the
    reference fixes the order.
    """
    out = left[..., 0:1] * matrix[0]
    for k in range(1, matrix.shape[0]):
        out = out + left[..., k : k + 1] * matrix[k]
    return out


def _sequential_square_sum(error: np.ndarray) -> np.ndarray:
    """Σ_k error_k² over the last axis, summed in index order (same order as the kernels)."""
    total = error[..., 0] * error[..., 0]
    for k in range(1, error.shape[-1]):
        total = total + error[..., k] * error[..., k]
    return total


def integers_within(array: np.ndarray, limit: int) -> bool:
    """True when every entry of the integer ``array`` lies in [−limit, limit].

    Compares instead of taking |x|: np.abs(−2**63) overflows back to −2**63.
    """
    return not array.size or (int(array.max()) <= limit and int(array.min()) >= -limit)


def _nearest_integer(x: np.ndarray) -> np.ndarray:
    """Z^n: round every coordinate, ties to even."""
    return np.rint(x)


def _nearest_dn(x: np.ndarray) -> np.ndarray:
    """D_n = {f ∈ Z^n : Σf even} (Conway & Sloane 1982, algorithm for D_n).

    Round every coordinate; if the sum is odd, re-round the coordinate with the largest rounding
    error the other way, i.e. one step towards x.
    """
    rounded = np.rint(x)
    error = x - rounded
    odd = (rounded.sum(axis=-1).astype(np.int64) & 1) == 1
    if np.any(odd):
        worst = np.argmax(np.abs(error), axis=-1)[..., None]
        worst_error = np.take_along_axis(error, worst, axis=-1)
        step = np.where(worst_error >= 0.0, 1.0, -1.0)
        fixed = rounded.copy()
        np.put_along_axis(fixed, worst, np.take_along_axis(rounded, worst, axis=-1) + step, axis=-1)
        rounded = np.where(odd[..., None], fixed, rounded)
    return rounded


def _nearest_e8(x: np.ndarray) -> np.ndarray:
    """E8 = D8 ∪ (D8 + ½·1) (Conway & Sloane 1982): the closer of the two coset candidates."""
    even = _nearest_dn(x)
    odd = _nearest_dn(x - 0.5) + 0.5
    distance_even = _sequential_square_sum(x - even)
    distance_odd = _sequential_square_sum(x - odd)
    return np.where((distance_odd < distance_even)[..., None], odd, even)


def _nearest_a2(x: np.ndarray) -> np.ndarray:
    """A2 = (Z × √3Z) ∪ ((Z + ½) × (√3Z + √3/2)): round into each rectangular coset, keep the closer."""
    first, second = x[..., 0], x[..., 1]
    even = np.stack((np.rint(first), _SQRT3 * np.rint(second / _SQRT3)), axis=-1)
    odd = np.stack(
        (np.rint(first - 0.5) + 0.5, _SQRT3 * (np.rint(second / _SQRT3 - 0.5) + 0.5)), axis=-1
    )
    distance_even = _sequential_square_sum(x - even)
    distance_odd = _sequential_square_sum(x - odd)
    return np.where((distance_odd < distance_even)[..., None], odd, even)


_NEAREST = MappingProxyType(
    {"Z": _nearest_integer, "A2": _nearest_a2, "D4": _nearest_dn, "E8": _nearest_e8}
)


@dataclass(frozen=True, eq=False)
class Lattice:
    """One lattice of the codec, with its constants.

    Attributes:
        name: "Z", "A2", "D4" or "E8".
        dimension: n, the block length.
        generator: (n, n) float64, read-only; rows generate the lattice.
        volume: |det G|, the volume of a Voronoi cell.
        normalized_second_moment: G(Λ) = E‖U‖²/(n·V^{2/n}), U uniform on the Voronoi cell
            (Conway & Sloane table; docs/ALGORITHMS.md §2.4).
        covering_radius: ρ, the largest distance from any point of R^n to the lattice.
        packing_radius: half the minimal distance; a point closer than this to a lattice point
            has that point as its unique nearest point.
        generator_inverse: (n, n) float64, read-only; exact (dyadic) for Z, D4, E8.

    Instances compare by identity; obtain them from ``get_lattice``.
    """

    name: str
    dimension: int
    generator: np.ndarray
    volume: float
    normalized_second_moment: float
    covering_radius: float
    packing_radius: float
    generator_inverse: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        generator = np.array(self.generator, dtype=np.float64)
        if generator.shape != (self.dimension, self.dimension):
            raise LatticeError(f"generator must be {self.dimension}x{self.dimension}, got {generator.shape}")
        inverse = np.linalg.inv(generator)
        # For Z, D4 and E8 the inverse is half-integral (their duals lie in ½Z^n); snap away the LU
        # round-off so that coordinates and the fast kernels are exact.
        halves = np.rint(inverse * 2.0) / 2.0
        if np.allclose(halves, inverse, rtol=0.0, atol=1e-9):
            inverse = halves
        generator.setflags(write=False)
        inverse.setflags(write=False)
        object.__setattr__(self, "generator", generator)
        object.__setattr__(self, "generator_inverse", inverse)

    @property
    def second_moment_per_coordinate(self) -> float:
        """E‖U‖²/n for U uniform on the Voronoi cell: G(Λ)·V^{2/n} (squared lattice units)."""
        return self.normalized_second_moment * self.volume ** (2.0 / self.dimension)

    def _check_blocks(self, x: np.ndarray, what: str, limit: float = MAX_ABS_COORDINATE) -> np.ndarray:
        array = np.asarray(x)
        if array.dtype.kind not in "iuf":
            raise LatticeError(f"{what} must be a real numeric array, got dtype {array.dtype}")
        if array.ndim == 0 or array.shape[-1] != self.dimension:
            raise LatticeError(
                f"{what} must have shape (..., {self.dimension}) for {self.name}, got {array.shape}"
            )
        array = array.astype(np.float64, copy=False)
        if not np.all(np.isfinite(array)):
            raise LatticeError(f"{what} contains NaN or infinity")
        if array.size and np.max(np.abs(array)) > limit:
            raise LatticeError(f"{what} has magnitude above {limit:.0f}; results would not stay exact")
        return array

    def nearest_point(self, x: np.ndarray) -> np.ndarray:
        """Closest lattice point to each n-block of ``x``.

        Args:
            x: (..., n) finite reals.
        Returns:
            (..., n) float64 lattice points, under the module's tie rule.
        Raises:
            LatticeError: wrong trailing dimension, non-finite or too large values.
        """
        return _NEAREST[self.name](self._check_blocks(x, "x"))

    def to_coordinates(self, points: np.ndarray) -> np.ndarray:
        """Integer coordinates z with zG = point: z = round(point·G^{-1}), rounding away float error.

        Args:
            points: (..., n) lattice points.
        Returns:
            (..., n) int64.
        Raises:
            LatticeError: bad shape/values, or a point that is not on the lattice.
        """
        array = self._check_blocks(points, "points")
        real = sequential_matmul(array, self.generator_inverse)
        coordinates = np.rint(real)
        if array.size and np.max(np.abs(real - coordinates)) > _COORDINATE_TOLERANCE:
            raise LatticeError(f"points are not on the {self.name} lattice")
        return coordinates.astype(np.int64)

    def from_coordinates(self, z: np.ndarray) -> np.ndarray:
        """Lattice points zG.

        Args:
            z: (..., n) integers.
        Returns:
            (..., n) float64.
        Raises:
            LatticeError: non-integer dtype, wrong shape, or |z| > 2**44 (would not stay exact).
        """
        array = np.asarray(z)
        if array.dtype.kind not in "iu":
            raise LatticeError(f"coordinates must be integers, got dtype {array.dtype}")
        if not integers_within(array, MAX_ABS_INTEGER_COORDINATE):
            raise LatticeError("coordinates above 2**44 in magnitude would not stay exact")
        return sequential_matmul(self._check_blocks(array, "coordinates", math.inf), self.generator)


def _e8_generator() -> np.ndarray:
    generator = np.zeros((8, 8))
    generator[0, 0] = 2.0
    for row in range(1, 7):
        generator[row, row - 1] = -1.0
        generator[row, row] = 1.0
    generator[7, :] = 0.5
    return generator


# Constants: docs/ALGORITHMS.md §2.1 (generators, volumes) and §2.4 (normalized second moments,
# Conway & Sloane SPLAG table 2.3). Covering radii for these scalings: Z ½, A2 (minimal distance 1)
# 1/√3, D4 and E8 (minimal norm √2) 1, reached at the deep holes (1,0,...,0); packing radii: half
# the minimal distance, ½ for Z and A2, √2/2 for D4 and E8.
_LATTICES = MappingProxyType(
    {
        "Z": Lattice(
            name="Z",
            dimension=1,
            generator=np.eye(1),
            volume=1.0,
            normalized_second_moment=1.0 / 12.0,
            covering_radius=0.5,
            packing_radius=0.5,
        ),
        "A2": Lattice(
            name="A2",
            dimension=2,
            generator=np.array([[1.0, 0.0], [0.5, _SQRT3 / 2.0]]),
            volume=_SQRT3 / 2.0,
            normalized_second_moment=5.0 / (36.0 * _SQRT3),
            covering_radius=1.0 / _SQRT3,
            packing_radius=0.5,
        ),
        "D4": Lattice(
            name="D4",
            dimension=4,
            generator=np.array(
                [[-1.0, -1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0], [0.0, 0.0, 1.0, -1.0]]
            ),
            volume=2.0,
            normalized_second_moment=0.0766032,
            covering_radius=1.0,
            packing_radius=math.sqrt(0.5),
        ),
        "E8": Lattice(
            name="E8",
            dimension=8,
            generator=_e8_generator(),
            volume=1.0,
            normalized_second_moment=929.0 / 12960.0,
            covering_radius=1.0,
            packing_radius=math.sqrt(0.5),
        ),
    }
)


def get_lattice(name: str) -> Lattice:
    """The lattice called ``name`` (one of ``LATTICE_NAMES``).

    Raises:
        LatticeError: unknown name.
    """
    if not isinstance(name, str) or name not in _LATTICES:
        raise LatticeError(f"unknown lattice {name!r}; choose one of {', '.join(LATTICE_NAMES)}")
    return _LATTICES[name]
