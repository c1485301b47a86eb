"""Accountants over privacy events: a fast running RDP vector, and Opacus / dp-accounting for
reports and recomputation from stored events.

The running accountant keeps one RDP vector per client on :data:`RDP_ORDERS` (integer orders
2..256 plus Opacus' fractional orders); composing a release is one vector addition, so 10^4
clients x 10^2 rounds cost about a second (``bench/privacy_bench.py``). PRV/PLD are tighter but
slow on many distinct segments (docs/ALGORITHMS.md §3.4): they are for reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from privacy import rdp as curves
from privacy.errors import AccountingError, UnsupportedEventError
from privacy.relations import skellam_add_remove_rdp
from privacy.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    Event,
    GaussianEvent,
    PoissonSampledEvent,
    SelfComposedEvent,
    SkellamEvent,
    _check_event,
)

# Opacus RDPAccountant.DEFAULT_ALPHAS (1.1 .. 10.9 step 0.1, 12 .. 63) united with 2 .. 256.
_OPACUS_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
RDP_ORDERS: np.ndarray = np.unique(np.array(_OPACUS_ALPHAS + list(range(2, 257)), dtype=np.float64))
RDP_ORDERS.setflags(write=False)
_INTEGER_INDEX = {int(order): index for index, order in enumerate(RDP_ORDERS) if float(order).is_integer()}

ACCOUNTANTS = ("rdp", "opacus-rdp", "prv", "pld", "dp-accounting-rdp")


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)):
        raise AccountingError(f"delta must be a number, got {type(delta).__name__}")
    delta = float(delta)
    if not 0 < delta < 1:
        raise AccountingError(f"delta must be in (0, 1), got {delta}")
    return delta


@lru_cache(maxsize=4096)
def _rdp_cached(event: Event) -> np.ndarray:
    orders = RDP_ORDERS
    if isinstance(event, GaussianEvent):
        values = curves.gaussian_rdp(event.noise_multiplier, orders)
    elif isinstance(event, DiscreteGaussianEvent):
        values = curves.discrete_gaussian_rdp(event.sigma, event.l2_sensitivity, orders)
    elif isinstance(event, SkellamEvent):
        values = curves.skellam_rdp(event.mu, event.l2_sensitivity, event.l1_sensitivity, orders)
    elif isinstance(event, DistributedSkellamEvent) and event.relation == "add-remove":
        if event.dimension is None:
            raise UnsupportedEventError("add/remove accounting of a distributed-Skellam event needs its dimension "
                                        "(the number of coordinates each pays the variance change on)")
        values = skellam_add_remove_rdp(event.mu_share, event.noise_floor, event.l2_sensitivity, event.dimension,
                                        orders)
    elif isinstance(event, DistributedSkellamEvent):
        values = curves.skellam_rdp(event.central_mu, event.l2_sensitivity, event.l1_sensitivity, orders)
    elif isinstance(event, DistributedDiscreteGaussianEvent) and event.relation == "add-remove":
        raise UnsupportedEventError("add/remove accounting is implemented for distributed Skellam only; the "
                                    "distributed discrete Gaussian is accounted under zero-out")
    elif isinstance(event, DistributedDiscreteGaussianEvent):
        values = curves.ddgauss_rdp(
            event.local_sigma, event.noise_floor, event.l2_sensitivity, event.l1_sensitivity, event.dimension, orders
        )
    elif isinstance(event, SelfComposedEvent):
        values = event.count * _rdp_cached(event.event)
    elif isinstance(event, ComposedEvent):
        values = np.sum([_rdp_cached(inner) for inner in event.events], axis=0)
    elif isinstance(event, PoissonSampledEvent):
        if isinstance(event.event, GaussianEvent):
            values = curves.poisson_subsampled_gaussian_rdp(event.sampling_rate, event.event.noise_multiplier, orders)
        else:
            inner = _rdp_cached(event.event)
            values = curves.poisson_subsampled_rdp(
                event.sampling_rate, lambda j: inner[_INTEGER_INDEX[j]], orders
            )
    else:  # pragma: no cover - _check_event rejects everything else first
        raise UnsupportedEventError(f"no RDP curve for {type(event).__name__}")
    values = np.asarray(values, dtype=np.float64)
    values.setflags(write=False)
    return values


def rdp_of(event: Event) -> np.ndarray:
    """``(len(RDP_ORDERS),) float64`` RDP of one event on :data:`RDP_ORDERS` (read-only, cached)."""
    _check_event(event, "event")
    return _rdp_cached(event)


def epsilon_from_rdp(rdp: np.ndarray, delta: float, orders: np.ndarray = RDP_ORDERS) -> tuple[float, float]:
    """(epsilon, optimal order) for an RDP vector at ``delta``.

    Balle, Barthe, Gaboardi, Hsu, Sato 2020 (as Opacus' ``get_privacy_spent``):
    eps = min_alpha rdp(alpha) + log((alpha - 1)/alpha) - (log delta + log alpha)/(alpha - 1).
    """
    delta = _check_delta(delta)
    orders = np.asarray(orders, dtype=np.float64)
    values = np.asarray(rdp, dtype=np.float64)
    if values.shape != orders.shape:
        raise AccountingError(f"rdp has shape {values.shape}, orders {orders.shape}")
    if np.any(values < 0) or np.any(np.isnan(values)):
        raise AccountingError("rdp values must be non-negative numbers")
    eps = values - (math.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)
    index = int(np.argmin(eps))
    return max(0.0, float(eps[index])), float(orders[index])


@lru_cache(maxsize=64)
def _conversion_offsets(delta: float) -> np.ndarray:
    """The delta-dependent part of :func:`epsilon_from_rdp` on RDP_ORDERS, cached per delta."""
    orders = RDP_ORDERS
    offsets = -(math.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)
    offsets.setflags(write=False)
    return offsets


def _epsilon_on_orders(rdp: np.ndarray, delta: float) -> float:
    """epsilon_from_rdp for a trusted vector on RDP_ORDERS (the running accountant's hot path)."""
    eps = rdp + _conversion_offsets(_check_delta(delta))
    return max(0.0, float(eps.min()))


class RunningRdp:
    """A running RDP total (one client, or one of its streams): ``add`` events, read ``epsilon``."""

    __slots__ = ("_rdp", "_count")

    def __init__(self) -> None:
        self._rdp = np.zeros(RDP_ORDERS.size, dtype=np.float64)
        self._count = 0

    def add(self, event: Event) -> None:
        """Compose one more release."""
        self._rdp += rdp_of(event)
        self._count += 1

    def add_rdp(self, rdp: np.ndarray) -> None:
        """Compose a release given by its RDP vector on :data:`RDP_ORDERS`."""
        values = np.asarray(rdp, dtype=np.float64)
        if values.shape != RDP_ORDERS.shape or np.any(values < 0) or np.any(np.isnan(values)):
            raise AccountingError("rdp must be a non-negative vector on RDP_ORDERS")
        self._rdp += values
        self._count += 1

    @property
    def rdp(self) -> np.ndarray:
        """A copy of the current RDP vector."""
        return self._rdp.copy()

    @property
    def releases(self) -> int:
        """Number of events composed so far."""
        return self._count

    def epsilon(self, delta: float) -> float:
        """epsilon at ``delta`` of everything composed so far (0 before any release)."""
        if self._count == 0:
            _check_delta(delta)
            return 0.0
        return _epsilon_on_orders(self._rdp, delta)

    def projected_epsilon(self, event: Event, delta: float) -> float:
        """epsilon at ``delta`` if ``event`` were composed next (nothing is changed)."""
        return _epsilon_on_orders(self._rdp + rdp_of(event), delta)

    def copy(self) -> "RunningRdp":
        twin = RunningRdp()
        twin._rdp = self._rdp.copy()
        twin._count = self._count
        return twin


# --- recomputation by a named accountant ------------------------------------------------------


def _gaussian_segments(event: Event, repeat: int = 1) -> list[tuple[float, float, int]]:
    """Opacus history segments (noise multiplier, sample rate, steps) for Gaussian-only events."""
    if isinstance(event, GaussianEvent):
        return [(event.noise_multiplier, 1.0, repeat)]
    if isinstance(event, PoissonSampledEvent) and isinstance(event.event, GaussianEvent):
        return [(event.event.noise_multiplier, event.sampling_rate, repeat)]
    if isinstance(event, SelfComposedEvent):
        return _gaussian_segments(event.event, repeat * event.count)
    if isinstance(event, ComposedEvent):
        return [segment for inner in event.events for segment in _gaussian_segments(inner, repeat)]
    raise UnsupportedEventError(
        f"Opacus accountants take Gaussian / Poisson-sampled Gaussian events only, not {type(event).__name__}; "
        "use accountant='rdp'"
    )


def _merge(segments: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    merged: list[tuple[float, float, int]] = []
    for sigma, rate, steps in segments:
        if merged and merged[-1][0] == sigma and merged[-1][1] == rate:
            merged[-1] = (sigma, rate, merged[-1][2] + steps)
        else:
            merged.append((sigma, rate, steps))
    return merged


def _to_dp_accounting(event: Event, *, for_pld: bool):
    import dp_accounting

    if isinstance(event, GaussianEvent):
        return dp_accounting.GaussianDpEvent(event.noise_multiplier)
    if isinstance(event, DiscreteGaussianEvent) and not for_pld:
        return dp_accounting.ZCDpEvent(event.l2_sensitivity**2 / (2 * event.sigma**2))
    if isinstance(event, PoissonSampledEvent):
        return dp_accounting.PoissonSampledDpEvent(event.sampling_rate, _to_dp_accounting(event.event, for_pld=for_pld))
    if isinstance(event, SelfComposedEvent):
        return dp_accounting.SelfComposedDpEvent(_to_dp_accounting(event.event, for_pld=for_pld), event.count)
    if isinstance(event, ComposedEvent):
        return dp_accounting.ComposedDpEvent([_to_dp_accounting(e, for_pld=for_pld) for e in event.events])
    raise UnsupportedEventError(
        f"dp-accounting {'PLD' if for_pld else 'RDP'} has no equivalent of {type(event).__name__}"
    )


def to_dp_accounting_event(event: Event, *, for_pld: bool = False):
    """The dp-accounting event for ``event`` (Gaussian family; discrete Gaussian as zCDP for RDP).

    Needs the test extra ``dp-accounting``; UnsupportedEventError for Skellam and DDGauss.
    """
    _check_event(event, "event")
    return _to_dp_accounting(event, for_pld=for_pld)


def recompute_epsilon(events: Iterable[Event], delta: float, accountant: str = "rdp") -> float:
    """epsilon at ``delta`` of the composition of ``events``, from scratch, by a named accountant.

    - ``"rdp"``: fedvault's RDP curves on :data:`RDP_ORDERS` (every event type; equals Opacus RDP
      on Gaussian streams, over a superset of its orders).
    - ``"opacus-rdp"`` / ``"prv"``: Opacus ``RDPAccountant`` / ``PRVAccountant`` replaying the
      (sigma, q, steps) history; Gaussian and Poisson-sampled Gaussian events only.
    - ``"pld"`` / ``"dp-accounting-rdp"``: Google dp-accounting (test extra) PLD / RDP accountants.
    """
    delta = _check_delta(delta)
    events = list(events)
    for index, event in enumerate(events):
        _check_event(event, f"events[{index}]")
    if accountant not in ACCOUNTANTS:
        raise AccountingError(f"unknown accountant {accountant!r}; choose one of {ACCOUNTANTS}")
    if not events:
        return 0.0
    if accountant == "rdp":
        total = RunningRdp()
        for event in events:
            total.add(event)
        return total.epsilon(delta)
    if accountant in ("opacus-rdp", "prv"):
        from opacus.accountants import PRVAccountant, RDPAccountant

        history = _merge([segment for event in events for segment in _gaussian_segments(event)])
        opacus = RDPAccountant() if accountant == "opacus-rdp" else PRVAccountant()
        opacus.history = [(sigma, rate, steps) for sigma, rate, steps in history]
        return float(opacus.get_epsilon(delta=delta))
    try:
        import dp_accounting
        from dp_accounting import pld as dpa_pld
        from dp_accounting import rdp as dpa_rdp
    except ImportError as error:  # pragma: no cover - the test extra is installed in CI
        raise UnsupportedEventError(f"accountant {accountant!r} needs the 'dp-accounting' package") from error
    composed = dp_accounting.ComposedDpEvent(
        [_to_dp_accounting(event, for_pld=accountant == "pld") for event in events]
    )
    if accountant == "pld":
        engine = dpa_pld.PLDAccountant()
    else:
        engine = dpa_rdp.RdpAccountant(orders=[float(order) for order in RDP_ORDERS])
    engine.compose(composed)
    return float(engine.get_epsilon(delta))


def epsilon_of_events(events: Sequence[Event], delta: float) -> float:
    """Shorthand for ``recompute_epsilon(events, delta, "rdp")``."""
    return recompute_epsilon(events, delta, "rdp")
