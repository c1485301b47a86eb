"""Privacy events: immutable, JSON-round-trippable descriptions of what a release did.

In the style of Google's dp-accounting (``GaussianDpEvent``, ``PoissonSampledDpEvent``,
``SelfComposedDpEvent``, ...): an event says which mechanism ran with which parameters, nothing
about how to account it. The ledger stores events, so any accountant (the running RDP vector,
Opacus RDP/PRV, dp-accounting) can recompute epsilon from storage later.

Units: sensitivities and noise scales are in the units the noise was added in (integer lattice
coordinates for the discrete mechanisms); ``GaussianEvent`` is the sensitivity-1 normalisation
(``noise_multiplier`` = sigma / sensitivity), as in Opacus and dp-accounting.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, Union

from privacy.errors import EventFormatError


def _positive_finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventFormatError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise EventFormatError(f"{name} must be finite and > 0, got {value}")
    return value


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventFormatError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise EventFormatError(f"{name} must be >= 1, got {value}")
    return value


def _set(instance: Any, name: str, value: Any) -> None:
    object.__setattr__(instance, name, value)


@dataclass(frozen=True)
class GaussianEvent:
    """Gaussian mechanism with L2 sensitivity 1 and noise standard deviation ``noise_multiplier``."""

    noise_multiplier: float

    def __post_init__(self) -> None:
        _set(self, "noise_multiplier", _positive_finite(self.noise_multiplier, "noise_multiplier"))


@dataclass(frozen=True)
class DiscreteGaussianEvent:
    """N_Z(0, sigma^2) per integer coordinate on a query of L2 sensitivity ``l2_sensitivity``."""

    sigma: float
    l2_sensitivity: float

    def __post_init__(self) -> None:
        _set(self, "sigma", _positive_finite(self.sigma, "sigma"))
        _set(self, "l2_sensitivity", _positive_finite(self.l2_sensitivity, "l2_sensitivity"))


@dataclass(frozen=True)
class SkellamEvent:
    """Sk(mu) per integer coordinate (variance ``mu``) on a query of the given L2/L1 sensitivity."""

    mu: float
    l2_sensitivity: float
    l1_sensitivity: float

    def __post_init__(self) -> None:
        _set(self, "mu", _positive_finite(self.mu, "mu"))
        _set(self, "l2_sensitivity", _positive_finite(self.l2_sensitivity, "l2_sensitivity"))
        _set(self, "l1_sensitivity", _positive_finite(self.l1_sensitivity, "l1_sensitivity"))


@dataclass(frozen=True)
class DistributedSkellamEvent:
    """Distributed Skellam: each of the clients adds Sk(``mu_share``); the secure sum of at least
    ``noise_floor`` honest shares carries Sk(noise_floor * mu_share) (Agarwal et al. 2021).

    ``survivors`` is the number of inputs actually in the sum, recorded once the round completes
    (``None`` when charged before upload). Accounting uses the floor, the worst accepted case.

    ``relation`` is the neighbouring relation the charge is accounted under
    (``privacy.relations``): ``"zero-out"`` (the client's data replaced by nothing, its share
    still in the sum; the default, and what events stored without the field mean) or
    ``"add-remove"`` (the client and its share leave the sum; needs ``dimension``, the number of
    integer coordinates, since the variance change is paid on each).
    """

    mu_share: float
    noise_floor: int
    l2_sensitivity: float
    l1_sensitivity: float
    survivors: int | None = None
    relation: str = "zero-out"
    dimension: int | None = None

    def __post_init__(self) -> None:
        _set(self, "mu_share", _positive_finite(self.mu_share, "mu_share"))
        _set(self, "noise_floor", _positive_int(self.noise_floor, "noise_floor"))
        _set(self, "l2_sensitivity", _positive_finite(self.l2_sensitivity, "l2_sensitivity"))
        _set(self, "l1_sensitivity", _positive_finite(self.l1_sensitivity, "l1_sensitivity"))
        if self.survivors is not None:
            _set(self, "survivors", _positive_int(self.survivors, "survivors"))
        _check_relation(self.relation)
        if self.dimension is not None:
            _set(self, "dimension", _positive_int(self.dimension, "dimension"))

    @property
    def central_mu(self) -> float:
        """Skellam variance the sum carries at the floor."""
        return self.mu_share * self.noise_floor


@dataclass(frozen=True)
class DistributedDiscreteGaussianEvent:
    """Distributed discrete Gaussian (Kairouz, Liu, Steinke 2021): each client adds
    N_Z(0, local_sigma^2) to ``dimension`` integer coordinates; at least ``noise_floor`` shares are
    in the sum. The sum of discrete Gaussians is not discrete Gaussian: the DDGauss RDP bound pays
    a small tau term for it (``privacy.rdp.ddgauss_rdp``). ``survivors`` and ``relation`` as in
    :class:`DistributedSkellamEvent` (add/remove is not accounted for this mechanism: the
    accountant refuses it rather than under-count).
    """

    local_sigma: float
    noise_floor: int
    l2_sensitivity: float
    l1_sensitivity: float
    dimension: int
    survivors: int | None = None
    relation: str = "zero-out"

    def __post_init__(self) -> None:
        _set(self, "local_sigma", _positive_finite(self.local_sigma, "local_sigma"))
        _set(self, "noise_floor", _positive_int(self.noise_floor, "noise_floor"))
        _set(self, "l2_sensitivity", _positive_finite(self.l2_sensitivity, "l2_sensitivity"))
        _set(self, "l1_sensitivity", _positive_finite(self.l1_sensitivity, "l1_sensitivity"))
        _set(self, "dimension", _positive_int(self.dimension, "dimension"))
        if self.survivors is not None:
            _set(self, "survivors", _positive_int(self.survivors, "survivors"))
        _check_relation(self.relation)


#: The neighbouring relations a distributed event can be accounted under (privacy.relations).
RELATIONS = ("zero-out", "add-remove")


def _check_relation(value: Any) -> None:
    if value not in RELATIONS:
        raise EventFormatError(f"relation must be one of {RELATIONS}, got {value!r}")


@dataclass(frozen=True)
class PoissonSampledEvent:
    """``event`` applied to a Poisson subsample: each record (or client) in with ``sampling_rate``."""

    sampling_rate: float
    event: "Event"

    def __post_init__(self) -> None:
        rate = _positive_finite(self.sampling_rate, "sampling_rate")
        if rate > 1:
            raise EventFormatError(f"sampling_rate must be in (0, 1], got {rate}")
        _set(self, "sampling_rate", rate)
        _check_event(self.event, "event")


@dataclass(frozen=True)
class SelfComposedEvent:
    """``event`` repeated ``count`` times (adaptively)."""

    event: "Event"
    count: int

    def __post_init__(self) -> None:
        _check_event(self.event, "event")
        _set(self, "count", _positive_int(self.count, "count"))


@dataclass(frozen=True)
class ComposedEvent:
    """The adaptive composition of ``events`` (a non-empty tuple)."""

    events: tuple["Event", ...]

    def __post_init__(self) -> None:
        if not isinstance(self.events, (tuple, list)) or len(self.events) == 0:
            raise EventFormatError("ComposedEvent needs a non-empty tuple of events")
        events = tuple(self.events)
        for index, event in enumerate(events):
            _check_event(event, f"events[{index}]")
        _set(self, "events", events)


Event = Union[
    GaussianEvent,
    DiscreteGaussianEvent,
    SkellamEvent,
    DistributedSkellamEvent,
    DistributedDiscreteGaussianEvent,
    PoissonSampledEvent,
    SelfComposedEvent,
    ComposedEvent,
]

# JSON type tag <-> class; the tag is the stored name, never rename one.
_TAGS: dict[str, type] = {
    "gaussian": GaussianEvent,
    "discrete_gaussian": DiscreteGaussianEvent,
    "skellam": SkellamEvent,
    "distributed_skellam": DistributedSkellamEvent,
    "distributed_discrete_gaussian": DistributedDiscreteGaussianEvent,
    "poisson_sampled": PoissonSampledEvent,
    "self_composed": SelfComposedEvent,
    "composed": ComposedEvent,
}
_TAG_OF = {cls: tag for tag, cls in _TAGS.items()}
EVENT_TYPES: tuple[type, ...] = tuple(_TAGS.values())
_MAX_DEPTH = 32


def _check_event(event: Any, name: str) -> None:
    if type(event) not in _TAG_OF:
        raise EventFormatError(f"{name} must be a privacy event, got {type(event).__name__}")


def event_to_json(event: Event) -> dict[str, Any]:
    """Plain JSON data for ``event``: ``{"type": tag, <fields>...}``, nested events as objects."""
    _check_event(event, "event")
    data: dict[str, Any] = {"type": _TAG_OF[type(event)]}
    for field in fields(event):
        value = getattr(event, field.name)
        if type(value) in _TAG_OF:
            data[field.name] = event_to_json(value)
        elif isinstance(value, tuple):
            data[field.name] = [event_to_json(item) for item in value]
        else:
            data[field.name] = value
    return data


def event_from_json(data: Any, _depth: int = 0) -> Event:
    """Rebuild an event from :func:`event_to_json` output; EventFormatError on anything else
    (unknown type, missing or extra field, value out of range, nesting deeper than 32)."""
    if _depth > _MAX_DEPTH:
        raise EventFormatError(f"event nesting deeper than {_MAX_DEPTH}")
    if not isinstance(data, dict):
        raise EventFormatError(f"event JSON must be an object, got {type(data).__name__}")
    tag = data.get("type")
    cls = _TAGS.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise EventFormatError(f"unknown event type {tag!r}; known: {sorted(_TAGS)}")
    names = {field.name for field in fields(cls)}
    required = {field.name for field in fields(cls) if field.default is MISSING}
    given = set(data) - {"type"}
    if given - names:
        raise EventFormatError(f"{tag} event has unknown fields {sorted(given - names)}")
    if required - given:
        raise EventFormatError(f"{tag} event is missing fields {sorted(required - given)}")
    kwargs: dict[str, Any] = {}
    for name in given:
        value = data[name]
        if name == "event":
            value = event_from_json(value, _depth + 1)
        elif name == "events":
            if not isinstance(value, list):
                raise EventFormatError("composed event 'events' must be a list")
            value = tuple(event_from_json(item, _depth + 1) for item in value)
        kwargs[name] = value
    return cls(**kwargs)


def leaf_events(event: Event) -> list[Event]:
    """The mechanism events inside ``event`` (composition and sampling wrappers removed)."""
    if isinstance(event, ComposedEvent):
        return [leaf for inner in event.events for leaf in leaf_events(inner)]
    if isinstance(event, (SelfComposedEvent, PoissonSampledEvent)):
        return leaf_events(event.event)
    return [event]
