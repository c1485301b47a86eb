"""User sparsification: which participants of a round upload a sealed history record.

MEDU's first stage (Lang et al., arXiv 2505.03388) keeps records for only some users per round.
Fast-FedUL picks them by importance, u_k = p_k·‖Δ_k‖. Under secure aggregation the server never
sees an individual update, so it has no norms and importance sampling by norm is impossible
without leaking them: a client's norm (or anything computed from its update) would have to reach
the server in the clear, outside SecAgg and outside the LDP accounting. fedvault therefore offers
only policies computed from public data: record every participant, or a uniformly random subset
of at most m of them drawn from the public round seed. Everyone (server and clients) recomputes
the same subset, so a client knows whether to upload before it does, the selection reveals
nothing about any update, and the inclusion probability m/|S| is public, which is what the
unlearning rule needs to reweight recorded rounds (Horvitz–Thompson).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from secagg.context import encode_parts
from secagg.prg import random_below
from unlearning.errors import UnlearningConfigurationError, UnlearningInputError

ROUND_SEED_BYTES = 32
_POLICY_LABEL = "fedvault/history-policy"


def _check_participants(participants: Iterable[int]) -> list[int]:
    if isinstance(participants, (str, bytes)) or not isinstance(participants, Iterable):
        raise UnlearningInputError("participants must be a collection of client ids")
    ids = []
    for client in participants:
        if isinstance(client, bool) or not isinstance(client, (int, np.integer)) or client < 0:
            raise UnlearningInputError(f"participant ids must be non-negative ints, got {client!r}")
        ids.append(int(client))
    if len(set(ids)) != len(ids):
        raise UnlearningInputError("participants contain a duplicate id")
    return sorted(ids)  # canonical order: the subset must not depend on how the caller listed them


@dataclass(frozen=True)
class HistoryPolicy:
    """Keep at most ``max_records_per_round`` records per round (None: every participant).

    The subset is uniform among all subsets of that size, drawn by a partial Fisher–Yates
    shuffle whose swaps come from ``secagg.prg.random_below`` keyed by the public round seed.
    """

    max_records_per_round: int | None = None

    def __post_init__(self) -> None:
        m = self.max_records_per_round
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise UnlearningConfigurationError(
                f"max_records_per_round must be a positive int or None (record everyone), got {m!r}")

    def select(self, participants: Iterable[int], round_seed: bytes, round_index: int) -> frozenset[int]:
        """The participants that upload a record this round.

        participants: the client ids invited to the round (any order, no duplicates).
        round_seed: the round's public 32-byte seed. round_index: the round number.
        """
        ids = _check_participants(participants)
        if not isinstance(round_seed, (bytes, bytearray)) or len(round_seed) != ROUND_SEED_BYTES:
            raise UnlearningInputError(f"round_seed must be {ROUND_SEED_BYTES} bytes")
        if isinstance(round_index, bool) or not isinstance(round_index, (int, np.integer)) or round_index < 0:
            raise UnlearningInputError(f"round_index must be a non-negative int, got {round_index!r}")
        m = self.max_records_per_round
        if m is None or m >= len(ids):
            return frozenset(ids)
        for position in range(m):
            # One draw per position, each uniform on the not-yet-chosen tail: an exact uniform
            # m-subset, independent of everything but the public seed.
            info = encode_parts(_POLICY_LABEL, int(round_index), len(ids), position)
            swap = position + int(random_below(bytes(round_seed), info, 1, len(ids) - position)[0])
            ids[position], ids[swap] = ids[swap], ids[position]
        return frozenset(ids[:m])

    def inclusion_probability(self, participant_count: int) -> float:
        """The probability that a given participant is recorded: min(1, m/|S|)."""
        if (isinstance(participant_count, bool) or not isinstance(participant_count, (int, np.integer))
                or participant_count < 1):
            raise UnlearningInputError(f"participant_count must be a positive int, got {participant_count!r}")
        m = self.max_records_per_round
        return 1.0 if m is None else min(1.0, m / int(participant_count))
