"""Exact Skellam noise Sk(mu) = Pois(mu/2) - Pois(mu/2): integer, variance mu, closed under sums.

Agarwal, Kairouz & Liu, "The Skellam Mechanism for Differentially Private Federated Learning"
(NeurIPS 2021): because Sk(mu_1) + Sk(mu_2) = Sk(mu_1 + mu_2), n clients that each add Sk(mu/n)
give the secure sum exactly Sk(mu). The Poisson draws are exact rejection sampling with rational
coins (see :func:`privacy.exact_sampling.poisson_draw`); lambda = mu/2 is first rounded *up* to a
rational with a power-of-two denominator and at least 20 significant bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from fractions import Fraction

import numpy as np
from scipy import special, stats

from privacy.discrete_gaussian import rational_ceiling
from privacy.errors import SamplerParameterError
from privacy.exact_sampling import (
    REJECTED,
    StreamReader,
    poisson_kernel,
    poisson_window_bounds,
    run_sampler,
)
from privacy.randomness import RandomWordSource, resolve_source

MIN_POISSON_MEAN = 2.0**-20
MAX_POISSON_MEAN = 2.0**30
MAX_SAMPLES_PER_CALL = 1 << 27
# Window half-width in standard deviations. A tail candidate first meets the window coin W(edge),
# about exp(-4.5) at 3 standard deviations, so the slow geometric tail work is rare.
_WINDOW_STDS = 3
# Geometric tail steps beyond this are rejected (probability below exp(-2**20)).
_TAIL_CAP = 1 << 40
# Bits of the uniform integer compared with the window bounds.
DECISION_BITS = 62


@dataclass(frozen=True)
class PoissonParameters:
    """Integer parameters of the exact Poisson(lambda) sampler (lambda = numerator / denominator)."""

    mean: float
    numerator: int
    denominator: int
    mode: int
    below: int
    above: int
    upper_tail_bits: int
    lower_tail_bits: int
    upper_coin: tuple[int, int]
    lower_coin: tuple[int, int]
    decision_bits: int
    window_low: np.ndarray = field(repr=False, compare=False)
    window_high: np.ndarray = field(repr=False, compare=False)

    @property
    def exact_mean(self) -> Fraction:
        """lambda exactly as sampled (>= the requested mean)."""
        return Fraction(self.numerator, self.denominator)

    def kernel_arguments(self) -> tuple[int, ...]:
        return (
            self.numerator,
            self.denominator,
            self.mode,
            self.below,
            self.above,
            self.upper_tail_bits,
            self.lower_tail_bits,
            self.upper_coin[0],
            self.upper_coin[1],
            self.lower_coin[0],
            self.lower_coin[1],
            _TAIL_CAP,
            self.window_low,
            self.window_high,
            self.decision_bits,
        )

    def words_per_draw(self) -> float:
        """Rough random words one draw consumes (sizes the first buffer only)."""
        return 6.0

    def window_ratio(self, y: int) -> Fraction:
        """f(m+y)/f(m) exactly, f(k) = lambda^k / k!, for y in [-below, above]."""
        ratio = Fraction(1)
        lam = self.exact_mean
        if y > 0:
            for i in range(1, y + 1):
                ratio *= lam / (self.mode + i)
        else:
            for i in range(-y):
                ratio *= (self.mode - i) / lam
        return ratio

    def resolve(self, words: np.ndarray, position: int, y: int, u: int, side: int) -> tuple[int | None, int]:
        """Finish a candidate the kernel handed back (NEEDS_DECISION) with exact rationals.

        First U + V < 2**bits W(y), V uniform on [0, 1) from the stream; then, for a tail
        candidate, its geometric length and rational coins, as in the kernel. Returns (value or
        REJECTED, next position), or (None, position) when the stream runs out.
        """
        reader = StreamReader(words, position)
        target = self.window_ratio(y) * (1 << self.decision_bits) - u
        passed = reader.coin(target)
        if passed is None:
            return None, position
        if not passed:
            return REJECTED, reader.position
        if side == 0:
            return self.mode + y, reader.position
        bits = self.upper_tail_bits if side > 0 else self.lower_tail_bits
        length = 1
        while True:
            block = reader.bits(bits)
            if block is None:
                return None, position
            if block == 0:
                break
            length += 1
            if length > _TAIL_CAP + 1:
                return REJECTED, reader.position
        if side > 0:
            base = self.mode + self.above + 1
            coin = Fraction(*self.upper_coin)
            ratios = (Fraction(base, base + step) for step in range(length))
            value = self.mode + self.above + length
        else:
            base = self.mode - self.below
            if base - length < 0:
                return REJECTED, reader.position
            coin = Fraction(*self.lower_coin)
            ratios = (Fraction(base - step, base) for step in range(length))
            value = base - length
        for ratio in ratios:
            for probability in (coin, ratio):
                passed = reader.coin(probability)
                if passed is None:
                    return None, position
                if not passed:
                    return REJECTED, reader.position
        return value, reader.position


def _smallest_power_bits(numerator: int, denominator: int) -> int:
    """Smallest s >= 1 with 2**s >= numerator / denominator (both positive)."""
    s = 1
    while (denominator << s) < numerator:
        s += 1
    return s


def _check_mean(mean: float, name: str) -> float:
    if isinstance(mean, bool) or not isinstance(mean, (int, float, np.integer, np.floating)):
        raise SamplerParameterError(f"{name} must be a real number, got {type(mean).__name__}")
    mean = float(mean)
    if not math.isfinite(mean) or not (MIN_POISSON_MEAN <= mean <= MAX_POISSON_MEAN):
        raise SamplerParameterError(
            f"{name} must be finite and in [{MIN_POISSON_MEAN}, {MAX_POISSON_MEAN}], got {mean}"
        )
    return mean


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise SamplerParameterError(f"size must be an int, got {type(size).__name__}")
    size = int(size)
    if not 0 <= size <= MAX_SAMPLES_PER_CALL:
        raise SamplerParameterError(f"size must be in [0, {MAX_SAMPLES_PER_CALL}], got {size}")
    return size


def poisson_parameters(mean: float, decision_bits: int = DECISION_BITS) -> PoissonParameters:
    """Integer parameters for an exact Poisson(mean) sampler, mean in [2**-20, 2**30].

    ``decision_bits`` (default 62) only trades speed: tests lower it to force the exact
    rational fallback often. Cached per (mean, bits): a client reuses one noise scale.
    """
    mean = _check_mean(mean, "Poisson mean")
    if isinstance(decision_bits, bool) or not isinstance(decision_bits, int) or not 2 <= decision_bits <= 62:
        raise SamplerParameterError(f"decision_bits must be an int in [2, 62], got {decision_bits}")
    return _poisson_parameters(mean, decision_bits)


@lru_cache(maxsize=64)
def _poisson_parameters(mean: float, decision_bits: int) -> PoissonParameters:
    ln, ld = rational_ceiling(mean)
    mode = ln // ld
    half_width = math.isqrt(math.ceil(_WINDOW_STDS**2 * ln / ld)) + 2
    below = min(mode, half_width)
    above = half_width
    # Upper tail ratio rho = 1 - 2**-s must be >= lambda/(m+b+1).
    edge = (mode + above + 1) * ld
    upper_bits = _smallest_power_bits(edge, edge - ln)
    upper_coin = (ln << upper_bits, ld * ((1 << upper_bits) - 1) * (mode + above + 1))
    if below < mode:
        # Lower tail ratio rho = 1 - 2**-s must be >= (m-a)/lambda.
        lower_bits = _smallest_power_bits(ln, ln - (mode - below) * ld)
        lower_coin = ((mode - below) * ld << lower_bits, ln * ((1 << lower_bits) - 1))
    else:
        lower_bits = 0
        lower_coin = (0, 1)
    # Every coin is a uniform draw below its denominator (< 2**62), and the window recurrences
    # multiply by n/d with d n < 2**63 (see poisson_window_bounds); the mean range guarantees both.
    if not all(0 <= n <= d < (1 << 62) for n, d in (upper_coin, lower_coin)) or ln * ld * (mode + above) >= (1 << 63):
        raise SamplerParameterError(f"Poisson mean {mean} needs more than 64-bit integer arithmetic")
    low, high = poisson_window_bounds(ln, ld, mode, below, above, decision_bits)
    low.setflags(write=False)
    high.setflags(write=False)
    return PoissonParameters(
        mean, ln, ld, mode, below, above, upper_bits, lower_bits, upper_coin, lower_coin,
        decision_bits, low, high,
    )


def sample_poisson(
    mean: float, size: int, source: RandomWordSource | None = None, *, decision_bits: int = DECISION_BITS
) -> np.ndarray:
    """``(size,) int64`` exact Poisson(mean) draws from ``source`` (default: OS CSPRNG).

    mean in [2**-20, 2**30], rounded up by a factor below 1 + 2**-20. Geometric tail proposals
    longer than 2**40 steps (probability below exp(-2**20)) are rejected.
    """
    size = _check_size(size)
    params = poisson_parameters(mean, decision_bits)
    return run_sampler(
        poisson_kernel,
        params.kernel_arguments(),
        size,
        resolve_source(source),
        params.words_per_draw(),
        params.resolve,
    )


def sample_skellam(
    mu: float, size: int, source: RandomWordSource | None = None, *, decision_bits: int = DECISION_BITS
) -> np.ndarray:
    """``(size,) int64`` exact Sk(mu) draws (variance mu, integer units) from ``source``.

    mu in [2**-19, 2**31]; each draw is Pois(mu/2) - Pois(mu/2) with mu/2 rounded up as in
    :func:`sample_poisson`, so the realized variance is never below mu.
    """
    size = _check_size(size)
    if isinstance(mu, bool) or not isinstance(mu, (int, float, np.integer, np.floating)):
        raise SamplerParameterError(f"mu must be a real number, got {type(mu).__name__}")
    params = poisson_parameters(_check_mean(float(mu) / 2.0, "mu/2"), decision_bits)
    pairs = run_sampler(
        poisson_kernel,
        params.kernel_arguments(),
        2 * size,
        resolve_source(source),
        params.words_per_draw(),
        params.resolve,
    )
    return pairs[0::2] - pairs[1::2]


def skellam_pmf(values: np.ndarray, mu: float) -> np.ndarray:
    """P[X = k] for X ~ Sk(mu) = Pois(mu/2) - Pois(mu/2): exp(-mu) I_|k|(mu) (float64 reference)."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    # ive(k, x) = I_k(x) exp(-x): stable for large mu.
    return special.ive(values, float(mu))


def poisson_pmf(values: np.ndarray, mean: float) -> np.ndarray:
    """P[X = k] for X ~ Poisson(mean) (float64 reference, for tests)."""
    return stats.poisson.pmf(np.asarray(values), float(mean))
