"""The parts of one round that do not depend on how messages travel.

The in-process coordinator (``federation.coordinator``) and the HTTP round manager
(``federation.service.rounds``) both run rounds as: pick a cohort, announce a ``RoundPlan`` bound
into a SecAgg+ ``RoundConfig``, drive the four stages, decode the secure sum into a mean update,
step and evaluate the model, and commit one ``RoundWrite``. Everything here is that shared logic;
the transports only differ in how the stages' bytes move and when a stage closes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from federation.config import RunConfig
from federation.errors import ConfigError, ResumeError
from federation.privacy_plan import table_dropout
from federation.round_plan import NoiseShare, RoundPlan, default_step
from secagg.codec import check_bits, plan_bits
from secagg.config import RoundConfig
from secagg.graph import default_parameters
from secagg.modular import centered_lift
from secagg.server import AggregateResult
from secagg.simulate import make_config
from storage.entities import AggregateWrite, CheckpointWrite, LedgerEntryWrite, RoundWrite, SealedRecordWrite
from storage.repositories import Repository

ROUND_SEED_BYTES = 32

__all__ = [
    "ROUND_SEED_BYTES",
    "RoundAggregate",
    "RoundSetup",
    "aborted_round_write",
    "aggregate_round",
    "checkpoint_due",
    "completed_round_write",
    "graph_parameters",
    "lattice_step",
    "open_round",
    "public_parameters",
    "restore_model",
    "secure_sum_bits",
]


def lattice_step(config: RunConfig, dimension: int) -> float:
    """The run's lattice step Δ: the configured one, else derived from the clip norm and d."""
    return config.step or default_step(config.clip_norm, dimension, config.lattice)


def secure_sum_bits(config: RunConfig, dimension: int, step: float, noise_std: float) -> int:
    """The run's modulus width b: the smallest safe width for ``config.clients`` contributors with
    per-client noise of standard deviation ``noise_std``, or the configured one once checked to
    hold the sum (BitWidthError names the knob: a sum never wraps silently)."""
    width = (config.clip_norm, step, config.lattice, config.clients, dimension)
    if config.bits is None:
        return plan_bits(*width, noise_std=noise_std)
    check_bits(config.bits, *width, noise_std=noise_std)
    return config.bits


def graph_parameters(config: RunConfig, cohort_size: int) -> tuple[int, int]:
    """(k, t) for a cohort of ``cohort_size`` >= 2 clients: the configured (neighbours, threshold)
    when both are set (clamped to the cohort), else the parameter table (docs/ALGORITHMS.md §1.4); k
    is made a valid Harary degree (n·k even) and t <= k + 1.

    Raises:
        ConfigError: fewer than two clients.
    """
    if cohort_size < 2:
        raise ConfigError(f"a cohort needs at least 2 clients (a sum of one reveals it), got {cohort_size}")
    if config.neighbours is not None and config.threshold is not None:
        neighbours = min(config.neighbours, cohort_size - 1)
        threshold = min(config.threshold, neighbours + 1)
    else:
        neighbours, threshold = default_parameters(cohort_size, dropout=table_dropout(config.dropout_rate))
    if (cohort_size * neighbours) % 2:
        # n odd and k odd: k < n - 1 (n - 1 is even), so k + 1 is still a valid degree.
        neighbours += 1
    return neighbours, max(2, min(threshold, neighbours + 1))


@dataclass(frozen=True)
class RoundSetup:
    """A round about to start: its public plan, the SecAgg+ configuration that binds it, (k, t)
    and the fewest survivors the sum may hold (``RoundConfig.minimum_survivors``)."""

    plan: RoundPlan
    round_config: RoundConfig
    neighbours: int
    threshold: int

    @property
    def minimum_survivors(self) -> int:
        return self.round_config.minimum_survivors


def open_round(config: RunConfig, *, round_index: int, cohort: Sequence[int], dimension: int, step: float,
               bits: int, noise: NoiseShare, round_seed: bytes | None = None,
               survivor_floor: int | None = None) -> RoundSetup:
    """The plan and SecAgg+ configuration of round ``round_index`` for ``cohort``.

    ``round_seed`` (32 bytes; fresh from the OS CSPRNG when None) seeds the public rotation and
    dithers; the plan's canonical bytes become the round's ``application_config``, so every
    client's signed key advertisement commits to the same codec and noise parameters. The sum
    must keep at least max(t, noise floor) inputs (the distributed-noise floor: fewer shares
    would carry less noise than calibrated), signed into the configuration as its
    ``minimum_survivors``. ``survivor_floor`` lowers that floor for a sum that is never released
    (the unlearning oracle's scratch rounds, ``federation.cohort_replay``); the announced noise
    share stays the run's.

    Raises:
        ConfigError: the cohort is smaller than the noise floor (the round could never complete).
    """
    floor = noise.floor if survivor_floor is None else min(noise.floor, survivor_floor)
    if len(cohort) < max(2, floor):
        raise ConfigError(f"a cohort of {len(cohort)} clients is below the noise floor of {floor} survivors")
    if round_seed is None:
        round_seed = os.urandom(ROUND_SEED_BYTES)
    neighbours, threshold = graph_parameters(config, len(cohort))
    plan = RoundPlan(round_index=round_index, round_seed=round_seed, dimension=dimension, lattice=config.lattice,
                     step=step, bits=bits, clip_norm=config.clip_norm, noise=noise)
    round_config = make_config(cohort, bits, plan.coordinates(), neighbours_k=neighbours, threshold=threshold,
                               round_index=round_index, application_config=plan.to_bytes(),
                               minimum_survivors=min(len(cohort), max(threshold, floor)))
    return RoundSetup(plan, round_config, neighbours, threshold)


def public_parameters(setup: RoundSetup) -> dict:
    """The round's public parameters as stored with the round (JSON)."""
    plan = setup.plan
    return {"lattice": plan.lattice, "step": plan.step, "bits": plan.bits, "clip_norm": plan.clip_norm,
            "noise": plan.noise.mode, "mechanism": plan.noise.mechanism,
            "noise_scale": plan.noise.scale, "neighbours": setup.neighbours, "threshold": setup.threshold,
            "minimum_survivors": setup.minimum_survivors, "round_seed": plan.round_seed.hex(),
            "dimension": plan.dimension}


@dataclass(frozen=True)
class RoundAggregate:
    """The decoded outcome of a completed secure sum.

    ``survivors``: sorted ids in the sum; ``lattice_sum``: (m,) int64 centred lift of Σ z_i;
    ``mean_update``: (d,) float32, the mean of the survivors' quantized updates.
    """

    survivors: tuple[int, ...]
    lattice_sum: np.ndarray
    mean_update: np.ndarray


def aggregate_round(plan: RoundPlan, outcome: AggregateResult) -> RoundAggregate:
    """Decode the unmasked sum: centred lift, subtract the survivors' dithers, unrotate, divide."""
    survivors = tuple(sorted(outcome.survivors))
    total = plan.codec().decode_sum(outcome.sum, plan.round_seed, survivors, plan.dimension)
    mean_update = (total / len(survivors)).astype(np.float32)
    return RoundAggregate(survivors, centered_lift(outcome.sum, plan.bits), mean_update)


def checkpoint_due(config: RunConfig, round_index: int) -> bool:
    """Whether the model after ``round_index`` is checkpointed (every K rounds and the last)."""
    return (round_index + 1) % config.checkpoint_every == 0 or round_index + 1 == config.rounds


def completed_round_write(*, config: RunConfig, setup: RoundSetup, aggregate: RoundAggregate,
                          model_parameters: np.ndarray, started_at: datetime, finished_at: datetime,
                          dropouts: Mapping[str, Iterable[int]], bytes_uploaded: int,
                          ledger_entries: Sequence[LedgerEntryWrite] = (),
                          sealed_records: Sequence[SealedRecordWrite] = (),
                          audit_details: Mapping | None = None) -> RoundWrite:
    """The ``RoundWrite`` of a completed round (uniform FedAvg weights over the survivors).

    ``model_parameters`` is θ_{t+1}, (d,) float32, checkpointed when ``checkpoint_due``;
    ``sealed_records`` must be survivors' only (a record whose update is not in the sum must not
    be stored).
    """
    plan = setup.plan
    survivors = aggregate.survivors
    checkpoint = CheckpointWrite({"flat": model_parameters}) if checkpoint_due(config, plan.round_index) else None
    return RoundWrite(
        round_index=plan.round_index, cohort=setup.round_config.client_ids, survivors=survivors,
        started_at=started_at, finished_at=finished_at,
        dropouts={stage: sorted(ids) for stage, ids in dropouts.items() if ids},
        client_weights={c: 1.0 / len(survivors) for c in survivors},
        parameters=public_parameters(setup),
        bytes_uploaded=bytes_uploaded,
        aggregates=(AggregateWrite(aggregate.lattice_sum, kind="lattice_sum"),
                    AggregateWrite(aggregate.mean_update, kind="mean_update", name="mean_update")),
        checkpoint=checkpoint, ledger_entries=tuple(ledger_entries), sealed_records=tuple(sealed_records),
        audit_details=dict(audit_details or {}),
    )


def aborted_round_write(*, round_index: int, cohort: Sequence[int], started_at: datetime,
                        finished_at: datetime, reason: str, stage: str = "aborted",
                        dropouts: Mapping[str, Iterable[int]] | None = None,
                        ledger_entries: Sequence[LedgerEntryWrite] = (),
                        audit_details: Mapping | None = None) -> RoundWrite:
    """The ``RoundWrite`` of an aborted round: no aggregate; charges made before upload stand."""
    details = {"reason": reason, **dict(audit_details or {})}
    return RoundWrite(
        round_index=round_index, cohort=cohort, survivors=[], started_at=started_at, finished_at=finished_at,
        status="aborted", stage=stage,
        dropouts={s: sorted(ids) for s, ids in (dropouts or {}).items() if ids},
        ledger_entries=tuple(ledger_entries), audit_details=details,
    )


def restore_model(repository: Repository, run_id: int, model, server_learning_rate: float) -> int:
    """Rebuild θ from what was committed: the last checkpoint, then every later mean update.

    ``model`` needs ``load_flat`` and ``apply_update`` (``federation.evaluation.GlobalModel``).
    Returns the index of the next round to run.

    Raises:
        ResumeError: a stored checkpoint does not fit the model.
    """
    next_round = repository.next_round_index(run_id)
    if next_round == 0:
        return 0
    checkpoint = repository.load_checkpoint(run_id)
    replay_from = 0
    if checkpoint is not None:
        flat = checkpoint.tensors.get("flat")
        if flat is None:
            raise ResumeError(f"run {run_id}: checkpoint of round {checkpoint.info.round_index} has no 'flat' tensor")
        try:
            model.load_flat(flat)
        except (ValueError, RuntimeError) as error:
            raise ResumeError(f"run {run_id}: checkpoint does not fit the model: {error}") from None
        replay_from = checkpoint.info.round_index + 1
    for aggregate in repository.iter_aggregates(run_id, "mean_update"):
        if aggregate.round_index >= replay_from:
            model.apply_update(aggregate.values, server_learning_rate)
    return next_round
