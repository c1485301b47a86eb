"""Local ε: what one client's own upload guarantees when nobody else's noise helps it.

Definition (the number a client's privacy policy enforces). The *local* view of a release is a
server that colludes with every other client: it subtracts their inputs and noise from the sum
and sees this client's rounded update plus this client's own noise share, nothing more. Two
uploads are neighbours when they come from ANY two updates of the client (clipped norm <= C):
the replace-one relation of local DP, sensitivity twice the rounded norm bound (2 Delta_2,
2 Delta_1 in integer units). The local ε of a round is the (ε, δ) of the client's own share on
that sensitivity, by the ledger's accountant; over rounds they compose like any release.

- distributed Skellam, share Sk(mu_share): Skellam(mu_share) on (2 Delta_2, 2 Delta_1);
- distributed discrete Gaussian, share N_Z(0, sigma_l^2): discrete Gaussian sigma_l on 2 Delta_2;
- local noise (``--noise local``): already calibrated on replace-one sensitivities: itself;
- DP-SGD inside a client: record-level, a different unit (``privacy.units``); not a local
  client-level guarantee: None.

A Poisson-sampled wrapper is dropped: a server that sees who took part gets no amplification
from the sampling. The central ε (the released sum, under the run's relation) is always at most
the local ε of the same round, since the sum holds at least the client's own share.

A per-round *local floor* E (``--local-epsilon``) means every upload's local ε for that round
is at most E at the run's δ: :func:`local_share_for` gives the smallest share that meets it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from privacy.calibration import calibrate_event, event_epsilon
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
)


def local_event(event: Event) -> Event | None:
    """The event of the client's own upload alone (module docstring), or None when ``event``
    holds no client-level noise (DP-SGD's record-level Gaussian)."""
    if isinstance(event, DistributedSkellamEvent):
        return SkellamEvent(event.mu_share, 2 * event.l2_sensitivity, 2 * event.l1_sensitivity)
    if isinstance(event, DistributedDiscreteGaussianEvent):
        return DiscreteGaussianEvent(event.local_sigma, 2 * event.l2_sensitivity)
    if isinstance(event, (SkellamEvent, DiscreteGaussianEvent)):
        return event
    if isinstance(event, GaussianEvent):
        return None
    if isinstance(event, PoissonSampledEvent):
        return local_event(event.event)
    if isinstance(event, SelfComposedEvent):
        inner = local_event(event.event)
        return None if inner is None else SelfComposedEvent(inner, event.count)
    if isinstance(event, ComposedEvent):
        inner = [local for local in (local_event(e) for e in event.events) if local is not None]
        return ComposedEvent(tuple(inner)) if inner else None
    return None


def local_epsilon(events: Iterable[Event], delta: float) -> float | None:
    """The client's local ε at ``delta`` over ``events`` composed (None when none of them carries
    client-level noise)."""
    local = [e for e in (local_event(event) for event in events) if e is not None]
    if not local:
        return None
    return event_epsilon(ComposedEvent(tuple(local)) if len(local) > 1 else local[0], delta)


def round_local_epsilon(event: Event, delta: float) -> float | None:
    """One round's local ε of ``event`` (what ``--local-epsilon`` bounds)."""
    return local_epsilon([event], delta)


def local_share_for(noise, local_epsilon_floor: float, delta: float) -> float:
    """The smallest share scale of ``noise`` (a ``privacy.mechanisms.DistributedNoise``) whose
    single upload has local ε <= ``local_epsilon_floor`` at ``delta``."""
    squared = noise.mechanism == "skellam"  # a Skellam share is a variance: search its square root

    def event_at(scale: float) -> Event:
        return local_event(replace(noise, share_scale=scale * scale if squared else scale).event())

    root = calibrate_event(event_at, local_epsilon_floor, delta, 1, name="local share")
    return root * root if squared else root
