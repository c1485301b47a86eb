"""Arithmetic mod 2**b for lattice coordinates, and the bit widths that keep a secure sum exact.

SecAgg sums vectors in Z/2^b. Two ways back to integers:

- the centred lift onto (−2^(b−1), 2^(b−1)], exact while every summed coordinate lies in that
  range (docs/ALGORITHMS.md §2.6);
- the Voronoi lift for lattice coordinates: coordinates mod R = 2^b are the lattice points mod RΛ,
  and the representative nearest the origin (p − R·Q_Λ(p/R), a Voronoi code: Conway & Sloane, "A
  fast encoding method for lattice codes and quantizers", IEEE Trans. IT 29(6), 1983) is exact
  while each summed block lies in R·V_0 — e.g. has norm below R times the packing radius. That
  condition depends on the point's norm only, not on how skewed the basis G is: for the E8 basis of
  §2.1 a coordinate can be ~6.5x the point's norm, which would cost ~3 bits under the centred lift.

Rules that size b:

- deterministic headroom (declearn's rule): per-client |z| <= M and n clients need
  b = ⌈log₂(M + 1)⌉ + 1 + ⌈log₂ n⌉ — the centred lift is then always exact;
  ``norm_bits`` is the Voronoi analogue for a bound on the summed block's norm;
- statistical: a summed coordinate ≈ N(0, σ_S²) wraps with probability ≈ erfc(R/(2√2·σ_S)); the
  union bound over d' coordinates must stay below the allowed overflow probability. For n-blocks
  and the Voronoi lift, a block ≈ N(0, σ_S²·I_n) leaves the ball of radius R·packing_radius with
  probability Q(n/2, (R·packing_radius)²/(2σ_S²)) (chi-square tail; n = 1 is the erfc rule).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammainccinv

from secagg import lattice_kernels
from secagg.errors import ConfigurationError, LatticeError
from secagg.lattice import Lattice

__all__ = [
    "MAX_BITS",
    "centered_lift",
    "norm_bits",
    "required_bits",
    "statistical_bits",
    "voronoi_lift",
    "wrap",
]

MAX_BITS = 32


def _check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ConfigurationError(f"bits must be an int, got {type(bits).__name__}")
    if not 1 <= bits <= MAX_BITS:
        raise ConfigurationError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    return int(bits)


def wrap(z: np.ndarray, bits: int) -> np.ndarray:
    """z mod 2**bits as uint32.

    Args:
        z: integer array of any shape (int64 lattice coordinates, possibly negative).
        bits: b, 1..32.
    Returns:
        uint32 array of the same shape, entries in [0, 2**bits).
    Raises:
        LatticeError: z is not an integer array.
        ConfigurationError: bits out of range.
    """
    bits = _check_bits(bits)
    array = np.asarray(z)
    if array.dtype.kind not in "iu":
        raise LatticeError(f"z must be integers, got dtype {array.dtype}")
    # Two's complement makes `& (2**b − 1)` the non-negative residue, negative values included.
    return (array.astype(np.int64, copy=False) & np.int64((1 << bits) - 1)).astype(np.uint32)


def centered_lift(v: np.ndarray, bits: int) -> np.ndarray:
    """The representative of v mod 2**bits in (−2**(bits−1), 2**(bits−1)].

    Args:
        v: uint32 array, entries < 2**bits.
        bits: b, 1..32.
    Returns:
        int64 array of the same shape.
    Raises:
        LatticeError: v is not uint32 or has an entry >= 2**bits.
        ConfigurationError: bits out of range.
    """
    bits = _check_bits(bits)
    array = np.asarray(v)
    if array.dtype != np.uint32:
        raise LatticeError(f"v must be uint32, got dtype {array.dtype}")
    lifted = array.astype(np.int64)
    if lifted.size and int(lifted.max()) >= 1 << bits:
        raise LatticeError(f"v has an entry >= 2**{bits}; it is not reduced mod 2**{bits}")
    half = 1 << (bits - 1)
    return np.where(lifted > half, lifted - (1 << bits), lifted)


def required_bits(max_abs_coordinate: int, clients: int) -> int:
    """Deterministic headroom rule: b = ⌈log₂(M + 1)⌉ + 1 + ⌈log₂ n⌉.

    Then |Σ z| <= n·M < (M + 1)·2^⌈log₂ n⌉ <= 2^(b−1), so the centred lift is exact.

    Args:
        max_abs_coordinate: M >= 0, a bound on every client's |z_k|.
        clients: n >= 1.
    Returns:
        b (may exceed 32; callers refuse that).
    """
    if isinstance(max_abs_coordinate, bool) or not isinstance(max_abs_coordinate, (int, np.integer)):
        raise ConfigurationError(f"max_abs_coordinate must be an int, got {type(max_abs_coordinate).__name__}")
    if isinstance(clients, bool) or not isinstance(clients, (int, np.integer)):
        raise ConfigurationError(f"clients must be an int, got {type(clients).__name__}")
    if max_abs_coordinate < 0:
        raise ConfigurationError(f"max_abs_coordinate must be >= 0, got {max_abs_coordinate}")
    if clients < 1:
        raise ConfigurationError(f"clients must be >= 1, got {clients}")
    # int.bit_length(M) = ⌈log₂(M + 1)⌉ and bit_length(n − 1) = ⌈log₂ n⌉, exactly, for any size.
    return int(max_abs_coordinate).bit_length() + 1 + (int(clients) - 1).bit_length()


def norm_bits(max_norm: float, packing_radius: float) -> int:
    """Smallest b with 2**b·packing_radius > max_norm: the Voronoi lift's deterministic rule.

    A summed block of norm <= max_norm is then strictly closer to the origin than to any other
    point of 2**b·Λ, so ``voronoi_lift`` returns it exactly.

    Args:
        max_norm: a bound (lattice units) on the norm of every block of the sum, >= 0.
        packing_radius: the lattice's packing radius, > 0.
    Returns:
        b >= 1 (may exceed 32; callers refuse that).
    """
    for value, name in ((max_norm, "max_norm"), (packing_radius, "packing_radius")):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigurationError(f"{name} must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or value < 0:
            raise ConfigurationError(f"{name} must be finite and >= 0, got {value}")
    if packing_radius <= 0:
        raise ConfigurationError("packing_radius must be > 0")
    bits = 1
    while (1 << bits) * float(packing_radius) <= float(max_norm):
        bits += 1
    return bits


def statistical_bits(
    sum_std: float,
    coordinates: int,
    overflow_probability: float,
    *,
    block_dimension: int = 1,
    packing_radius: float = 0.5,
) -> int:
    """Smallest b such that the secure sum wraps with probability <= ``overflow_probability``.

    Model: every summed coordinate ≈ N(0, σ_S²), independent. Per block of ``block_dimension`` = n
    coordinates the lift is exact inside the ball of radius r = 2^b·packing_radius, which a block
    leaves with probability Q(n/2, r²/(2σ_S²)) (regularized upper incomplete gamma); the union
    bound over coordinates/n blocks must stay <= p. The defaults (n = 1, radius ½) are the
    per-coordinate centred-lift rule erfc(R/(2√2·σ_S)): p = 1e−6 over d' = 2^20 coordinates needs
    R/2 >= 7.14·σ_S (docs/ALGORITHMS.md §2.6).

    Args:
        sum_std: σ_S >= 0, the standard deviation of one summed coordinate (lattice units).
        coordinates: d' >= 1, the number of summed coordinates (a multiple of block_dimension).
        overflow_probability: p in (0, 1), the allowed probability that any coordinate wraps.
        block_dimension: n, coordinates per lattice block (1 for the centred lift).
        packing_radius: radius of the exact region per unit of 2^b (½ for the centred lift; the
            lattice's packing radius for ``voronoi_lift``).
    Returns:
        b >= 1 (may exceed 32; callers refuse that).
    """
    if isinstance(sum_std, bool) or not isinstance(sum_std, (int, float, np.floating, np.integer)):
        raise ConfigurationError(f"sum_std must be a number, got {type(sum_std).__name__}")
    if not math.isfinite(sum_std) or sum_std < 0:
        raise ConfigurationError(f"sum_std must be finite and >= 0, got {sum_std}")
    if isinstance(coordinates, bool) or not isinstance(coordinates, (int, np.integer)) or coordinates < 1:
        raise ConfigurationError(f"coordinates must be an int >= 1, got {coordinates!r}")
    if isinstance(overflow_probability, bool) or not isinstance(overflow_probability, (float, int, np.floating)):
        raise ConfigurationError(f"overflow_probability must be a number, got {type(overflow_probability).__name__}")
    if not 0.0 < overflow_probability < 1.0:
        raise ConfigurationError(f"overflow_probability must be in (0, 1), got {overflow_probability}")
    if isinstance(block_dimension, bool) or not isinstance(block_dimension, (int, np.integer)) or block_dimension < 1:
        raise ConfigurationError(f"block_dimension must be an int >= 1, got {block_dimension!r}")
    if coordinates % block_dimension:
        raise ConfigurationError(f"coordinates {coordinates} is not a multiple of block_dimension {block_dimension}")
    if isinstance(packing_radius, bool) or not isinstance(packing_radius, (int, float, np.floating)):
        raise ConfigurationError(f"packing_radius must be a number, got {type(packing_radius).__name__}")
    if not math.isfinite(packing_radius) or packing_radius <= 0:
        raise ConfigurationError(f"packing_radius must be finite and > 0, got {packing_radius}")
    per_block = overflow_probability / (int(coordinates) // int(block_dimension))
    radius = float(sum_std) * math.sqrt(2.0 * float(gammainccinv(0.5 * block_dimension, per_block)))
    bits = 1
    while (1 << bits) * float(packing_radius) < radius:
        bits += 1
    return bits


def voronoi_lift(v: np.ndarray, bits: int, lattice: Lattice) -> np.ndarray:
    """Coordinates z ≡ v (mod 2**bits) whose lattice point p = zG lies in the Voronoi cell R·V_0.

    p − R·Q_Λ(p/R) for any representative p (R = 2**bits; Conway & Sloane 1983): exact for a sum
    whose every block lies inside R·V_0 (in particular has norm < R·packing_radius). For Z it is
    the centred lift.

    Args:
        v: (blocks·n,) uint32, entries < 2**bits (a secure sum of coordinates).
        bits: b, 1..32.
        lattice: the lattice of the coordinates.
    Returns:
        (blocks·n,) int64.
    Raises:
        LatticeError: v has the wrong dtype, shape or range.
        ConfigurationError: bits out of range.
    """
    if not isinstance(lattice, Lattice):
        raise LatticeError(f"lattice must be a secagg.lattice.Lattice, got {type(lattice).__name__}")
    lifted = centered_lift(v, bits)
    if lifted.ndim != 1 or lifted.shape[0] % lattice.dimension:
        raise LatticeError(f"v must be 1-D with a multiple of {lattice.dimension} entries, got {lifted.shape}")
    modulus = 1 << bits
    points = lattice_kernels.decode_blocks(lattice, lifted, np.zeros(lifted.shape[0]), 1.0)
    # Division by a power of two is exact, so the nearest point of RΛ is found without round-off.
    shift = lattice_kernels.nearest_points(lattice, points * (1.0 / modulus))
    shift_coordinates = lattice.to_coordinates(shift.reshape(-1, lattice.dimension)).reshape(-1)
    return lifted - modulus * shift_coordinates
