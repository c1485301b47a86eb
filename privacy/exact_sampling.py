"""Exact samplers on a stream of random bits, compiled with numba: coins, then the kernels.

All numba code of ``privacy`` lives in this one module on purpose: numba's on-disk cache checks
only the source file a function is defined in, so a kernel compiled against coins from another
file could silently keep stale machine code after that file changed.

Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020),
Algorithm 1: Bernoulli(exp(-gamma)) for rational gamma using only Bernoulli(rational) trials.
Every decision here compares random integers with integers: no floating point touches a sample,
so the samplers built on top are exact and their running time does not depend on float rounding.

The bit stream is a ``uint64`` array plus a cursor ``int64[2]``: ``cursor[0]`` is the next bit
position, ``cursor[1]`` becomes 1 when a read would run past the end. Every coin reports False
once the stream is spent (so no loop can spin on a spent stream); samplers check the flag and
return early; the driver (:func:`run_sampler`) then replays the unfinished sample from its first
bit over a longer buffer, so a sample's value never depends on where a buffer happened to end.
"""

from __future__ import annotations

from typing import Callable

import numba as nb
import numpy as np

from privacy.errors import RandomnessError, SamplerParameterError
from privacy.randomness import RandomWordSource

_U1 = np.uint64(1)
_U32 = np.uint64(32)
_MASK32 = np.uint64(0xFFFFFFFF)
# Largest denominator a single uniform draw handles; every caller keeps operands below it.
MAX_DENOMINATOR = (1 << 62) - 1
# Random words requested per refill at most (16 MiB): bounds memory for very large draws.
_MAX_CHUNK_WORDS = 1 << 21


@nb.njit(cache=True, inline="always")
def bit_length(value: int) -> int:
    """Number of bits of a non-negative int64 (0 for 0)."""
    v = value
    n = 0
    if v >= 4294967296:
        v >>= 32
        n += 32
    if v >= 65536:
        v >>= 16
        n += 16
    if v >= 256:
        v >>= 8
        n += 8
    if v >= 16:
        v >>= 4
        n += 4
    if v >= 4:
        v >>= 2
        n += 2
    if v >= 2:
        v >>= 1
        n += 1
    if v >= 1:
        n += 1
    return n


@nb.njit(cache=True, inline="always")
def read_bits(words: np.ndarray, cursor: np.ndarray, k: int) -> int:
    """Next ``k`` bits (1 <= k <= 62) as a non-negative int64, or -1 when the stream is spent."""
    pos = cursor[0]
    if pos + k > words.size * 64:
        cursor[1] = 1
        return -1
    index = pos >> 6
    offset = pos & 63
    value = words[index] >> np.uint64(offset)
    if offset + k > 64:
        value |= words[index + 1] << np.uint64(64 - offset)
    cursor[0] = pos + k
    return np.int64(value & ((_U1 << np.uint64(k)) - _U1))


@nb.njit(cache=True, inline="always")
def uniform_below(words: np.ndarray, cursor: np.ndarray, bound: int) -> int:
    """Uniform integer in [0, bound) for 1 <= bound <= 2**62 by rejection; -1 if the stream ends."""
    if bound == 1:
        return 0
    k = bit_length(bound - 1)
    while True:
        x = read_bits(words, cursor, k)
        if x < 0:
            return -1
        if x < bound:
            return x


@nb.njit(cache=True, inline="always")
def bernoulli_ratio(words: np.ndarray, cursor: np.ndarray, numerator: int, denominator: int) -> bool:
    """Exact Bernoulli(numerator / denominator), 0 <= numerator <= denominator <= 2**62."""
    if numerator >= denominator:
        return cursor[1] == 0
    if numerator <= 0:
        return False
    x = uniform_below(words, cursor, denominator)
    return 0 <= x < numerator


@nb.njit(cache=True)
def bernoulli_exp_fraction(words: np.ndarray, cursor: np.ndarray, numerator: int, denominator: int) -> bool:
    """Exact Bernoulli(exp(-n/d)) for 0 <= n <= d <= 2**62 (CKS Algorithm 1, gamma in [0, 1]).

    K counts successes of Bernoulli(gamma/K) trials; P[K odd] = exp(-gamma). The trial
    Bernoulli(n/(d K)) is a single draw when d K fits, else the product of Bernoulli(n/d) and
    Bernoulli(1/K), which has the same law.
    """
    k = 1
    while cursor[1] == 0:
        if denominator <= MAX_DENOMINATOR // k:
            success = bernoulli_ratio(words, cursor, numerator, denominator * k)
        else:
            success = bernoulli_ratio(words, cursor, numerator, denominator) and bernoulli_ratio(
                words, cursor, 1, k
            )
        if not success:
            break
        k += 1
    return (k & 1) == 1 and cursor[1] == 0


@nb.njit(cache=True)
def bernoulli_exp_minus_one(words: np.ndarray, cursor: np.ndarray) -> bool:
    """Exact Bernoulli(exp(-1))."""
    return bernoulli_exp_fraction(words, cursor, 1, 1)


@nb.njit(cache=True)
def bernoulli_exp(words: np.ndarray, cursor: np.ndarray, numerator: int, denominator: int) -> bool:
    """Exact Bernoulli(exp(-n/d)) for n >= 0, 1 <= d <= 2**62: floor(n/d) coins of exp(-1), then
    one of exp(-(n mod d)/d) (CKS Algorithm 1, gamma > 1)."""
    whole = numerator // denominator
    rest = numerator - whole * denominator
    for _ in range(whole):
        if cursor[1] != 0 or not bernoulli_exp_minus_one(words, cursor):
            return False
    return bernoulli_exp_fraction(words, cursor, rest, denominator)


@nb.njit(cache=True, inline="always")
def square_u64(a: int) -> tuple[np.uint64, np.uint64]:
    """a**2 as a 128-bit (high, low) pair of uint64, for 0 <= a < 2**63."""
    x = np.uint64(a)
    lo32 = x & _MASK32
    hi32 = x >> _U32
    ll = lo32 * lo32
    lh = lo32 * hi32
    hh = hi32 * hi32
    # a^2 = hh 2^64 + 2 lh 2^32 + ll; carry the middle terms through 32-bit halves.
    mid = (ll >> _U32) + ((lh & _MASK32) << _U1)
    low = (ll & _MASK32) | ((mid & _MASK32) << _U32)
    high = hh + ((lh >> _U32) << _U1) + (mid >> _U32)
    return high, low


@nb.njit(cache=True)
def divmod_square(a: int, d: int) -> tuple[np.uint64, np.uint64, int]:
    """floor(a**2 / d) as (high, low) uint64 and a**2 mod d, for 0 <= a < 2**63, 1 <= d < 2**62.

    The common case (a < 2**31) is one integer division; otherwise 128-by-64-bit long division,
    bit by bit, which stays exact where a**2 no longer fits in 64 bits.
    """
    if a < 2147483648:
        sq = a * a
        return np.uint64(0), np.uint64(sq // d), sq % d
    high, low = square_u64(a)
    dd = np.uint64(d)
    rem = np.uint64(0)
    q_high = np.uint64(0)
    q_low = np.uint64(0)
    for i in range(127, -1, -1):
        if i >= 64:
            bit = (high >> np.uint64(i - 64)) & _U1
        else:
            bit = (low >> np.uint64(i)) & _U1
        rem = (rem << _U1) | bit  # rem < d < 2**62, so the shift cannot overflow
        if rem >= dd:
            rem -= dd
            if i >= 64:
                q_high |= _U1 << np.uint64(i - 64)
            else:
                q_low |= _U1 << np.uint64(i)
    return q_high, q_low, np.int64(rem)


@nb.njit(cache=True)
def bernoulli_exp_square_ratio(words: np.ndarray, cursor: np.ndarray, a: int, d: int) -> bool:
    """Exact Bernoulli(exp(-a**2 / d)) for 0 <= a < 2**63 and 1 <= d < 2**62."""
    q_high, q_low, rest = divmod_square(a, d)
    # floor(a^2/d) = q_high 2^64 + q_low coins of exp(-1); the loop ends at the first failure.
    for _ in range(np.int64(q_low >> _U1)):
        if cursor[1] != 0 or not bernoulli_exp_minus_one(words, cursor):
            return False
        if not bernoulli_exp_minus_one(words, cursor):
            return False
    if (q_low & _U1) == _U1:
        if cursor[1] != 0 or not bernoulli_exp_minus_one(words, cursor):
            return False
    high = np.int64(q_high)
    for _ in range(high):
        # 2**64 coins per unit of q_high, as four blocks of 2**62.
        for _block in range(4):
            for _ in range(np.int64(1) << 62):
                if cursor[1] != 0 or not bernoulli_exp_minus_one(words, cursor):
                    return False
    return bernoulli_exp_fraction(words, cursor, rest, d)


# Kernel status codes (third element of a kernel's result).
DONE = 0
EXHAUSTED = 1
NEEDS_DECISION = 2


@nb.njit(cache=True)
def discrete_gaussian_kernel(words, cursor, out, start, sn, sd, t, magnitude_cap):
    """N_Z(0, sn/sd) by CKS Algorithm 3 (discrete Laplace of scale t, exact acceptance); the
    calling convention is :func:`run_sampler`'s. Proposals above ``magnitude_cap`` are rejected."""
    denominator = 2 * sn * sd * t * t
    i = start
    while i < out.size:
        begin = cursor[0]
        while True:
            # Discrete Laplace of scale t (CKS Algorithm 2).
            u = uniform_below(words, cursor, t)
            if cursor[1] != 0:
                return i, begin, EXHAUSTED, 0, 0, 0, begin
            if not bernoulli_exp_fraction(words, cursor, u, t):
                if cursor[1] != 0:
                    return i, begin, EXHAUSTED, 0, 0, 0, begin
                continue
            v = 0
            too_large = False
            while bernoulli_exp_minus_one(words, cursor):
                v += 1
                if v > magnitude_cap:
                    too_large = True
                    break
            if cursor[1] != 0:
                return i, begin, EXHAUSTED, 0, 0, 0, begin
            magnitude = u + t * v
            if too_large or magnitude > magnitude_cap:
                # Probability below exp(-2**30): outside 64-bit range, rejected (see docstring).
                continue
            sign = read_bits(words, cursor, 1)
            if sign < 0:
                return i, begin, EXHAUSTED, 0, 0, 0, begin
            if sign == 1 and magnitude == 0:
                continue
            # gamma = (|Y| - sigma^2/t)^2 / (2 sigma^2) = a^2 / (2 sn sd t^2).
            a = abs(magnitude * t * sd - sn)
            accept = bernoulli_exp_square_ratio(words, cursor, a, denominator)
            if cursor[1] != 0:
                return i, begin, EXHAUSTED, 0, 0, 0, begin
            if accept:
                out[i] = -magnitude if sign == 1 else magnitude
                i += 1
                break
    return i, cursor[0], DONE, 0, 0, 0, 0


@nb.njit(cache=True, inline="always")
def _mul_floor(x, numerator, denominator):
    """floor(x n / d) for 0 <= x < 2**63, 0 <= n <= d, d n < 2**63 (no 128-bit product needed)."""
    return (x // denominator) * numerator + ((x % denominator) * numerator) // denominator


@nb.njit(cache=True, inline="always")
def _mul_ceil(x, numerator, denominator):
    """ceil(x n / d) under the same conditions as :func:`_mul_floor`."""
    rest = (x % denominator) * numerator
    return (x // denominator) * numerator + (rest + denominator - 1) // denominator


@nb.njit(cache=True)
def poisson_window_bounds(ln, ld, m, a, b, bits):
    """Fixed-point bounds lo <= 2**bits f(m+y)/f(m) <= hi for y in [-a, b], f(k) = lambda^k/k!.

    Built by the recurrences f(m+y)/f(m+y-1) = lambda/(m+y) and f(m-y)/f(m-y+1) = (m-y+1)/lambda,
    rounding lo down and hi up at every step, so hi - lo grows by at most 2 per step.
    Returns two ``(a+b+1,) int64`` arrays indexed by y + a.
    """
    scale = np.int64(1) << bits
    lo = np.empty(a + b + 1, dtype=np.int64)
    hi = np.empty(a + b + 1, dtype=np.int64)
    lo[a] = scale
    hi[a] = scale
    for y in range(1, b + 1):
        lo[a + y] = _mul_floor(lo[a + y - 1], ln, ld * (m + y))
        hi[a + y] = min(scale, _mul_ceil(hi[a + y - 1], ln, ld * (m + y)))
    for y in range(1, a + 1):
        lo[a - y] = _mul_floor(lo[a - y + 1], (m - y + 1) * ld, ln)
        hi[a - y] = min(scale, _mul_ceil(hi[a - y + 1], (m - y + 1) * ld, ln))
    return lo, hi


@nb.njit(cache=True, inline="always")
def _geometric_tail_length(words, cursor, bits, cap):
    """1 + G with P[G >= g] = (1 - 2**-bits)**g (a coin of 1 - 2**-bits is "bits random bits not
    all zero"); -1 if the stream is spent, 0 past ``cap``."""
    g = 0
    while True:
        x = read_bits(words, cursor, bits)
        if x < 0:
            return -1
        if x == 0:
            return 1 + g
        g += 1
        if g > cap:
            return 0


@nb.njit(cache=True)
def poisson_tail(words, cursor, ln, ld, m, a, b, s_up, s_low, cu_n, cu_d, cl_n, cl_d, tail_cap, side):
    """The tail part of a Poisson candidate after its window coin passed: the geometric length j
    and its rational coins. Returns the value, -2 if rejected, -1 if the stream is spent."""
    if side > 0:
        j = _geometric_tail_length(words, cursor, s_up, tail_cap)
        if j < 0:
            return -1
        if j == 0:
            return -2  # beyond 2**40 tail steps (probability below exp(-2**20)): rejected
        base = m + b + 1
        for step in range(j):
            if not (
                bernoulli_ratio(words, cursor, cu_n, cu_d)
                and bernoulli_ratio(words, cursor, base, base + step)
            ):
                return -1 if cursor[1] != 0 else -2
        return -1 if cursor[1] != 0 else m + b + j
    j = _geometric_tail_length(words, cursor, s_low, tail_cap)
    if j < 0:
        return -1
    if j == 0 or m - a - j < 0:
        return -2  # negative counts have probability 0; beyond the cap, see above
    base = m - a
    for step in range(j):
        if not (
            bernoulli_ratio(words, cursor, cl_n, cl_d)
            and bernoulli_ratio(words, cursor, base - step, base)
        ):
            return -1 if cursor[1] != 0 else -2
    return -1 if cursor[1] != 0 else m - a - j


@nb.njit(cache=True)
def poisson_kernel(
    words, cursor, out, start, ln, ld, m, a, b, s_up, s_low, cu_n, cu_d, cl_n, cl_d, tail_cap, lo, hi, bits
):
    """Exact Poisson(ln/ld) draws; calling convention of :func:`run_sampler`.

    Rejection from a flat window [m - a, m + b] around the mode m = floor(lambda) plus geometric
    tails of ratio rho = 1 - 2**-s. With f(k) = lambda^k / k!, the acceptance f(k) / (f(m) g(k))
    is a product of probabilities <= 1: the window part W(y) = f(m+y)/f(m) (y = b or -a for the
    tails), and in the tails the rational coins cu = lambda/((m+b+1) rho_up) times
    (m+b+1)/(m+b+i), or cl = (m-a)/(lambda rho_low) times (m-i)/(m-a). Proposal weights are
    integers (1 per window point; a tail of ratio rho carries rho/(1 - rho) = 2**s - 1), so
    picking the part is one uniform draw.

    W(y) is decided first, by one uniform integer U of ``bits`` bits against precomputed bounds
    lo <= 2**bits W(y) <= hi: U < lo passes, U >= hi rejects. Otherwise (probability at most
    (hi - lo) / 2**bits, about 2**-45 at bits = 62) the kernel stops with NEEDS_DECISION, reporting
    y, U and the part (0 window, +1 upper tail, -1 lower tail); the driver settles
    U + V < 2**bits W(y), V uniform in [0, 1), with exact rationals and finishes that candidate.
    """
    window = a + b + 1
    up_weight = (np.int64(1) << s_up) - 1
    low_weight = (np.int64(1) << s_low) - 1 if s_low > 0 else 0
    total = window + up_weight + low_weight
    i = start
    while i < out.size:
        begin = cursor[0]
        while True:
            idx = uniform_below(words, cursor, total)
            if idx < 0:
                return i, begin, EXHAUSTED, 0, 0, 0, begin
            if idx < window:
                y = idx - a
                side = 0
            elif idx < window + up_weight:
                y = b
                side = 1
            else:
                y = -a
                side = -1
            u = read_bits(words, cursor, bits)
            if u < 0:
                return i, begin, EXHAUSTED, 0, 0, 0, begin
            if u >= hi[y + a]:
                continue
            if u >= lo[y + a]:
                return i, cursor[0], NEEDS_DECISION, y, u, side, begin
            if side == 0:
                out[i] = m + y
                i += 1
                break
            value = poisson_tail(words, cursor, ln, ld, m, a, b, s_up, s_low, cu_n, cu_d, cl_n, cl_d, tail_cap, side)
            if value == -1:
                return i, begin, EXHAUSTED, 0, 0, 0, begin
            if value >= 0:
                out[i] = value
                i += 1
                break
    return i, cursor[0], DONE, 0, 0, 0, 0


SamplerKernel = Callable[..., tuple[int, int, int, int, int, int, int]]
# resolve(words, position, y, u, side) -> (value, next position): value >= 0 an accepted sample,
# REJECTED for a rejected candidate, None when the stream ran out first.
DecisionResolver = Callable[[np.ndarray, int, int, int, int], tuple[int | None, int]]
REJECTED = -2


def run_sampler(
    kernel: SamplerKernel,
    parameters: tuple,
    size: int,
    source: RandomWordSource,
    words_per_sample: float,
    resolve: DecisionResolver | None = None,
) -> np.ndarray:
    """Fill ``(size,) int64`` by calling ``kernel(words, cursor, out, start, *parameters)``.

    The kernel writes samples from ``out[start]`` on and returns ``(done, position, status, y, u,
    side, begin)``. EXHAUSTED: ``position`` is the first bit of the unfinished sample; the driver
    keeps the stream from there, appends fresh words (at least doubling the buffer) and calls
    again, so every sample reads one contiguous stretch of the stream exactly as if the buffer were
    unbounded. NEEDS_DECISION: ``resolve`` finishes the pending candidate exactly from ``position``
    on; accepted, its value is sample ``done``; either way the kernel resumes at the next bit (a
    rejected candidate is followed by a fresh one, exactly as inside the kernel).
    """
    if size < 0:
        raise SamplerParameterError(f"size must be non-negative, got {size}")
    out = np.empty(size, dtype=np.int64)
    if size == 0:
        return out
    chunk = int(min(max(64, words_per_sample * size * 1.05 + 16), _MAX_CHUNK_WORDS))
    # A writable copy: numba compiles read-only and writable arrays as different types.
    words = np.array(source.words(chunk), dtype=np.uint64, copy=True)
    if words.shape != (chunk,):
        raise RandomnessError(f"source returned {words.shape} words, asked for {chunk}")
    cursor = np.zeros(2, dtype=np.int64)
    done = 0
    while True:
        cursor[1] = 0
        done, position, status, y, u, side, begin = kernel(words, cursor, out, done, *parameters)
        if status == DONE:
            return out
        if status == NEEDS_DECISION:
            if resolve is None:
                raise SamplerParameterError("kernel asked for an exact decision but none was given")
            value, position_after = resolve(words, int(position), int(y), int(u), int(side))
            if value is not None:
                if value != REJECTED:
                    out[done] = value
                    done += 1
                    if done >= size:
                        return out
                cursor[0] = position_after
                continue
            position = begin
        keep = words[position >> 6 :]
        remaining = size - done
        fresh = int(min(words_per_sample * remaining * 1.05 + 16, _MAX_CHUNK_WORDS))
        fresh = max(fresh, len(keep) + 64)
        more = np.asarray(source.words(fresh), dtype=np.uint64)
        if more.shape != (fresh,):
            raise RandomnessError(f"source returned {more.shape} words, asked for {fresh}")
        words = np.concatenate((keep, more))
        cursor[0] = position & 63


class StreamReader:
    """Exact coins in Python over the same bit stream, for the rare decisions the kernels hand
    back (bit order as :func:`read_bits`: little-endian within each word)."""

    def __init__(self, words: np.ndarray, position: int) -> None:
        self.words = words
        self.position = position
        self.limit = int(words.size) * 64

    def bits(self, k: int) -> int | None:
        """Next k bits as an int (LSB first), or None when the stream ends."""
        if self.position + k > self.limit:
            return None
        value = 0
        for shift in range(k):
            position = self.position + shift
            value |= ((int(self.words[position >> 6]) >> (position & 63)) & 1) << shift
        self.position += k
        return value

    def coin(self, probability) -> bool | None:
        """Exact Bernoulli(probability) for a Fraction, or None when the stream ends."""
        decision, self.position = compare_uniform_with_rational(self.words, self.position, probability)
        return decision


def compare_uniform_with_rational(words: np.ndarray, position: int, target) -> tuple[bool | None, int]:
    """Decide V < target for V uniform on [0, 1) whose binary digits are the stream's bits from
    ``position`` on (read lazily), ``target`` an exact ``fractions.Fraction``.

    Returns (decision, next position), or (None, position) if the stream ends first. Uses about
    two bits on average; the comparison is exact for any rational target.
    """
    if target >= 1:
        return True, position
    if target <= 0:
        return False, position
    limit = int(words.size) * 64
    remainder = target
    while True:
        if position >= limit:
            return None, position
        bit = (int(words[position >> 6]) >> (position & 63)) & 1
        position += 1
        remainder *= 2
        digit = 1 if remainder >= 1 else 0
        remainder -= digit
        if bit != digit:
            return bit < digit, position
        if remainder == 0:
            # target's expansion ended: V (with this prefix) >= target.
            return False, position
