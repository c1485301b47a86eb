"""Noise calibration: the smallest noise meeting a target (epsilon, delta), and the inverse maps.

Every ``calibrate_*`` returns a noise scale whose epsilon (by the matching ``*_epsilon``) is at
most the target: the bisection keeps the conservative end. Every epsilon here is the ledger
accountant's answer about an event (:func:`event_epsilon`, :func:`calibrate_event`), so a run
is calibrated by exactly the computation that later charges and audits it. ``compositions`` = T configures a
run by its total epsilon over T identical releases (RDP composes additively); T = 1 is per round.
Units: sensitivities and scales are in the units the noise is added in (integer lattice
coordinates for the discrete mechanisms).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import special

from privacy.accounting import epsilon_from_rdp, rdp_of
from privacy.errors import CalibrationError
from privacy.events import (
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    Event,
    SkellamEvent,
)

_BISECTION_STEPS = 200
_RELATIVE_TOLERANCE = 1e-12
_SCALE_RANGE = (1e-8, 1e12)


def _finite_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CalibrationError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise CalibrationError(f"{name} must be finite and > 0, got {value}")
    return value


def _delta(delta: float) -> float:
    delta = _finite_positive(delta, "delta")
    if delta >= 1:
        raise CalibrationError(f"delta must be in (0, 1), got {delta}")
    return delta


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CalibrationError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _smallest_scale(epsilon_at: Callable[[float], float], target: float, name: str, *, start: float = 1.0,
                    tolerance: float = _RELATIVE_TOLERANCE) -> float:
    """Smallest scale s (to relative ``tolerance``) with epsilon_at(s) <= target, for epsilon_at
    non-increasing in s; bisection on log s from ``start``, returning the end that satisfies the
    target."""
    low, high = start, start
    while epsilon_at(high) > target:
        high *= 4.0
        if high > _SCALE_RANGE[1]:
            raise CalibrationError(f"no {name} up to {_SCALE_RANGE[1]:g} reaches epsilon {target}")
    while epsilon_at(low) <= target:
        low /= 4.0
        if low < _SCALE_RANGE[0]:
            return _SCALE_RANGE[0]
    for _ in range(_BISECTION_STEPS):
        middle = math.sqrt(low * high)
        if epsilon_at(middle) <= target:
            high = middle
        else:
            low = middle
        if high / low - 1 < tolerance:
            break
    return high


# --- the one path to epsilon: ask the accountant about events ------------------------------------


def event_epsilon(event: Event, delta: float, compositions: int = 1) -> float:
    """epsilon at ``delta`` of ``compositions`` releases of ``event``, by the ledger's own
    accountant (``privacy.accounting.rdp_of``): the path every calibration below takes."""
    return epsilon_from_rdp(_count(compositions, "compositions") * rdp_of(event), _delta(delta))[0]


def calibrate_event(event_at: Callable[[float], Event], target_epsilon: float, delta: float,
                    compositions: int = 1, *, name: str = "scale", start: float = 1.0,
                    tolerance: float = _RELATIVE_TOLERANCE) -> float:
    """Smallest scale s whose event ``event_at(s)``, released ``compositions`` times, is
    (target_epsilon, delta)-DP by the accountant, as dp-accounting's ``calibrate_dp_mechanism``
    asks its accountant about ``make_event(param)``; ``event_at`` must give less privacy loss
    the larger s is. The returned end always meets the target."""
    target = _finite_positive(target_epsilon, "target_epsilon")
    delta = _delta(delta)
    compositions = _count(compositions, "compositions")
    return _smallest_scale(lambda s: event_epsilon(event_at(s), delta, compositions), target, name,
                           start=_finite_positive(start, "start"), tolerance=tolerance)


# --- continuous Gaussian ------------------------------------------------------------------------


def analytic_gaussian_delta(sigma: float, epsilon: float, sensitivity: float = 1.0) -> float:
    """Exact delta of f(x) + N(0, sigma^2 I) at epsilon (Balle & Wang 2018, Thm 8):
    Phi(D/(2 sigma) - eps sigma/D) - e^eps Phi(-D/(2 sigma) - eps sigma/D)."""
    sigma = _finite_positive(sigma, "sigma")
    sensitivity = _finite_positive(sensitivity, "sensitivity")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise CalibrationError(f"epsilon must be finite and >= 0, got {epsilon}")
    a = sensitivity / (2 * sigma)
    b = epsilon * sigma / sensitivity
    first = special.ndtr(a - b)
    second = math.exp(epsilon + special.log_ndtr(-a - b))
    return float(max(0.0, first - second))


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Smallest sigma with (epsilon, delta)-DP for the Gaussian mechanism (Balle & Wang 2018),
    by bisection in log space; unlike the classical D sqrt(2 ln(1.25/delta))/eps it holds for
    every epsilon > 0 and is tight."""
    epsilon = _finite_positive(epsilon, "epsilon")
    delta = _delta(delta)
    sensitivity = _finite_positive(sensitivity, "sensitivity")
    return _smallest_scale(
        lambda s: 0.0 if analytic_gaussian_delta(s, epsilon, sensitivity) <= delta else math.inf, 0.5, "sigma"
    )


def analytic_gaussian_epsilon(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """Smallest epsilon with analytic_gaussian_delta(sigma, epsilon) <= delta (inverse of
    :func:`analytic_gaussian_sigma`)."""
    sigma = _finite_positive(sigma, "sigma")
    delta = _delta(delta)
    sensitivity = _finite_positive(sensitivity, "sensitivity")
    if analytic_gaussian_delta(sigma, 0.0, sensitivity) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while analytic_gaussian_delta(sigma, high, sensitivity) > delta:
        low, high = high, high * 2
        if high > 1e6:
            raise CalibrationError("epsilon above 1e6: the noise is negligible")
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if analytic_gaussian_delta(sigma, middle, sensitivity) <= delta:
            high = middle
        else:
            low = middle
        if high - low < _RELATIVE_TOLERANCE * high:
            break
    return high


def classical_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Dwork & Roth's D sqrt(2 ln(1.25/delta)) / eps; valid only for epsilon < 1 (reference)."""
    epsilon = _finite_positive(epsilon, "epsilon")
    delta = _delta(delta)
    return _finite_positive(sensitivity, "sensitivity") * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


# --- discrete mechanisms, by RDP ---------------------------------------------------------------


def discrete_gaussian_epsilon(sigma: float, delta: float, l2_sensitivity: float, compositions: int = 1) -> float:
    """epsilon at delta of T discrete Gaussian releases, N_Z(0, sigma^2) per coordinate (RDP)."""
    event = DiscreteGaussianEvent(_finite_positive(sigma, "sigma"), _finite_positive(l2_sensitivity, "l2_sensitivity"))
    return event_epsilon(event, delta, compositions)


def calibrate_discrete_gaussian_sigma(
    target_epsilon: float, delta: float, l2_sensitivity: float, compositions: int = 1
) -> float:
    """Smallest sigma whose T-fold discrete Gaussian composition is (target_epsilon, delta)-DP."""
    target = _finite_positive(target_epsilon, "target_epsilon")
    delta = _delta(delta)
    sensitivity = _finite_positive(l2_sensitivity, "l2_sensitivity")
    compositions = _count(compositions, "compositions")
    return _smallest_scale(
        lambda s: discrete_gaussian_epsilon(s, delta, sensitivity, compositions), target, "sigma"
    )


def skellam_epsilon(
    mu: float, delta: float, l2_sensitivity: float, l1_sensitivity: float, compositions: int = 1
) -> float:
    """epsilon at delta of T Skellam releases with variance mu per coordinate (RDP)."""
    event = SkellamEvent(_finite_positive(mu, "mu"), _finite_positive(l2_sensitivity, "l2_sensitivity"),
                         _finite_positive(l1_sensitivity, "l1_sensitivity"))
    return event_epsilon(event, delta, compositions)


def calibrate_skellam_mu(
    target_epsilon: float, delta: float, l2_sensitivity: float, l1_sensitivity: float, compositions: int = 1
) -> float:
    """Smallest Skellam variance mu whose T-fold composition is (target_epsilon, delta)-DP."""
    target = _finite_positive(target_epsilon, "target_epsilon")
    delta = _delta(delta)
    l2 = _finite_positive(l2_sensitivity, "l2_sensitivity")
    l1 = _finite_positive(l1_sensitivity, "l1_sensitivity")
    compositions = _count(compositions, "compositions")
    # Search over sigma = sqrt(mu) so the scale range matches the Gaussian's.
    sigma = _smallest_scale(lambda s: skellam_epsilon(s * s, delta, l2, l1, compositions), target, "sqrt(mu)")
    return sigma * sigma


def calibrate_distributed_skellam_share(
    target_epsilon: float,
    delta: float,
    l2_sensitivity: float,
    l1_sensitivity: float,
    noise_floor: int,
    dimension: int,
    compositions: int = 1,
    relation: str = "zero-out",
) -> float:
    """Smallest per-client Skellam variance mu_share such that ``noise_floor`` shares give
    (target_epsilon, delta) over ``compositions`` rounds under ``relation``
    (``privacy.relations``): under zero-out the central mu / floor; under add/remove the search
    starts there and stops at relative 1e-3 (each step is an exact lattice computation)."""
    l2 = _finite_positive(l2_sensitivity, "l2_sensitivity")
    l1 = _finite_positive(l1_sensitivity, "l1_sensitivity")
    floor, dimension = _count(noise_floor, "noise_floor"), _count(dimension, "dimension")

    def event_at(relation_name: str):
        # Searching over sqrt(central mu) keeps the scale range the Gaussian's.
        return lambda s: DistributedSkellamEvent(s * s / floor, floor, l2, l1, relation=relation_name,
                                                 dimension=dimension)

    root = calibrate_event(event_at("zero-out"), target_epsilon, delta, compositions, name="sqrt(mu)")
    if relation != "zero-out":
        root = calibrate_event(event_at(relation), target_epsilon, delta, compositions, name="sqrt(mu)",
                               start=root, tolerance=1e-3)
    return root * root / floor


def ddgauss_epsilon(
    local_sigma: float,
    delta: float,
    l2_sensitivity: float,
    l1_sensitivity: float,
    dimension: int,
    clients: int,
    compositions: int = 1,
) -> float:
    """epsilon at delta of T distributed discrete Gaussian sums of ``clients`` shares (RDP)."""
    event = DistributedDiscreteGaussianEvent(
        _finite_positive(local_sigma, "local_sigma"), _count(clients, "clients"),
        _finite_positive(l2_sensitivity, "l2_sensitivity"), _finite_positive(l1_sensitivity, "l1_sensitivity"),
        _count(dimension, "dimension"))
    return event_epsilon(event, delta, compositions)


def calibrate_ddgauss_local_sigma(
    target_epsilon: float,
    delta: float,
    l2_sensitivity: float,
    l1_sensitivity: float,
    dimension: int,
    clients: int,
    compositions: int = 1,
) -> float:
    """Smallest per-client sigma_l such that ``clients`` shares give (target_epsilon, delta)-DP."""
    target = _finite_positive(target_epsilon, "target_epsilon")
    delta = _delta(delta)
    l2 = _finite_positive(l2_sensitivity, "l2_sensitivity")
    l1 = _finite_positive(l1_sensitivity, "l1_sensitivity")
    dimension = _count(dimension, "dimension")
    clients = _count(clients, "clients")
    compositions = _count(compositions, "compositions")
    return _smallest_scale(
        lambda s: ddgauss_epsilon(s, delta, l2, l1, dimension, clients, compositions), target, "local sigma"
    )


# --- sensitivity of rounded integer vectors (docs/ALGORITHMS.md §3.3) ---------------------------


def rounded_l2_bound(l2_norm: float, dimension: int, beta: float = 0.0) -> float:
    """L2 norm bound of an integer vector obtained by rounding a vector of norm <= c (scaled units).

    beta = 0: any rounding with per-coordinate error below 1, c + sqrt(d). Conditional randomized
    rounding with failure probability beta (Kairouz et al. 2021):
    min(c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2))).
    """
    c = _finite_positive(l2_norm, "l2_norm")
    d = _count(dimension, "dimension")
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise CalibrationError(f"beta must be in [0, 1), got {beta!r}")
    plain = c + math.sqrt(d)
    if beta == 0:
        return plain
    conditional = math.sqrt(c * c + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(d) / 2))
    return min(plain, conditional)


def rounded_l1_bound(l2_bound: float, dimension: int) -> float:
    """L1 bound of an integer vector with L2 norm <= l2_bound: min(sqrt(d), l2_bound) * l2_bound."""
    bound = _finite_positive(l2_bound, "l2_bound")
    return bound * min(math.sqrt(_count(dimension, "dimension")), bound)


def local_l2_sensitivity(scaled_clip: float, dimension: int, beta: float = 0.0) -> float:
    """Replace-one (LDP) L2 sensitivity of a rounded update clipped to ``scaled_clip``: 2x the
    rounded norm bound (any two inputs are neighbours, docs/ALGORITHMS.md §3.1)."""
    return 2.0 * rounded_l2_bound(scaled_clip, dimension, beta)
