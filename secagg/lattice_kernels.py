"""Fused numba kernels for the lattice quantizer: nearest point, dither, encode, decode per block.

These compute exactly what the numpy reference in ``secagg.lattice`` and ``secagg.quantizer``
computes, with the same floating-point operations in the same order (so the tests compare them
bit for bit), but in one pass over the data without temporaries: numpy needs ~10 array passes per
E8 encode, the kernel reads x and the uniforms once and writes z once.

All arrays are flat and C-contiguous: a vector of ``blocks`` n-blocks is ``(blocks * n,)``.
Callers (``secagg.quantizer``) validate inputs; these functions only check what would otherwise
corrupt memory (lengths).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from secagg.errors import LatticeError
from secagg.lattice import Lattice

__all__ = ["accumulate_dither", "decode_blocks", "dither_blocks", "encode_blocks", "nearest_points"]

_SQRT3 = math.sqrt(3.0)


# Branches on data (running argmax, parity, coset choice) are written as selects: mispredicted
# branches, not arithmetic, dominated the first version of these kernels (~30e6 coordinates/s).


@njit(cache=True, inline="always")
def _round_dn(source, base, n, shift, out):
    """out[0:n] = Q_{D_n}(source[base:base+n] − shift); same rule and order as lattice._nearest_dn."""
    total = 0.0
    worst = -1.0
    worst_index = 0
    worst_error = 0.0
    for k in range(n):
        value = source[base + k] - shift
        rounded = np.rint(value)
        error = value - rounded
        out[k] = rounded
        total += rounded
        magnitude = abs(error)
        better = magnitude > worst
        worst = magnitude if better else worst
        worst_index = k if better else worst_index
        worst_error = error if better else worst_error
    # Odd sum: move the worst coordinate one step towards x (upwards when it was exact).
    parity = np.float64(np.int64(total) & 1)
    out[worst_index] += parity * (1.0 if worst_error >= 0.0 else -1.0)


@njit(cache=True, inline="always")
def _nearest_z(source, base, out, even, odd):
    out[0] = np.rint(source[base])


@njit(cache=True, inline="always")
def _nearest_a2(source, base, out, even, odd):
    """A2 = (Z × √3Z) ∪ ((Z + ½) × (√3Z + √3/2)): the closer coset candidate (lattice._nearest_a2)."""
    first = source[base]
    second = source[base + 1]
    even_first = np.rint(first)
    even_second = _SQRT3 * np.rint(second / _SQRT3)
    odd_first = np.rint(first - 0.5) + 0.5
    odd_second = _SQRT3 * (np.rint(second / _SQRT3 - 0.5) + 0.5)
    error = first - even_first
    distance_even = error * error
    error = second - even_second
    distance_even = distance_even + error * error
    error = first - odd_first
    distance_odd = error * error
    error = second - odd_second
    distance_odd = distance_odd + error * error
    take_odd = distance_odd < distance_even
    out[0] = odd_first if take_odd else even_first
    out[1] = odd_second if take_odd else even_second


@njit(cache=True, inline="always")
def _nearest_d4(source, base, out, even, odd):
    _round_dn(source, base, 4, 0.0, out)


@njit(cache=True, inline="always")
def _nearest_e8(source, base, out, even, odd):
    """E8 = D8 ∪ (D8 + ½): the closer coset candidate, D8 on a tie (lattice._nearest_e8)."""
    _round_dn(source, base, 8, 0.0, even)
    _round_dn(source, base, 8, 0.5, odd)
    distance_even = 0.0
    distance_odd = 0.0
    for k in range(8):
        odd[k] = odd[k] + 0.5
        error_even = source[base + k] - even[k]
        error_odd = source[base + k] - odd[k]
        distance_even = distance_even + error_even * error_even
        distance_odd = distance_odd + error_odd * error_odd
    take_odd = distance_odd < distance_even
    for k in range(8):
        out[k] = odd[k] if take_odd else even[k]


@njit(cache=True, inline="always")
def _times_matrix(source, base, matrix, out):
    """out[0:n] = source[base:base+n] @ matrix, summed k = 0..n−1 in order (lattice.sequential_matmul)."""
    n = matrix.shape[0]
    for j in range(n):
        total = source[base] * matrix[0, j]
        for k in range(1, n):
            total = total + source[base + k] * matrix[k, j]
        out[j] = total


# u = source·G. For D4 and E8 only the non-zero terms of G are added, in increasing k as the
# reference does; the skipped terms are exact zeros, so the value is the reference's exactly.


@njit(cache=True, inline="always")
def _times_generator_dense(source, base, generator, out):
    _times_matrix(source, base, generator, out)


@njit(cache=True, inline="always")
def _times_generator_d4(source, base, generator, out):
    first = source[base]
    out[0] = -first + source[base + 1]
    out[1] = -first - source[base + 1] + source[base + 2]
    out[2] = -source[base + 2] + source[base + 3]
    out[3] = -source[base + 3]


@njit(cache=True, inline="always")
def _times_generator_e8(source, base, generator, out):
    half_last = source[base + 7] * 0.5
    out[0] = source[base] * 2.0 - source[base + 1] + half_last
    for j in range(1, 6):
        out[j] = source[base + j] - source[base + j + 1] + half_last
    out[6] = source[base + 6] + half_last
    out[7] = half_last


# z = round(point·G^{-1}). D4 and E8 points are half-integers and G^{-1} is half-integral, so the
# closed forms below are exact and equal the reference's rounded matrix product.


@njit(cache=True, inline="always")
def _store_coordinates_dense(point, inverse, real, z, base):
    _times_matrix(point, 0, inverse, real)
    for k in range(inverse.shape[0]):
        z[base + k] = np.int64(np.rint(real[k]))


@njit(cache=True, inline="always")
def _store_coordinates_d4(point, inverse, real, z, base):
    z[base] = np.int64(-0.5 * (point[0] + point[1] + point[2] + point[3]))
    z[base + 1] = np.int64(0.5 * (point[0] - point[1] - point[2] - point[3]))
    z[base + 2] = np.int64(-(point[2] + point[3]))
    z[base + 3] = np.int64(-point[3])


@njit(cache=True, inline="always")
def _store_coordinates_e8(point, inverse, real, z, base):
    # Columns of G^{-1}: z_7 = 2p_7; z_j = Σ_{k=j..6} p_k − (7−j)p_7 (j = 1..6); z_0 = ½Σ_{k<7} p_k − 3.5p_7.
    last = point[7]
    z[base + 7] = np.int64(2.0 * last)
    partial = 0.0
    for j in range(6, 0, -1):
        partial += point[j]
        z[base + j] = np.int64(partial - (7 - j) * last)
    z[base] = np.int64(0.5 * (partial + point[0]) - 3.5 * last)


# Block loops, written once and inlined into one kernel per lattice with that lattice's helpers:
# a run-time lattice switch inside the loop kept every branch's array reference counting alive
# and made the Z and A2 paths ~40x slower; inlining per lattice keeps compile time down.


@njit(cache=True, inline="always")
def _dither_into(nearest, times_generator, n, generator, uniforms, base, u, point, even, odd, dither):
    """dither[0:n] = u − Q(u) with u = r·G, r = uniforms[base:base+n] (Voronoi-uniform dither)."""
    times_generator(uniforms, base, generator, u)
    nearest(u, 0, point, even, odd)
    for k in range(n):
        dither[k] = u[k] - point[k]


@njit(cache=True, inline="always")
def _nearest_points_loop(nearest, n, x, out):
    even = np.empty(n)
    odd = np.empty(n)
    point = np.empty(n)
    for block in range(x.shape[0] // n):
        base = block * n
        nearest(x, base, point, even, odd)
        for k in range(n):
            out[base + k] = point[k]


@njit(cache=True, inline="always")
def _encode_loop(nearest, times_generator, store_coordinates, n, generator, inverse, x, uniforms, scale, z):
    u = np.empty(n)
    point = np.empty(n)
    even = np.empty(n)
    odd = np.empty(n)
    dither = np.empty(n)
    shifted = np.empty(n)
    real = np.empty(n)
    for block in range(x.shape[0] // n):
        base = block * n
        _dither_into(nearest, times_generator, n, generator, uniforms, base, u, point, even, odd, dither)
        for k in range(n):
            shifted[k] = x[base + k] * scale + dither[k]
        nearest(shifted, 0, point, even, odd)
        store_coordinates(point, inverse, real, z, base)


@njit(cache=True, inline="always")
def _accumulate_dither_loop(nearest, times_generator, n, generator, uniforms, total):
    u = np.empty(n)
    point = np.empty(n)
    even = np.empty(n)
    odd = np.empty(n)
    dither = np.empty(n)
    for block in range(uniforms.shape[0] // n):
        base = block * n
        _dither_into(nearest, times_generator, n, generator, uniforms, base, u, point, even, odd, dither)
        for k in range(n):
            total[base + k] = total[base + k] + dither[k]


@njit(cache=True, inline="always")
def _decode_loop(times_generator, n, generator, z, dither_sum, step, out):
    real = np.empty(n)
    lattice_point = np.empty(n)
    for block in range(z.shape[0] // n):
        base = block * n
        for k in range(n):
            real[k] = np.float64(z[base + k])
        times_generator(real, 0, generator, lattice_point)
        for k in range(n):
            out[base + k] = step * (lattice_point[k] - dither_sum[base + k])


@njit(cache=True)
def _nearest_points_z(x, out):
    _nearest_points_loop(_nearest_z, 1, x, out)


@njit(cache=True)
def _encode_z(generator, inverse, x, uniforms, scale, z):
    _encode_loop(
        _nearest_z, _times_generator_dense, _store_coordinates_dense, 1, generator, inverse, x, uniforms, scale, z
    )


@njit(cache=True)
def _accumulate_dither_z(generator, uniforms, total):
    _accumulate_dither_loop(_nearest_z, _times_generator_dense, 1, generator, uniforms, total)


@njit(cache=True)
def _decode_z(generator, z, dither_sum, step, out):
    _decode_loop(_times_generator_dense, 1, generator, z, dither_sum, step, out)


@njit(cache=True)
def _nearest_points_a2(x, out):
    _nearest_points_loop(_nearest_a2, 2, x, out)


@njit(cache=True)
def _encode_a2(generator, inverse, x, uniforms, scale, z):
    _encode_loop(
        _nearest_a2, _times_generator_dense, _store_coordinates_dense, 2, generator, inverse, x, uniforms, scale, z
    )


@njit(cache=True)
def _accumulate_dither_a2(generator, uniforms, total):
    _accumulate_dither_loop(_nearest_a2, _times_generator_dense, 2, generator, uniforms, total)


@njit(cache=True)
def _decode_a2(generator, z, dither_sum, step, out):
    _decode_loop(_times_generator_dense, 2, generator, z, dither_sum, step, out)


@njit(cache=True)
def _nearest_points_d4(x, out):
    _nearest_points_loop(_nearest_d4, 4, x, out)


@njit(cache=True)
def _encode_d4(generator, inverse, x, uniforms, scale, z):
    _encode_loop(_nearest_d4, _times_generator_d4, _store_coordinates_d4, 4, generator, inverse, x, uniforms, scale, z)


@njit(cache=True)
def _accumulate_dither_d4(generator, uniforms, total):
    _accumulate_dither_loop(_nearest_d4, _times_generator_d4, 4, generator, uniforms, total)


@njit(cache=True)
def _decode_d4(generator, z, dither_sum, step, out):
    _decode_loop(_times_generator_d4, 4, generator, z, dither_sum, step, out)


@njit(cache=True)
def _nearest_points_e8(x, out):
    _nearest_points_loop(_nearest_e8, 8, x, out)


@njit(cache=True)
def _encode_e8(generator, inverse, x, uniforms, scale, z):
    _encode_loop(_nearest_e8, _times_generator_e8, _store_coordinates_e8, 8, generator, inverse, x, uniforms, scale, z)


@njit(cache=True)
def _accumulate_dither_e8(generator, uniforms, total):
    _accumulate_dither_loop(_nearest_e8, _times_generator_e8, 8, generator, uniforms, total)


@njit(cache=True)
def _decode_e8(generator, z, dither_sum, step, out):
    _decode_loop(_times_generator_e8, 8, generator, z, dither_sum, step, out)


# name → (nearest_points, encode, accumulate_dither, decode) kernels.
_KERNELS = {
    "Z": (_nearest_points_z, _encode_z, _accumulate_dither_z, _decode_z),
    "A2": (_nearest_points_a2, _encode_a2, _accumulate_dither_a2, _decode_a2),
    "D4": (_nearest_points_d4, _encode_d4, _accumulate_dither_d4, _decode_d4),
    "E8": (_nearest_points_e8, _encode_e8, _accumulate_dither_e8, _decode_e8),
}


def _flat(array: np.ndarray, dtype: type, lattice: Lattice, what: str) -> np.ndarray:
    flat = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    if flat.shape[0] % lattice.dimension:
        raise LatticeError(f"{what} length {flat.shape[0]} is not a multiple of n = {lattice.dimension}")
    return flat


def nearest_points(lattice: Lattice, x: np.ndarray) -> np.ndarray:
    """Fast ``lattice.nearest_point``: (..., n) float64 → (..., n) float64 (inputs assumed finite)."""
    flat = _flat(x, np.float64, lattice, "x")
    out = np.empty_like(flat)
    _KERNELS[lattice.name][0](flat, out)
    return out.reshape(np.shape(x))


def encode_blocks(lattice: Lattice, x: np.ndarray, uniforms: np.ndarray, scale: float) -> np.ndarray:
    """z = coords(Q(x·scale + d)) per block, d = rG − Q(rG) from ``uniforms`` r.

    Args:
        x: (blocks*n,) float64, already padded.
        uniforms: (blocks*n,) float64 in [0, 1).
        scale: 1/Δ.
    Returns:
        (blocks*n,) int64.
    """
    flat_x = _flat(x, np.float64, lattice, "x")
    flat_uniforms = _flat(uniforms, np.float64, lattice, "uniforms")
    if flat_uniforms.shape != flat_x.shape:
        raise LatticeError(f"{flat_uniforms.shape[0]} uniforms for {flat_x.shape[0]} coordinates")
    z = np.empty(flat_x.shape[0], dtype=np.int64)
    _KERNELS[lattice.name][1](
        lattice.generator, lattice.generator_inverse, flat_x, flat_uniforms, float(scale), z
    )
    return z


def accumulate_dither(lattice: Lattice, uniforms: np.ndarray, total: np.ndarray) -> None:
    """In place: total += d with d = rG − Q(rG) per block; ``total`` is (blocks*n,) float64."""
    flat_uniforms = _flat(uniforms, np.float64, lattice, "uniforms")
    if total.dtype != np.float64 or not total.flags.c_contiguous or total.shape != flat_uniforms.shape:
        raise LatticeError("dither accumulator must be a contiguous float64 array of the uniforms' length")
    _KERNELS[lattice.name][2](lattice.generator, flat_uniforms, total)


def dither_blocks(lattice: Lattice, uniforms: np.ndarray) -> np.ndarray:
    """d = rG − Q(rG) per block: (blocks*n,) float64, uniform on the Voronoi cell."""
    flat_uniforms = _flat(uniforms, np.float64, lattice, "uniforms")
    total = np.zeros_like(flat_uniforms)
    accumulate_dither(lattice, flat_uniforms, total)
    return total


def decode_blocks(lattice: Lattice, z: np.ndarray, dither_sum: np.ndarray, step: float) -> np.ndarray:
    """x̂ = Δ(zG − Σd) per block: (blocks*n,) int64 and float64 → (blocks*n,) float64."""
    flat_z = _flat(z, np.int64, lattice, "z")
    flat_dither = _flat(dither_sum, np.float64, lattice, "dither_sum")
    if flat_dither.shape != flat_z.shape:
        raise LatticeError(f"{flat_dither.shape[0]} dither values for {flat_z.shape[0]} coordinates")
    out = np.empty(flat_z.shape[0])
    _KERNELS[lattice.name][3](lattice.generator, flat_z, flat_dither, float(step), out)
    return out
