"""The server's privacy bookkeeping for a run: noise calibration, per-round charges, the ledger.

Noise is calibrated once, before the first round, so that a client taking part in every one of
the run's rounds ends at most at the target ε (δ fixed): the rounds compose in Rényi DP, the
client's worst case. Each round, every client asked for its masked input is charged *before* it
uploads; a client whose projected ε would pass its budget is not sampled. The ledger entries are
the event descriptions themselves, so any accountant can recompute ε from storage.

Modes (docs/ALGORITHMS.md §3.5):
- ``distributed``: each client adds 1/floor of the central noise; the secure sum of at least
  ``floor`` survivors carries the central (ε, δ) for add/remove-one-client neighbours; rounds
  with fewer survivors abort. ``floor`` = the SecAgg+ threshold of a full cohort, no colluders.
- ``local``: each client's release is (ε, δ)-DP on its own against everyone (sensitivity of
  replacing its input, ≈ 2C), at a large utility cost.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

from federation.config import RunConfig
from federation.round_plan import NoiseShare, coordinate_sensitivity
from secagg.graph import default_parameters
from storage.entities import LedgerEntryWrite

UPDATE_STREAMS = {"distributed": "distributed", "local": "update-ldp"}


def noise_floor(config: RunConfig) -> int:
    """Fewest survivors a distributed-noise round accepts: the expected cohort's threshold."""
    expected = max(2, round(config.clients * config.sample_rate))
    if config.threshold is not None:
        return config.threshold
    return default_parameters(expected, dropout=table_dropout(config.dropout_rate))[1]


def table_dropout(rate: float) -> float:
    return min(0.45, max(0.05, rate))


class PrivacyPlanner:
    def __init__(self, config: RunConfig, dimension: int, step: float) -> None:
        self.config = config
        self.noise_share = self._calibrate(config, dimension, step)
        self._ledger = self._new_ledger()

    # --- calibration ---------------------------------------------------------------------

    @staticmethod
    def _calibrate(config: RunConfig, dimension: int, step: float) -> NoiseShare:
        if config.noise == "none":
            return NoiseShare()
        from privacy.calibration import calibrate_discrete_gaussian_sigma, calibrate_skellam_mu

        local = config.noise == "local"
        l2, l1 = coordinate_sensitivity(config.clip_norm, step, dimension, config.lattice, local=local)
        floor = 1 if local else noise_floor(config)
        if config.mechanism == "skellam":
            total = calibrate_skellam_mu(config.target_epsilon, config.delta, l2, l1, compositions=config.rounds)
            return NoiseShare(config.noise, "skellam", total / floor, l2, l1, floor)
        sigma = calibrate_discrete_gaussian_sigma(config.target_epsilon, config.delta, l2, compositions=config.rounds)
        return NoiseShare(config.noise, "dgauss", sigma / math.sqrt(floor), l2, l1, floor)

    def round_event(self, survivors_floor: int | None = None):
        """The event one round charges each participant: the noise the sum carries at worst."""
        from privacy.events import DiscreteGaussianEvent, SkellamEvent

        share = self.noise_share
        floor = max(share.floor, survivors_floor or share.floor) if share.mode == "distributed" else 1
        if share.mechanism == "skellam":
            return SkellamEvent(mu=share.parameter * floor, l2_sensitivity=share.l2_sensitivity,
                                l1_sensitivity=share.l1_sensitivity)
        return DiscreteGaussianEvent(sigma=share.parameter * math.sqrt(floor), l2_sensitivity=share.l2_sensitivity)

    # --- the ledger ----------------------------------------------------------------------

    def _new_ledger(self):
        if self.config.noise == "none" and self.config.trainer != "dpsgd":
            return None
        from privacy.ledger import BudgetLedger

        return BudgetLedger(budget_epsilon=self.config.client_budget, delta=self.config.delta)

    def can_participate(self, client_id: int) -> bool:
        if self._ledger is None or self.config.noise == "none":
            return True
        return self._ledger.can_participate(client_id, self.round_event())

    def charge(self, clients: Iterable[int], round_index: int, *, survivors_floor: int,
               sample_events: dict[int, Sequence] | None = None) -> list[LedgerEntryWrite]:
        """Charge each client for this round's release(s) before it uploads; over-budget raises."""
        if self._ledger is None:
            return []
        entries = []
        for client_id in clients:
            if self.config.noise != "none":
                entry = self._ledger.charge(client_id, round_index, UPDATE_STREAMS[self.config.noise],
                                            self.round_event(survivors_floor))
                entries.append(LedgerEntryWrite(**dataclasses.asdict(entry)))
            for event in (sample_events or {}).get(client_id, ()):
                entry = self._ledger.charge(client_id, round_index, "dp-sgd", event)
                entries.append(LedgerEntryWrite(**dataclasses.asdict(entry)))
        return entries

    def restore(self, stored_entries) -> None:
        """Re-charge the stored ledger (resume): the same events, the same running totals."""
        if self._ledger is None:
            return
        from privacy.events import event_from_json

        for entry in stored_entries:
            self._ledger.charge(entry.client_id, entry.round_index, entry.stream, event_from_json(entry.event_json))

    def max_epsilon(self) -> float:
        if self._ledger is None:
            return 0.0
        return self._ledger.max_epsilon()
