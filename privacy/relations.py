"""Neighbouring relations of distributed noise, and the exact add/remove cost of a share leaving.

Two relations between a round with client j and a round without it:

- ``zero-out`` (the default): client j takes part, its *data* is replaced by nothing (its
  update is zero), and its noise share stays in the sum. The sums differ by j's clipped update
  only, so the central noise ``floor * mu_share`` against the update's L2/L1 sensitivity is the
  whole analysis (``privacy.rdp.skellam_rdp``). It is the relation that matters against a
  server that sees who took part: participation is visible (the server asks each client for
  its masked input), so the guarantee protects what a client's data changes, not whether it
  sent something. It is the relation of the distributed-DP literature (Kairouz, Liu, Steinke
  2021; Agarwal, Kairouz, Liu 2021).
- ``add-remove``: client j and its noise share leave the sum. The sum with j holds m shares
  (variance m * mu_share per coordinate) plus j's update; without j, m - 1 shares. The variance
  mismatch costs something on *every* coordinate, even those j's update leaves at zero, so this
  relation's ε grows with the dimension. Accounted here exactly on the integer lattice.

The add/remove computation (:func:`skellam_add_remove_rdp`), per coordinate: with
P_a = Sk(m mu) shifted by the integer a and Q = Sk((m - 1) mu) (m = the floor, the worst
accepted case), the Rényi divergences f(a) = D_alpha(P_a || Q) and f'(a) = D_alpha(Q || P_a) are
summed on the lattice from the exact Skellam pmf (e^-V I_|k|(V), scipy's ``ive``). Coordinates
compose (independent noise), so for an update a in Z^d with ||a||_2 <= Delta_2:

    sum_k f(a_k) = d f(0) + sum_k g(a_k) <= d f(0) + Delta_2^2 * max_{1<=a<=Delta_2} g(a)/a^2,

with g(a) = f(a) - f(0) (f is even in a: Skellam is symmetric), the maximum taken over every
integer a; the same for f'. The event's RDP at alpha is the larger of the two directions.

Numerics (assumptions, stated): each lattice sum runs over a window of +-``_WINDOW_SIGMAS``
effective standard deviations around its centre; the terms at the window's edges are checked to
be below 1e-40 of the largest (else AccountingError), so the omitted tails change nothing at
double precision. Divergences are computed at the orders in :data:`EXACT_ORDERS` below
m - 1 (for Gaussians of variances m mu and (m-1) mu the divergence is infinite from alpha = m);
an order in between two of them takes the value of the next one above (Rényi divergence is
non-decreasing in alpha, so this is an upper bound); orders above the largest computed one, and
orders whose lattice window reaches pmf values below double precision (about 37 standard
deviations out, where scipy's ``ive`` underflows), are +inf: never chosen by the conversion to
(ε, δ), a valid upper bound that costs only at very small ε.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np
from scipy import special

from privacy.errors import AccountingError
from privacy.events import (
    ComposedEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    Event,
    PoissonSampledEvent,
    RELATIONS,
    SelfComposedEvent,
)

ZERO_OUT, ADD_REMOVE = RELATIONS
DEFAULT_RELATION = ZERO_OUT

#: Rényi orders at which the add/remove divergence is computed exactly.
EXACT_ORDERS = (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 16.0,
                20.0, 24.0, 32.0, 48.0, 64.0)
_WINDOW_SIGMAS = 14.0
_EDGE_RATIO = 1e-40
_CHUNK = 16


def check_relation(relation: object) -> str:
    if relation not in RELATIONS:
        raise AccountingError(f"unknown neighbouring relation {relation!r}; choose one of {RELATIONS}")
    return relation  # type: ignore[return-value]


def _skellam_logpmf(k: np.ndarray, variance: float) -> np.ndarray:
    """log P(Sk = k) for the symmetric Skellam of variance ``variance``: log(e^-V I_|k|(V))."""
    with np.errstate(divide="ignore"):
        return np.log(special.ive(np.abs(k).astype(np.float64), variance))


def _log_sums(alpha: float, v_p: float, v_q: float, shifts: int) -> np.ndarray:
    """log sum_k P_a(k)^alpha Q(k)^(1-alpha) for a = 0..shifts, P_a = Sk(v_p) + a, Q = Sk(v_q)."""
    # The Gaussian analogue's effective variance of the summand (finite as alpha v_q > (alpha-1) v_p).
    denominator = alpha * v_q - (alpha - 1) * v_p
    if denominator <= 0:
        return np.full(shifts + 1, math.inf)
    v_eff = v_p * v_q / denominator
    half = int(math.ceil(_WINDOW_SIGMAS * math.sqrt(max(v_eff, v_p, v_q)))) + 1
    # The summand peaks near alpha a v_q / denominator (its Gaussian analogue's mean), beyond a.
    top_centre = int(math.ceil(max(shifts, alpha * shifts * v_q / denominator)))
    k = np.arange(-half, half + top_centre + 1, dtype=np.int64)
    log_q = _skellam_logpmf(k, v_q)
    log_p = _skellam_logpmf(np.arange(-half - shifts, half + top_centre + 1, dtype=np.int64), v_p)
    if not (np.all(np.isfinite(log_q)) and np.all(np.isfinite(log_p))):
        # The window reaches pmf values below double precision's range: not computed at this
        # order (the caller bounds it by +inf).
        return np.full(shifts + 1, math.inf)
    windows = np.lib.stride_tricks.sliding_window_view(log_p, k.size)  # windows[i] = log_p[i : i + |k|]
    result = np.empty(shifts + 1)
    # P_a(k) = P(k - a): for shift a the window starts at index (shifts - a) of log_p.
    for first in range(0, shifts + 1, _CHUNK):
        a = np.arange(first, min(shifts + 1, first + _CHUNK))
        terms = alpha * windows[shifts - a] + (1 - alpha) * log_q
        top = terms.max(axis=1)
        if not np.all(np.isfinite(top)):
            raise AccountingError("add/remove divergence: no finite term in the lattice window")
        edges = np.maximum(terms[:, 0], terms[:, -1]) - top
        if np.any(edges > math.log(_EDGE_RATIO)):
            raise AccountingError(f"add/remove divergence at order {alpha}: the lattice window is too narrow "
                                  f"(edge terms above {_EDGE_RATIO:g} of the peak)")
        result[a] = top + np.log(np.exp(terms - top[:, None]).sum(axis=1))
    return result


@lru_cache(maxsize=256)
def _per_coordinate(alpha: float, mu_share: float, shares: int, shifts: int) -> tuple[float, float, float, float]:
    """(f(0), max g(a)/a^2, f'(0), max g'(a)/a^2) at ``alpha`` for one coordinate."""
    v_with, v_without = shares * mu_share, (shares - 1) * mu_share
    out = []
    for v_p, v_q in ((v_with, v_without), (v_without, v_with)):
        logs = _log_sums(alpha, v_p, v_q, shifts)
        if not np.all(np.isfinite(logs)):
            out.extend((math.inf, math.inf))
            continue
        f = logs / (alpha - 1)
        a = np.arange(1, shifts + 1, dtype=np.float64)
        ratio = float(np.max((f[1:] - f[0]) / (a * a))) if shifts else 0.0
        out.extend((max(0.0, float(f[0])), max(0.0, ratio)))
    return tuple(out)  # type: ignore[return-value]


def skellam_add_remove_rdp_at(alpha: float, mu_share: float, shares: int, l2_sensitivity: float,
                              dimension: int) -> float:
    """RDP at one order of a distributed-Skellam sum under add/remove of one client and its share."""
    if shares < 2:
        return math.inf
    if not alpha < shares - 1:
        return math.inf
    shifts = int(math.floor(l2_sensitivity))
    f0, ratio, r0, rratio = _per_coordinate(float(alpha), float(mu_share), int(shares), shifts)
    bound_1 = dimension * f0 + l2_sensitivity**2 * ratio
    bound_2 = dimension * r0 + l2_sensitivity**2 * rratio
    return max(bound_1, bound_2)


def skellam_add_remove_rdp(mu_share: float, shares: int, l2_sensitivity: float, dimension: int,
                           orders) -> np.ndarray:
    """RDP on ``orders`` of the distributed-Skellam release when one client and its noise share
    leave a sum of ``shares`` shares of variance ``mu_share`` each (module docstring)."""
    for name, value in (("mu_share", mu_share), ("l2_sensitivity", l2_sensitivity)):
        if not (math.isfinite(value) and value > 0):
            raise AccountingError(f"{name} must be finite and > 0, got {value}")
    if int(dimension) != dimension or dimension < 1 or int(shares) != shares or shares < 1:
        raise AccountingError("dimension and shares must be positive ints")
    values: dict[float, float] = {}
    for alpha in EXACT_ORDERS:
        value = skellam_add_remove_rdp_at(alpha, mu_share, int(shares), l2_sensitivity, int(dimension))
        values[alpha] = value
        if not math.isfinite(value):
            break  # larger orders are at least as large: +inf bounds them, computing them is wasted work
    computed = sorted(values)
    result = []
    for order in np.asarray(orders, dtype=np.float64):
        above = [alpha for alpha in computed if alpha >= order - 1e-12]
        result.append(values[above[0]] if above else math.inf)
    return np.asarray(result, dtype=np.float64)


def with_relation(event: Event, relation: str, dimension: int | None = None) -> Event:
    """``event`` with every distributed release in it accounted under ``relation`` (wrappers kept;
    local and DP-SGD events have no share to leave a sum and are returned unchanged).

    ``dimension`` fills a distributed-Skellam event stored without one (written before events
    recorded it), needed for add/remove."""
    check_relation(relation)
    if isinstance(event, DistributedSkellamEvent):
        fill = event.dimension if event.dimension is not None else dimension
        return replace(event, relation=relation, dimension=fill)
    if isinstance(event, DistributedDiscreteGaussianEvent):
        return replace(event, relation=relation)
    if isinstance(event, ComposedEvent):
        return ComposedEvent(tuple(with_relation(inner, relation, dimension) for inner in event.events))
    if isinstance(event, SelfComposedEvent):
        return SelfComposedEvent(with_relation(event.event, relation, dimension), event.count)
    if isinstance(event, PoissonSampledEvent):
        return PoissonSampledEvent(event.sampling_rate, with_relation(event.event, relation, dimension))
    return event


def relations_of(event: Event) -> set[str]:
    """The relations the distributed releases inside ``event`` are accounted under (empty when
    it holds none)."""
    if isinstance(event, (DistributedSkellamEvent, DistributedDiscreteGaussianEvent)):
        return {event.relation}
    if isinstance(event, ComposedEvent):
        return set().union(*(relations_of(inner) for inner in event.events))
    if isinstance(event, (SelfComposedEvent, PoissonSampledEvent)):
        return relations_of(event.event)
    return set()
