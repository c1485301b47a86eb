"""Units of privacy: whom a guarantee protects, and the conversions between them.

- *client-level* (unit ``"client"``): neighbouring datasets differ in one client's whole data
  (the update noise: streams ``distributed`` and ``update-ldp``). Under zero-out the client's
  data is replaced by nothing; under add/remove the client leaves (``privacy.relations``).
- *record-level* (unit ``"record"``): neighbouring datasets differ in one training record of one
  client (DP-SGD inside a client: stream ``dp-sgd``; the sampling rate is over records).

Conversions (each computed here, assumptions stated):

- client-level => record-level. Changing one record changes one client's data, so its clipped
  update moves by at most 2C (two updates of norm <= C), wherever that record is; the same
  update noise then protects the record with the sensitivity doubled and the client's share in
  the sum in both worlds (zero-out pair on 2 Delta). :func:`record_level_event` maps a
  client-level event to that record-level event; a local (replace-one) event already has the
  2C sensitivity and maps to itself. A client's record-level ε is the composition of its DP-SGD
  events and the record-level images of its client-level events: both mechanisms see its records.
- record-level => client-level needs group privacy over the n records a client holds:
  (ε, δ) for one record gives (n ε, n e^((n-1) ε) δ) for n records (:func:`group_privacy`),
  useless beyond a handful of records; DP-SGD alone is not a client-level guarantee.
"""

from __future__ import annotations

import math
from dataclasses import replace

from privacy.errors import LedgerError
from privacy.events import (
    ComposedEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    Event,
    PoissonSampledEvent,
    SelfComposedEvent,
)

CLIENT = "client"
RECORD = "record"
UNITS = (CLIENT, RECORD)
STREAM_UNITS = {"distributed": CLIENT, "update-ldp": CLIENT, "dp-sgd": RECORD}


def unit_of_stream(stream: str) -> str:
    """The unit a ledger stream's guarantees are in."""
    try:
        return STREAM_UNITS[stream]
    except KeyError:
        raise LedgerError(f"unknown stream {stream!r}; streams are {tuple(STREAM_UNITS)}") from None


def record_level_event(event: Event) -> Event:
    """The record-level guarantee a client-level event gives (module docstring): distributed
    events with doubled sensitivities under zero-out; anything else unchanged."""
    if isinstance(event, DistributedSkellamEvent):
        return replace(event, l2_sensitivity=2 * event.l2_sensitivity, l1_sensitivity=2 * event.l1_sensitivity,
                       relation="zero-out")
    if isinstance(event, DistributedDiscreteGaussianEvent):
        return replace(event, l2_sensitivity=2 * event.l2_sensitivity, l1_sensitivity=2 * event.l1_sensitivity,
                       relation="zero-out")
    if isinstance(event, ComposedEvent):
        return ComposedEvent(tuple(record_level_event(inner) for inner in event.events))
    if isinstance(event, SelfComposedEvent):
        return SelfComposedEvent(record_level_event(event.event), event.count)
    if isinstance(event, PoissonSampledEvent):
        return PoissonSampledEvent(event.sampling_rate, record_level_event(event.event))
    return event


def group_privacy(epsilon: float, delta: float, records: int) -> tuple[float, float]:
    """(ε, δ) for a group of ``records`` records from (ε, δ) for one: (k ε, k e^((k-1) ε) δ)
    (Dwork & Roth 2014, Lemma 2.2 generalised to approximate DP)."""
    if isinstance(records, bool) or not isinstance(records, int) or records < 1:
        raise LedgerError(f"records must be a positive int, got {records!r}")
    if not (math.isfinite(epsilon) and epsilon >= 0 and 0 <= delta < 1):
        raise LedgerError(f"need a finite epsilon >= 0 and delta in [0, 1), got ({epsilon}, {delta})")
    return records * epsilon, min(1.0, records * math.exp((records - 1) * epsilon) * delta)
