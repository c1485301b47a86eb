"""An empirical privacy audit of one real run: canary clients in, a lower bound on ε out.

:func:`audit_run` adds m canary clients (:mod:`federation.canaries`) to a run configuration,
runs it with the real coordinator (clip, lattice, exact noise shares, SecAgg+ over serialized
messages in worker processes, ledger, storage), reads back what the run released (each completed
round's decoded sum, from storage) and runs the one-run audit of :mod:`privacy.audit` on the
canaries' scores. The result sets the lower bound ε_lb beside the ε the ledger accounted for the
canaries: a correct run gives ε_lb <= accounted ε except with probability 1 - confidence; a run
whose ε_lb exceeds it is flagged (its noise or its accounting is wrong).

The one-run bound is loose for Gaussian-like noise: with a few hundred canaries it certifies a
fraction of the true ε (``bench/privacy_bench.py`` measures how much). A flag is evidence of a
broken claim; no flag is not proof of a correct one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federation.canaries import CanaryPlan
from federation.config import RunConfig
from federation.coordinator import Coordinator, RoundSummary
from federation.errors import ConfigError
from federation.evaluation import GlobalModel
from privacy.accounting import recompute_epsilon
from privacy.audit import OneRunAudit, canary_audit_over_guesses
from privacy.events import event_from_json
from storage.repositories import Repository

#: Fractions of the canaries guessed IN (top scores) and, as many, OUT (bottom scores); fixed
#: before any run, Bonferroni over the grid (privacy.audit.canary_audit_over_guesses).
GUESS_FRACTIONS = (0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class CanaryAuditReport:
    """The audit of run ``run_id``. ``accounted_epsilon``: the largest ε the ledger holds for a
    canary (at the run's δ, recomputed from the stored events); ``run_epsilon``: the largest over
    all clients. ``flagged``: the lower bound exceeds the accounted ε."""

    run_id: int
    config: RunConfig
    plan: CanaryPlan
    audit: OneRunAudit
    accounted_epsilon: float
    run_epsilon: float
    completed_rounds: int
    scores: np.ndarray
    final_accuracy: float

    @property
    def epsilon_lower_bound(self) -> float:
        return self.audit.epsilon_lower_bound

    @property
    def confidence(self) -> float:
        return 1.0 - self.audit.significance

    @property
    def flagged(self) -> bool:
        return self.audit.epsilon_lower_bound > self.accounted_epsilon

    @property
    def separation(self) -> float | None:
        """(mean IN score - mean OUT score) / std of the OUT scores: the canaries' measured
        signal-to-noise (μ of the Gaussian the scores resemble); None with fewer than 2 of either."""
        included = np.asarray(self.plan.included)
        inside, outside = self.scores[included], self.scores[~included]
        if inside.size < 2 or outside.size < 2:
            return None
        return float((inside.mean() - outside.mean()) / outside.std(ddof=1))

    def as_json(self) -> dict:
        included = np.asarray(self.plan.included)
        return {
            "run_id": self.run_id,
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "confidence": self.confidence,
            "accounted_epsilon": self.accounted_epsilon,
            "run_epsilon": self.run_epsilon,
            "delta": self.audit.delta,
            "flagged": self.flagged,
            "canaries": self.audit.canaries,
            "canaries_included": int(included.sum()),
            "guesses": self.audit.guesses,
            "correct": self.audit.correct,
            "completed_rounds": self.completed_rounds,
            "final_accuracy": self.final_accuracy,
            "mean_score_in": float(self.scores[included].mean()) if included.any() else None,
            "mean_score_out": float(self.scores[~included].mean()) if (~included).any() else None,
            "separation": self.separation,
            "config": self.config.to_dict(),
        }


def canary_config(config: RunConfig, canaries: int) -> RunConfig:
    """``config`` with ``canaries`` more clients (the last ids), checked for what the audit needs."""
    if isinstance(canaries, bool) or not isinstance(canaries, int) or canaries < 2:
        raise ConfigError(f"an audit needs at least 2 canaries, got {canaries!r}")
    if config.noise == "none":
        raise ConfigError("a run without noise claims no ε to audit: choose --noise distributed or local")
    if config.trainer != "sgd":
        raise ConfigError(f"the canary audit runs the sgd trainer's pipeline (one update per client and round); "
                          f"got trainer {config.trainer!r}")
    return config.replace(clients=config.clients + canaries)


def guess_counts(canaries: int, fractions: tuple[float, ...] = GUESS_FRACTIONS) -> tuple[int, ...]:
    """Guesses per side for each fraction (at least 1, at most half the canaries), distinct."""
    return tuple(sorted({min(canaries // 2, max(1, round(f * canaries))) for f in fractions}))


def audit_run(config: RunConfig, canaries: int, repository: Repository, *, key_directory: Path,
              confidence: float = 0.95, magnitude: float | None = None, name: str | None = None,
              on_round: Callable[[RoundSummary], None] | None = None) -> CanaryAuditReport:
    """Run ``config`` plus ``canaries`` canary clients for real and audit what it released.

    ``magnitude``: the canaries' update norm before clipping (default twice the clip norm, so
    the client's clip is what bounds it). ``confidence``: of the lower bound (Bonferroni over
    :data:`GUESS_FRACTIONS`)."""
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    audited = canary_config(config, canaries)
    magnitude = 2.0 * audited.clip_norm if magnitude is None else float(magnitude)
    if not (math.isfinite(magnitude) and magnitude > 0):
        raise ConfigError(f"canary magnitude must be a finite number > 0, got {magnitude}")
    first = audited.clients - canaries
    dimension = GlobalModel.for_config(audited).parameter_count
    plan = CanaryPlan.draw(range(first, audited.clients), dimension, magnitude)
    coordinator = Coordinator(audited, repository, key_directory=key_directory, name=name,
                              learner_override=plan.override())
    summary = coordinator.run(on_round)
    released = []
    for info in repository.list_rounds(coordinator.run_id):
        if info.status != "completed":
            continue
        mean = repository.load_aggregates(coordinator.run_id, info.round_index)["mean_update"].values
        released.append((np.asarray(mean, dtype=np.float64) * len(info.survivors), tuple(info.survivors)))
    scores = plan.scores(released)
    audit = canary_audit_over_guesses(scores, np.asarray(plan.included), guess_counts(canaries),
                                      audited.delta, 1.0 - confidence)
    accounted = _max_epsilon(repository, coordinator.run_id, plan.client_ids, audited.delta)
    everyone = _max_epsilon(repository, coordinator.run_id, range(audited.clients), audited.delta)
    return CanaryAuditReport(coordinator.run_id, coordinator.config, plan, audit, accounted, everyone,
                             len(released), scores, summary.final_accuracy)


def _max_epsilon(repository: Repository, run_id: int, clients, delta: float) -> float:
    """Largest ε (run's RDP accountant, at ``delta``) the stored ledger gives any of ``clients``."""
    events: dict[int, list] = {int(c): [] for c in clients}
    for entry in repository.ledger_entries(run_id):
        if entry.client_id in events:
            events[entry.client_id].append(event_from_json(entry.event_json))
    return max((float(recompute_epsilon(e, delta, accountant="rdp")) if e else 0.0 for e in events.values()),
               default=0.0)
