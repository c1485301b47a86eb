"""Noise releases on integer lattice coordinates, before masking: ``local`` and ``distributed``.

- ``local``: each client's release is (epsilon, delta)-DP on its own, against everyone; the
  sensitivity is that of *replacing* the client's input (2C for an update clipped to C, inflated
  for rounding, ``privacy.calibration.local_l2_sensitivity``).
- ``distributed``: each client adds a share so that the secure sum of at least ``noise_floor``
  shares carries the central guarantee under the run's neighbouring relation (zero-out by
  default: one client's data replaced by nothing, its share still in the sum; add/remove on
  request, ``privacy.relations``): Skellam mu/n_floor each, or
  discrete Gaussian sigma_l = sigma/sqrt(n_floor) with the DDGauss analysis. n_floor = the fewest
  accepted survivors minus the colluders tolerated (their shares are known to the server); a round
  with fewer survivors must abort (:meth:`DistributedNoise.settle`), docs/ALGORITHMS.md §3.5.

Each release returns the noised coordinates and the event to charge to the ledger *before*
upload. Noise comes from the OS CSPRNG; a seeded source is refused unless the caller says the
release is a test or a simulation (``allow_insecure_source=True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from privacy.calibration import (
    calibrate_ddgauss_local_sigma,
    calibrate_discrete_gaussian_sigma,
    calibrate_distributed_skellam_share,
    calibrate_skellam_mu,
)
from privacy.discrete_gaussian import sample_discrete_gaussian
from privacy.errors import InsufficientSurvivorsError, MechanismError
from privacy.local_privacy import local_share_for
from privacy.events import (
    RELATIONS,
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    Event,
    SkellamEvent,
)
from privacy.randomness import RandomWordSource, is_cryptographic, resolve_source
from privacy.skellam import sample_skellam

MECHANISMS = ("discrete_gaussian", "skellam")
# Coordinates and noise stay far from int64 overflow (noise is at most ~2**40 in magnitude).
_MAX_ABS_COORDINATE = 1 << 52


@dataclass(frozen=True)
class Release:
    """What a client uploads (``noised``, ``(m,) int64``) and what it is charged (``event``)."""

    noised: np.ndarray
    event: Event


@dataclass(frozen=True)
class LocalNoise:
    """Per-client noise for local DP: ``scale`` is sigma (discrete Gaussian) or mu (Skellam),
    integer units; sensitivities are replace-one sensitivities of the integer coordinates."""

    mechanism: str
    scale: float
    l2_sensitivity: float
    l1_sensitivity: float

    def __post_init__(self) -> None:
        _check_mechanism(self.mechanism)
        for name in ("scale", "l2_sensitivity", "l1_sensitivity"):
            _check_positive(getattr(self, name), name)

    def event(self) -> Event:
        """The event one release with this noise is charged."""
        if self.mechanism == "skellam":
            return SkellamEvent(self.scale, self.l2_sensitivity, self.l1_sensitivity)
        return DiscreteGaussianEvent(self.scale, self.l2_sensitivity)


@dataclass(frozen=True)
class DistributedNoise:
    """Per-client share of distributed noise: ``share_scale`` is mu/n_floor (Skellam) or
    sigma_l (discrete Gaussian), integer units; ``noise_floor`` = ``min_survivors`` -
    ``tolerated_colluders``; sensitivities are those of the sum to one client's data (its rounded
    update: the zero-out relation); ``relation`` is the relation the central guarantee is
    calibrated and charged under (``privacy.relations``)."""

    mechanism: str
    share_scale: float
    min_survivors: int
    tolerated_colluders: int
    l2_sensitivity: float
    l1_sensitivity: float
    dimension: int
    relation: str = "zero-out"

    def __post_init__(self) -> None:
        _check_mechanism(self.mechanism)
        for name in ("share_scale", "l2_sensitivity", "l1_sensitivity"):
            _check_positive(getattr(self, name), name)
        if self.relation not in RELATIONS:
            raise MechanismError(f"relation must be one of {RELATIONS}, got {self.relation!r}")
        _check_count(self.min_survivors, "min_survivors", 1)
        _check_count(self.tolerated_colluders, "tolerated_colluders", 0)
        _check_count(self.dimension, "dimension", 1)
        if self.tolerated_colluders >= self.min_survivors:
            raise MechanismError(
                f"tolerated_colluders ({self.tolerated_colluders}) must be below min_survivors ({self.min_survivors})"
            )

    @property
    def noise_floor(self) -> int:
        """Honest noise shares guaranteed in an accepted sum."""
        return self.min_survivors - self.tolerated_colluders

    def event(self, survivors: int | None = None) -> Event:
        """The event charged per round (``survivors`` recorded once known)."""
        if self.mechanism == "skellam":
            return DistributedSkellamEvent(
                self.share_scale, self.noise_floor, self.l2_sensitivity, self.l1_sensitivity, survivors,
                relation=self.relation, dimension=self.dimension,
            )
        return DistributedDiscreteGaussianEvent(
            self.share_scale, self.noise_floor, self.l2_sensitivity, self.l1_sensitivity, self.dimension, survivors,
            relation=self.relation,
        )

    def settle(self, event: Event, survivors: int) -> Event:
        """After the secure sum: record ``survivors`` in the round's event, or fail closed.

        Raises InsufficientSurvivorsError when fewer than ``min_survivors`` inputs are in the sum:
        the noise in it would be below the calibrated level, so the round must abort and nothing
        may be released.
        """
        _check_count(survivors, "survivors", 0)
        if not isinstance(event, (DistributedSkellamEvent, DistributedDiscreteGaussianEvent)) or replace(
            event, survivors=None
        ) != self.event():
            raise MechanismError("event was not produced by this distributed noise configuration")
        if survivors < self.min_survivors:
            raise InsufficientSurvivorsError(
                f"{survivors} survivors < {self.min_survivors} required for the calibrated noise "
                f"(floor {self.noise_floor} honest shares); abort the round and release nothing"
            )
        return replace(event, survivors=survivors)


def _check_mechanism(mechanism: str) -> None:
    if mechanism not in MECHANISMS:
        raise MechanismError(f"unknown mechanism {mechanism!r}; choose one of {MECHANISMS}")


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise MechanismError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise MechanismError(f"{name} must be finite and > 0, got {value}")
    return float(value)


def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise MechanismError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _l1_default(l2: float, dimension: int) -> float:
    # Integer vectors: ||v||_1 <= min(sqrt(d) ||v||_2, ||v||_2^2) (Agarwal et al. 2021).
    return min(math.sqrt(dimension) * l2, l2 * l2)


def local_noise_for(
    mechanism: str,
    epsilon: float,
    delta: float,
    l2_sensitivity: float,
    dimension: int,
    *,
    l1_sensitivity: float | None = None,
    compositions: int = 1,
) -> LocalNoise:
    """Calibrate local noise so that ``compositions`` releases are (epsilon, delta)-LDP in total.

    ``l2_sensitivity``: replace-one L2 sensitivity of the integer coordinates (e.g.
    ``local_l2_sensitivity(C / step, d)``); ``l1_sensitivity`` defaults to min(sqrt(d) l2, l2^2).
    """
    _check_mechanism(mechanism)
    l2 = _check_positive(l2_sensitivity, "l2_sensitivity")
    dimension = _check_count(dimension, "dimension", 1)
    l1 = _l1_default(l2, dimension) if l1_sensitivity is None else _check_positive(l1_sensitivity, "l1_sensitivity")
    if mechanism == "skellam":
        scale = calibrate_skellam_mu(epsilon, delta, l2, l1, compositions)
    else:
        scale = calibrate_discrete_gaussian_sigma(epsilon, delta, l2, compositions)
    return LocalNoise(mechanism, scale, l2, l1)


def distributed_noise_for(
    mechanism: str,
    epsilon: float,
    delta: float,
    l2_sensitivity: float,
    dimension: int,
    min_survivors: int,
    *,
    tolerated_colluders: int = 0,
    l1_sensitivity: float | None = None,
    compositions: int = 1,
    relation: str = "zero-out",
    local_epsilon: float | None = None,
) -> DistributedNoise:
    """Calibrate per-client shares so that a sum of at least ``min_survivors`` inputs (at most
    ``tolerated_colluders`` of them colluding with the server) is (epsilon, delta)-DP over
    ``compositions`` rounds under ``relation`` (``privacy.relations``; zero-out by default).
    ``l2_sensitivity`` is the sensitivity of the sum to one client's data (its rounded update).

    ``local_epsilon``: a per-round local floor. The share is then at least the noise that makes
    one client's upload alone (epsilon=local_epsilon, delta)-DP against a server colluding with
    every other client (``privacy.local_privacy``), whatever the central target needs."""
    _check_mechanism(mechanism)
    l2 = _check_positive(l2_sensitivity, "l2_sensitivity")
    dimension = _check_count(dimension, "dimension", 1)
    min_survivors = _check_count(min_survivors, "min_survivors", 1)
    colluders = _check_count(tolerated_colluders, "tolerated_colluders", 0)
    if colluders >= min_survivors:
        raise MechanismError(f"tolerated_colluders ({colluders}) must be below min_survivors ({min_survivors})")
    floor = min_survivors - colluders
    l1 = _l1_default(l2, dimension) if l1_sensitivity is None else _check_positive(l1_sensitivity, "l1_sensitivity")
    if relation not in RELATIONS:
        raise MechanismError(f"relation must be one of {RELATIONS}, got {relation!r}")
    if mechanism == "skellam":
        share = calibrate_distributed_skellam_share(epsilon, delta, l2, l1, floor, dimension, compositions, relation)
    elif relation != "zero-out":
        raise MechanismError("add/remove is accounted for the skellam mechanism only; use --relation zero-out with "
                             "discrete_gaussian")
    else:
        share = calibrate_ddgauss_local_sigma(epsilon, delta, l2, l1, dimension, floor, compositions)
    noise = DistributedNoise(mechanism, share, min_survivors, colluders, l2, l1, dimension, relation)
    if local_epsilon is not None:
        floor_share = local_share_for(noise, local_epsilon, delta)
        if floor_share > share:
            noise = replace(noise, share_scale=floor_share)
    return noise


def _check_coordinates(coordinates: np.ndarray) -> np.ndarray:
    if not isinstance(coordinates, np.ndarray) or coordinates.dtype != np.int64 or coordinates.ndim != 1:
        raise MechanismError("coordinates must be a 1-D np.int64 array of lattice coordinates")
    if coordinates.size and int(np.abs(coordinates).max()) > _MAX_ABS_COORDINATE:
        raise MechanismError(f"coordinates must stay within +-2**52, got max |z| = {int(np.abs(coordinates).max())}")
    return coordinates


def _noise(mechanism: str, scale: float, size: int, source: RandomWordSource) -> np.ndarray:
    if mechanism == "skellam":
        return sample_skellam(scale, size, source)
    return sample_discrete_gaussian(scale, size, source)


def _source(source: RandomWordSource | None, allow_insecure_source: bool) -> RandomWordSource:
    resolved = resolve_source(source)
    if not is_cryptographic(resolved) and not allow_insecure_source:
        raise MechanismError(
            f"{resolved!r} is not the OS CSPRNG; a release with known noise is not private "
            "(pass allow_insecure_source=True only in tests and simulations)"
        )
    return resolved


def release_local(
    coordinates: np.ndarray,
    noise: LocalNoise,
    source: RandomWordSource | None = None,
    *,
    allow_insecure_source: bool = False,
) -> Release:
    """Add local-DP noise to ``(m,) int64`` coordinates; returns the noised coordinates and the
    event to charge (stream ``"update-ldp"``) before upload."""
    coordinates = _check_coordinates(coordinates)
    if not isinstance(noise, LocalNoise):
        raise MechanismError(f"noise must be LocalNoise, got {type(noise).__name__}")
    draws = _noise(noise.mechanism, noise.scale, coordinates.size, _source(source, allow_insecure_source))
    return Release(coordinates + draws, noise.event())


def release_distributed_share(
    coordinates: np.ndarray,
    noise: DistributedNoise,
    source: RandomWordSource | None = None,
    *,
    allow_insecure_source: bool = False,
) -> Release:
    """Add this client's share of distributed noise; the event (stream ``"distributed"``) is
    charged before upload and settled with the survivor count after the sum."""
    coordinates = _check_coordinates(coordinates)
    if not isinstance(noise, DistributedNoise):
        raise MechanismError(f"noise must be DistributedNoise, got {type(noise).__name__}")
    if coordinates.size != noise.dimension:
        raise MechanismError(f"expected {noise.dimension} coordinates (the calibrated dimension), got {coordinates.size}")
    draws = _noise(noise.mechanism, noise.share_scale, coordinates.size, _source(source, allow_insecure_source))
    return Release(coordinates + draws, noise.event())
