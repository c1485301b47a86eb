"""Rounds that replay a run's own cohorts: how the unlearning oracle and retraining choose clients.

Retraining without a client is defined as the run's training minus that client: the same rounds,
each with the clients whose update entered that round's sum, the removed ones left out. A fresh
Poisson sample would be a different run (and, on a run whose clients spent their budgets, a
sample that falls under the survivor floor). A :class:`CohortReplay` hands the coordinator those
cohorts: round ``i`` of the new run takes exactly ``cohorts[i]`` minus the excluded clients, and
simulates no dropouts (the original survivors already are the ones that stayed).

``released`` says whether the new run's sums leave the scratch space:

- ``True`` (``--method retrain``: the result becomes the run's model): every privacy rule of a
  round holds: a client whose budget would pass is left out, and a round with fewer survivors
  than the noise floor aborts, releasing nothing.
- ``False`` (the verification oracle, thrown away after its metrics are computed): the round's
  sum may hold fewer inputs than the noise floor (the replayed cohort minus the removed client
  can fall one under it); every client still adds the run's calibrated noise share, so the
  oracle carries the run's noise per client. Nothing of such a run may be stored in the run's
  database or ledger: its caller keeps it in a scratch database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from federation.errors import ResumeError


@dataclass(frozen=True)
class CohortReplay:
    """``cohorts[i]``: the clients of the new run's round ``i`` (before excluding any);
    ``released``: see the module docstring."""

    cohorts: tuple[tuple[int, ...], ...]
    released: bool

    def __init__(self, cohorts: Iterable[Sequence[int]], *, released: bool) -> None:
        rows = tuple(tuple(sorted({int(c) for c in cohort})) for cohort in cohorts)
        if not isinstance(released, bool):
            raise ResumeError(f"released must be a bool, got {released!r}")
        object.__setattr__(self, "cohorts", rows)
        object.__setattr__(self, "released", released)

    @property
    def rounds(self) -> int:
        return len(self.cohorts)

    def cohort(self, round_index: int, exclude: frozenset[int]) -> list[int]:
        """Round ``round_index``'s replayed clients without ``exclude`` (ResumeError past the end)."""
        if not 0 <= round_index < len(self.cohorts):
            raise ResumeError(f"the replay has {len(self.cohorts)} rounds; round {round_index} is not one of them")
        return [c for c in self.cohorts[round_index] if c not in exclude]
