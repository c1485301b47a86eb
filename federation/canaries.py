"""Canary clients for an empirical privacy audit of a real run (``fedvault audit-run``).

The one-run audit (Steinke, Nasr, Jagielski 2023; statistics in :mod:`privacy.audit`) needs m
canaries, each included independently with probability 1/2, and an auditor who guesses from
the released aggregates which ones were included. Here a canary is a whole client of the run:
canary i owns one model coordinate ``coordinates[i]`` and a sign ``signs[i]``; when its coin
``included[i]`` is heads it uploads the crafted update ``signs[i] * magnitude * e_j`` every
round it takes part, when tails it uploads zeros. Either way it runs the real client pipeline
(clip to C, rotation, lattice coding, its exact integer noise share, SecAgg+ masking, its own
ledger) inside the real coordinator, and is charged like any client: tails is exactly the
*zero-out* neighbour of heads (the client takes part, its data contributes nothing), the
relation the run's noise is calibrated for.

The coins, coordinates and signs come from the OS CSPRNG (``secrets``), independent of the
run's seed, its noise and the server; the auditor keeps the plan (it is never stored with the
run) and scores each canary by ``signs[i]`` times the sum, over the rounds it survived, of the
released decoded sum's coordinate ``coordinates[i]`` (:meth:`CanaryPlan.scores`).

Assumptions the audit's guarantee rests on: each canary's inclusion changes only that client's
uploads (true: the other clients never see it), and the claimed ε covers each client's whole
participation (the ledger's per-client ε). Non-canary clients train normally; their updates
reach the canaries' coordinates too and only weaken the auditor (random signs make that drift
uncorrelated with the coins).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from federation.errors import ConfigError
from federation.trainers import TrainResult


@dataclass(frozen=True)
class CanaryLearner:
    """Stands in for a canary client's learner: returns the crafted update instead of training.

    ``update`` is ``(dimension,) float32``; it goes through the client runtime's clip, encode,
    noise and SecAgg+ like any trained update. ``inner`` is the learner it replaces (its
    trainer still describes the model, e.g. for the history record's dimension)."""

    inner: object
    update: np.ndarray

    keeps_state = False

    @property
    def client_id(self) -> int:
        return self.inner.client_id

    @property
    def trainer(self):
        return self.inner.trainer

    @property
    def num_samples(self) -> int:
        return self.inner.num_samples

    def privacy_events(self) -> tuple:
        return ()  # a canary does no sample-level training

    def train(self, global_parameters: np.ndarray, round_seed: bytes) -> TrainResult:
        if global_parameters.size != self.update.size:
            raise ConfigError(f"canary update has {self.update.size} entries, the model {global_parameters.size}")
        return TrainResult(self.update.copy(), self.num_samples, float("nan"), 0)


@dataclass(frozen=True)
class CanaryPlan:
    """The auditor's secret record of m canaries (all tuples of length m, in canary order).

    ``client_ids``: the run's clients that are canaries. ``coordinates``: the model parameter
    (index into the flat parameter vector) each canary writes. ``signs``: +1 or -1.
    ``included``: the coins. ``magnitude``: the crafted update's norm before clipping (the run
    clips it to its C; a magnitude above C exercises the clip).
    """

    client_ids: tuple[int, ...]
    coordinates: tuple[int, ...]
    signs: tuple[int, ...]
    included: tuple[bool, ...]
    magnitude: float

    def __post_init__(self) -> None:
        m = len(self.client_ids)
        if m < 1 or any(len(values) != m for values in (self.coordinates, self.signs, self.included)):
            raise ConfigError("a canary plan needs m >= 1 canaries with one coordinate, sign and coin each")
        if len(set(self.client_ids)) != m or len(set(self.coordinates)) != m:
            raise ConfigError("canary clients and canary coordinates must be distinct")
        if any(s not in (-1, 1) for s in self.signs) or any(not isinstance(c, bool) for c in self.included):
            raise ConfigError("canary signs must be +1/-1 and coins booleans")
        if not (isinstance(self.magnitude, (int, float)) and math.isfinite(self.magnitude) and self.magnitude > 0):
            raise ConfigError(f"canary magnitude must be a finite number > 0, got {self.magnitude!r}")

    @classmethod
    def draw(cls, client_ids: range | tuple[int, ...], dimension: int, magnitude: float) -> CanaryPlan:
        """Fresh coins, distinct coordinates and signs for ``client_ids`` from the OS CSPRNG."""
        client_ids = tuple(int(c) for c in client_ids)
        if len(client_ids) > dimension:
            raise ConfigError(f"{len(client_ids)} canaries need as many distinct coordinates; the model has {dimension}")
        system = secrets.SystemRandom()
        coordinates = tuple(system.sample(range(dimension), len(client_ids)))
        signs = tuple(1 if secrets.randbits(1) else -1 for _ in client_ids)
        included = tuple(bool(secrets.randbits(1)) for _ in client_ids)
        return cls(client_ids, coordinates, signs, included, float(magnitude))

    @property
    def count(self) -> int:
        return len(self.client_ids)

    def override(self) -> CanaryOverride:
        """The client-side hook: each canary client's crafted update, nothing else of the plan."""
        return CanaryOverride({c: (self.coordinates[i], self.signs[i] * self.magnitude if self.included[i] else 0.0)
                               for i, c in enumerate(self.client_ids)})

    def scores(self, released: list[tuple[np.ndarray, tuple[int, ...]]]) -> np.ndarray:
        """(m,) float64: each canary's score from the released rounds, higher = more likely IN.

        ``released``: per completed round, the decoded secure sum ((d,) float) and its
        survivors; a canary is scored over the rounds it survived (elsewhere its coin cannot
        show)."""
        scores = np.zeros(self.count, dtype=np.float64)
        for total, survivors in released:
            present = set(survivors)
            for i, client_id in enumerate(self.client_ids):
                if client_id in present:
                    scores[i] += self.signs[i] * float(total[self.coordinates[i]])
        return scores

    def as_json(self) -> dict:
        return {"client_ids": list(self.client_ids), "coordinates": list(self.coordinates),
                "signs": list(self.signs), "included": list(self.included), "magnitude": self.magnitude}


@dataclass(frozen=True)
class CanaryOverride:
    """Picklable learner override for :class:`federation.client_runtime.ClientFactory`: client
    id -> (coordinate, signed value) of its crafted update; other clients keep their learner."""

    updates: dict[int, tuple[int, float]]

    def __call__(self, client_id: int, learner):
        if client_id not in self.updates:
            return learner
        coordinate, value = self.updates[client_id]
        update = np.zeros(learner.trainer.dimension, dtype=np.float32)
        update[coordinate] = value
        return CanaryLearner(learner, update)
