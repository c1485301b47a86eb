"""Exact discrete Gaussian noise N_Z(0, sigma^2), P[k] proportional to exp(-k^2 / (2 sigma^2)).

Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020),
Algorithms 1-3: discrete Laplace proposals of scale t = floor(sigma) + 1 (uniform part plus a
geometric count of Bernoulli(exp(-1)) trials), accepted with probability
exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)) by an exact Bernoulli(exp(-gamma)). All arithmetic is on
integers; sigma^2 is first rounded *up* to a rational with a power-of-two denominator and at least
20 significant bits, so the realized noise is never smaller than the calibrated one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from privacy.errors import SamplerParameterError
from privacy.exact_sampling import discrete_gaussian_kernel, run_sampler
from privacy.randomness import RandomWordSource, resolve_source

MIN_SIGMA = 2.0**-6
MAX_SIGMA = 2.0**15
MAX_SAMPLES_PER_CALL = 1 << 28
# sigma^2 is represented with at least this many significant bits (relative rounding < 2**-20).
VARIANCE_PRECISION_BITS = 20
# Random words one sample consumes on average (measured; only sizes the first buffer).
_WORDS_PER_SAMPLE = 1.2


def rational_ceiling(value: float, precision_bits: int = VARIANCE_PRECISION_BITS) -> tuple[int, int]:
    """(numerator, 2**k) with numerator / 2**k >= value, numerator >= 2**precision_bits (or k = 0),
    and relative excess below 2**-precision_bits. Exact: the float is converted without rounding."""
    exact = Fraction(value)
    if exact <= 0:
        raise SamplerParameterError(f"value must be positive, got {value}")
    exponent = max(0, precision_bits - math.floor(math.log2(value)))
    denominator = 1 << exponent
    numerator = math.ceil(exact * denominator)
    return numerator, denominator


@dataclass(frozen=True)
class DiscreteGaussianParameters:
    """The exact integer parameters the sampler runs with.

    ``variance_numerator / variance_denominator`` is sigma^2 as sampled (>= the requested sigma^2);
    ``laplace_scale`` is t = floor(sigma) + 1.
    """

    sigma: float
    variance_numerator: int
    variance_denominator: int
    laplace_scale: int

    @property
    def variance(self) -> Fraction:
        """sigma^2 exactly as sampled."""
        return Fraction(self.variance_numerator, self.variance_denominator)

    @property
    def realized_sigma(self) -> float:
        """sqrt of the sampled variance, rounded up to the next float."""
        return math.nextafter(math.sqrt(self.variance_numerator / self.variance_denominator), math.inf)


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise SamplerParameterError(f"sigma must be a real number, got {type(sigma).__name__}")
    sigma = float(sigma)
    if not math.isfinite(sigma) or not (MIN_SIGMA <= sigma <= MAX_SIGMA):
        raise SamplerParameterError(
            f"sigma must be finite and in [{MIN_SIGMA}, {MAX_SIGMA}] for exact 64-bit sampling, "
            f"got {sigma}; use Skellam noise for larger scales"
        )
    return sigma


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise SamplerParameterError(f"size must be an int, got {type(size).__name__}")
    size = int(size)
    if not 0 <= size <= MAX_SAMPLES_PER_CALL:
        raise SamplerParameterError(f"size must be in [0, {MAX_SAMPLES_PER_CALL}], got {size}")
    return size


def discrete_gaussian_parameters(sigma: float) -> DiscreteGaussianParameters:
    """Integer parameters for N_Z(0, sigma^2); raises SamplerParameterError out of range."""
    sigma = _check_sigma(sigma)
    numerator, denominator = rational_ceiling(sigma * sigma)
    # floor(sqrt(x)) = isqrt(floor(x)) for real x >= 0.
    scale = math.isqrt(numerator // denominator) + 1
    # The acceptance test works with D = 2 sn sd t^2, which must stay below 2**62 (the sigma
    # range guarantees it).
    if 2 * numerator * denominator * scale * scale >= (1 << 62):
        raise SamplerParameterError(f"sigma {sigma} needs more than 64-bit integer arithmetic")
    return DiscreteGaussianParameters(sigma, numerator, denominator, scale)


def sample_discrete_gaussian(
    sigma: float, size: int, source: RandomWordSource | None = None
) -> np.ndarray:
    """``(size,) int64`` i.i.d. draws of N_Z(0, sigma^2), exact, from ``source`` (default: OS CSPRNG).

    sigma in [2**-6, 2**15] (integer units). The variance sampled is sigma^2 rounded up by less
    than a factor 1 + 2**-20 (see :func:`discrete_gaussian_parameters`). Proposals whose magnitude
    would overflow 64-bit arithmetic (beyond 2**30 sigma; probability below exp(-2**30)) are
    rejected, i.e. the law is N_Z(0, sigma^2) conditioned on that astronomically likely event.
    """
    size = _check_size(size)
    params = discrete_gaussian_parameters(sigma)
    sn, sd, t = params.variance_numerator, params.variance_denominator, params.laplace_scale
    magnitude_cap = ((1 << 62) - 1) // (t * sd) - 1
    return run_sampler(
        discrete_gaussian_kernel,
        (sn, sd, t, magnitude_cap),
        size,
        resolve_source(source),
        _WORDS_PER_SAMPLE,
    )


def discrete_gaussian_log_normalizer(sigma: float) -> float:
    """log sum_k exp(-k^2 / (2 sigma^2)), summed over |k| <= 40 sigma + 40 (float64 reference)."""
    sigma = float(sigma)
    half = int(40 * sigma) + 40
    k = np.arange(-half, half + 1, dtype=np.float64)
    log_terms = -(k * k) / (2.0 * sigma * sigma)
    top = log_terms.max()
    return float(top + np.log(np.exp(log_terms - top).sum()))


def discrete_gaussian_pmf(values: np.ndarray, sigma: float) -> np.ndarray:
    """P[X = k] for X ~ N_Z(0, sigma^2) at integer ``values`` (float64 reference, for tests)."""
    values = np.asarray(values, dtype=np.float64)
    return np.exp(-(values * values) / (2.0 * sigma * sigma) - discrete_gaussian_log_normalizer(sigma))


def discrete_gaussian_delta(sigma: float, sensitivity: int, epsilon: float) -> float:
    """Exact delta of the 1-D discrete Gaussian mechanism at epsilon for integer sensitivity.

    CKS Theorem 7: delta = P[X > eps sigma^2/Delta - Delta/2] - e^eps P[X > eps sigma^2/Delta + Delta/2],
    X ~ N_Z(0, sigma^2).
    """
    if isinstance(sensitivity, bool) or int(sensitivity) != sensitivity or sensitivity < 1:
        raise SamplerParameterError(f"sensitivity must be a positive integer, got {sensitivity}")
    if not (sigma > 0 and math.isfinite(sigma)) or not (epsilon >= 0 and math.isfinite(epsilon)):
        raise SamplerParameterError(f"need sigma > 0 and epsilon >= 0, got {sigma}, {epsilon}")
    half = int(40 * sigma) + 40 + int(sensitivity) + int(epsilon * sigma * sigma / sensitivity)
    k = np.arange(-half, half + 1, dtype=np.float64)
    pmf = discrete_gaussian_pmf(k, sigma)
    centre = epsilon * sigma * sigma / sensitivity
    upper = pmf[k > centre - sensitivity / 2.0].sum()
    lower = pmf[k > centre + sensitivity / 2.0].sum()
    return float(max(0.0, upper - math.exp(epsilon) * lower))
