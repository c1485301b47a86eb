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

import math

import dataclasses
from collections.abc import Iterable, Sequence

from federation.config import RunConfig
from federation.errors import ConfigError
from federation.round_plan import NoiseShare, coordinate_l2_sensitivity
from privacy.events import event_from_json
from privacy.ledger import BudgetLedger
from privacy.mechanisms import DistributedNoise, LocalNoise, distributed_noise_for, local_noise_for
from secagg.codec import CodecConfig, LatticeCodec
from secagg.graph import default_parameters
from storage.entities import LedgerEntryWrite


def noise_floor(config: RunConfig, senders: int | None = None) -> int:
    """Fewest survivors a distributed-noise round accepts (RoundConfig.minimum_survivors).

    Each client adds 1/floor of the central noise, so a sum of s >= floor inputs carries s/floor
    times the calibrated variance: the floor should sit just below the survivors a round usually
    has. With every sampled client dropping independently at the configured rate, the survivors
    of an expected cohort n are Binomial(n, 1 − p); the floor is three standard deviations below
    its mean (a round falls short and aborts, revealing nothing, with probability ~0.1%), and never
    below the SecAgg+ threshold t (``RunConfig.threshold`` if given).

    ``senders``: the inputs a sum expects when it is not the whole expected cohort (a FedP3 layer
    group's owners); a configured threshold above it is clamped to it, as ``graph_parameters``
    clamps t for a small sum.
    """
    expected = max(2, round(config.clients * config.sample_rate)) if senders is None else max(2, senders)
    rate = config.dropout_rate
    floor = math.floor(expected * (1 - rate) - 3 * math.sqrt(expected * rate * (1 - rate)))
    threshold = config.threshold or default_parameters(expected, dropout=table_dropout(rate))[1]
    if senders is not None:
        threshold = min(threshold, expected)
    return max(2, threshold, min(expected, floor))


#: ``RunConfig.extra`` key of a deliberate miscalibration, for audit tests and benchmarks only.
NOISE_SENSITIVITY_SCALE = "noise_sensitivity_scale"


def noise_sensitivity_scale(config: RunConfig) -> float:
    """Fraction of the true sensitivity the noise is sized for: 1 in every real run.

    ``RunConfig.extra["noise_sensitivity_scale"]`` = s in (0, 1] makes the run calibrate (and
    record in its ledger events) s times the true sensitivity: its noise is s times too small
    while its ledger still claims the target ε. It exists so that the empirical audit
    (``fedvault audit-run``, ``bench/privacy_bench.py``) can be shown to catch a wrong claim; no
    CLI flag sets it, and a run carrying it says so in its stored configuration.
    """
    scale = config.extra.get(NOISE_SENSITIVITY_SCALE, 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ConfigError(f"{NOISE_SENSITIVITY_SCALE} must be a number in (0, 1], got {scale!r}")
    return float(scale)


def table_dropout(rate: float) -> float:
    return min(0.45, max(0.05, rate))


class PrivacyPlanner:
    def __init__(self, config: RunConfig, dimension: int, step: float) -> None:
        self.config = config
        self.noise = self._calibrate(config, dimension, step)
        self.noise_share = NoiseShare.of(self.noise)
        self._ledger = self._new_ledger()

    # --- calibration ---------------------------------------------------------------------

    @staticmethod
    def _calibrate(config: RunConfig, dimension: int, step: float) -> LocalNoise | DistributedNoise | None:
        if config.noise == "none":
            return None
        local = config.noise == "local"
        l2 = coordinate_l2_sensitivity(config.clip_norm, step, dimension, config.lattice, local=local)
        l2 *= noise_sensitivity_scale(config)
        coordinates = LatticeCodec(CodecConfig(lattice=config.lattice, step=step, bits=32,
                                               clip_norm=config.clip_norm)).coordinates(dimension)
        if local:
            return local_noise_for(config.mechanism, config.target_epsilon, config.delta, l2, coordinates,
                                   compositions=config.rounds)
        return distributed_noise_for(config.mechanism, config.target_epsilon, config.delta, l2, coordinates,
                                     noise_floor(config), compositions=config.rounds)

    def round_event(self):
        """The event one round charges each participant (the noise at the accepted worst case)."""
        return self.noise.event()

    def settle(self, survivors: int) -> None:
        """Fail closed before releasing a sum that holds fewer noise shares than calibrated."""
        if isinstance(self.noise, DistributedNoise):
            self.noise.settle(self.noise.event(), survivors)

    # --- the ledger ----------------------------------------------------------------------

    def _new_ledger(self):
        if self.config.noise == "none" and self.config.trainer != "dpsgd":
            return None
        return BudgetLedger(budget_epsilon=self.config.client_budget, delta=self.config.delta)

    def can_participate(self, client_id: int) -> bool:
        if self._ledger is None or self.noise is None:
            return True
        return self._ledger.can_participate(client_id, self.round_event())

    def charge(self, clients: Iterable[int], round_index: int, *,
               sample_events: dict[int, Sequence] | None = None) -> list[LedgerEntryWrite]:
        """Charge each client for this round's release(s) before it uploads; over-budget raises."""
        if self._ledger is None:
            return []
        entries = []
        for client_id in clients:
            if self.noise is not None:
                entry = self._ledger.charge(client_id, round_index, self.noise_share.ledger_stream,
                                            self.round_event())
                entries.append(LedgerEntryWrite(**dataclasses.asdict(entry)))
            for event in (sample_events or {}).get(client_id, ()):
                entry = self._ledger.charge(client_id, round_index, "dp-sgd", event)
                entries.append(LedgerEntryWrite(**dataclasses.asdict(entry)))
        return entries

    def restore(self, stored_entries) -> None:
        """Re-charge the stored ledger (resume): the same events, the same running totals."""
        if self._ledger is None:
            return
        for entry in stored_entries:
            self._ledger.charge(entry.client_id, entry.round_index, entry.stream, event_from_json(entry.event_json))

    def max_epsilon(self) -> float:
        if self._ledger is None:
            return 0.0
        return self._ledger.max_epsilon()
