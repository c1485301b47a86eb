"""An honest heavy client: one client holds most of one class's training examples.

Deleting such a client is the case where an unlearning method can *over*-remove: its class
should lose what only that client taught the model, no more. Enabled per run through
``RunConfig.extra`` (so the stored run configuration names it, and the workers, the oracle and
the verification all see the same split):

- ``heavy_client`` (int): the client that receives the examples (required to enable).
- ``heavy_class`` (int): the class it concentrates.
- ``heavy_share`` (float in (0, 1), default 0.8): the fraction of that class's training examples
  (over all clients) it ends up holding.

The other clients give up examples of that class, picked by a generator seeded with the run's
seed, so every process computes the same move; each keeps at least one example overall. Only
labels are needed to plan the move, so a client's data is built without copying the others'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from federation.config import RunConfig, extra_settings_given
from federation.datasets import ClientData, FederatedDataset
from federation.errors import ConfigError

KEYS = ("heavy_client", "heavy_class", "heavy_share")
DEFAULT_SHARE = 0.8


@dataclass(frozen=True)
class HeavyClient:
    """``client_id`` ends up with ``share`` of all training examples labelled ``label``."""

    client_id: int
    label: int
    share: float = DEFAULT_SHARE

    def __post_init__(self) -> None:
        for name in ("client_id", "label"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"heavy {name} must be an int >= 0, got {value!r}")
        share = self.share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share) \
                or not 0.0 < share < 1.0:
            raise ConfigError(f"heavy_share must be a number in (0, 1), got {share!r}")

    def moves(self, labels_by_client: list[np.ndarray], seed: int) -> dict[int, np.ndarray]:
        """Which examples each donor gives to the heavy client: {donor: (k,) int64 row indices
        into that donor's data, sorted}. ``labels_by_client[i]``: client i's (n_i,) labels."""
        if self.client_id >= len(labels_by_client):
            raise ConfigError(f"heavy_client {self.client_id} is not one of the {len(labels_by_client)} clients")
        total = sum(int(np.count_nonzero(labels == self.label)) for labels in labels_by_client)
        held = int(np.count_nonzero(labels_by_client[self.client_id] == self.label))
        wanted = max(0, int(round(self.share * total)) - held)
        # Candidates: (donor, row) of the class, a donor's last example never leaves it.
        candidates = []
        for donor, labels in enumerate(labels_by_client):
            if donor == self.client_id:
                continue
            rows = np.flatnonzero(labels == self.label)
            if rows.size == labels.size:
                rows = rows[1:]
            candidates.extend((donor, int(row)) for row in rows)
        order = np.random.default_rng([seed, self.client_id, self.label]).permutation(len(candidates))
        chosen: dict[int, list[int]] = {}
        for position in order[:wanted]:
            donor, row = candidates[position]
            chosen.setdefault(donor, []).append(row)
        return {donor: np.sort(np.asarray(rows, dtype=np.int64)) for donor, rows in chosen.items()}

    def client_data(self, federation: FederatedDataset, client_id: int, seed: int) -> ClientData:
        """Client ``client_id``'s data after the move (the heavy client's received examples are
        appended to its own, in donor order)."""
        clients = federation.clients
        moves = self.moves([c.labels for c in clients], seed)
        own = clients[client_id]
        if client_id == self.client_id:
            features = [own.features] + [clients[d].features[rows] for d, rows in sorted(moves.items())]
            labels = [own.labels] + [clients[d].labels[rows] for d, rows in sorted(moves.items())]
            return ClientData(np.concatenate(features), np.concatenate(labels), client_id=client_id)
        if client_id not in moves:
            return own
        keep = np.ones(own.num_samples, dtype=bool)
        keep[moves[client_id]] = False
        return ClientData(own.features[keep], own.labels[keep], client_id=client_id)


def heavy_client_for(config: RunConfig, num_classes: int) -> HeavyClient | None:
    """The run's heavy client from ``config.extra``, or None when no client is made heavy."""
    extra = config.extra
    if not extra_settings_given(extra, "heavy_client", KEYS):
        return None
    if "heavy_class" not in extra:
        raise ConfigError("heavy_client needs heavy_class (the class it concentrates)")
    heavy = HeavyClient(client_id=extra["heavy_client"], label=extra["heavy_class"],
                        share=extra.get("heavy_share", DEFAULT_SHARE))
    if heavy.client_id >= config.clients:
        raise ConfigError(f"heavy_client {heavy.client_id} is not one of the {config.clients} clients")
    if heavy.label >= num_classes:
        raise ConfigError(f"heavy_class {heavy.label} is not one of the {num_classes} classes")
    return heavy
