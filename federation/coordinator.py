"""The server's round loop (docs/ARCHITECTURE.md, "One round, as data").

Per round: sample a cohort (Poisson, rate q) among active clients whose budget allows the round;
announce the round plan; clients train and encode in their worker processes; the real SecAgg+
server state machine runs the five stages (consistency round included) over serialized messages,
with simulated dropouts at each;
the server decodes the secure sum, steps the model, evaluates it, and commits the whole round
(round row, aggregates, checkpoint, ledger charges, the survivors' sealed history records, audit
entry) in one transaction, then tells those clients their records are stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from federation.authority import create_authority_key, load_authority_key, sign_directory
from federation.client_policy import ClientPolicy
from federation.client_runtime import ClientFactory, TrainReport
from federation.cohort_replay import CohortReplay
from federation.config import CUSTOM, RunConfig
from federation.errors import ResumeError
from federation.keystore import run_state_tag
from federation.locodl_run import MEAN_SENT, LoCoDLCoordination
from federation.evaluation import GlobalModel
from federation.fedp3_rounds import FedP3Rounds
from federation.privacy_plan import PrivacyPlanner
from federation.round_logic import (
    aggregate_round, checkpoint_due, lattice_step, open_round, public_parameters, restore_model,
    secure_sum_bits,
)
from federation.workers import ClientFailure, WorkerPool
from federation.workload import Workload
from privacy.errors import PrivacyError
from secagg.errors import ProtocolError, RoundAbortedError
from secagg.server import SecAggServer
from secagg.stages import MASKED_INPUT, STAGES
from storage.entities import AggregateWrite, CheckpointWrite, LedgerEntryWrite, RoundWrite, SealedRecordWrite
from storage.repositories import ClientEnrolment, Repository
from unlearning.history_policy import HistoryPolicy
from unlearning.secrets import RECORD_FORMAT_VERSION



@dataclass(frozen=True)
class RoundSummary:
    """One line of the run's report."""

    round_index: int
    status: str
    accuracy: float
    loss: float
    epsilon_spent: float
    cohort: int
    survivors: int
    dropouts: int
    upload_bytes_per_client: float  # all five SecAgg+ stages, averaged over the cohort
    seconds: float
    abort_reason: str | None = None
    masked_input_bytes_per_client: float = 0.0  # the b-bit packed masked vector alone


@dataclass
class RunSummary:
    run_id: int
    config: RunConfig
    rounds: list[RoundSummary] = field(default_factory=list)
    parameters: int = 0
    bits: int = 0
    lattice: str = ""
    float32_update_bytes: int = 0

    @property
    def final_accuracy(self) -> float:
        completed = [r for r in self.rounds if r.status == "completed"]
        return completed[-1].accuracy if completed else float("nan")


def simulation_authority(key_directory: Path):
    """The simulated operator's authority key, ``authority.key`` in the key folder (created 0600
    on first use; the same key signs the directory again when a run resumes)."""
    path = Path(key_directory) / "authority.key"
    if path.exists() or path.is_symlink():
        return load_authority_key(path)
    return create_authority_key(path)


class Coordinator:
    """Runs (or resumes) one federated run against a repository.

    ``key_directory`` holds the simulated clients' key files (each client's own secret material);
    ``on_round`` is called after each committed round. For retraining without some clients (the
    unlearning oracle): ``exclude_clients`` are never sampled, and a new run may start from
    ``initial_parameters`` ((d,) float32) instead of the seeded initial model (stored exactly as
    its round -1 checkpoint, so the run resumes from it), and ``replay``
    (:class:`federation.cohort_replay.CohortReplay`) gives each round's cohort instead of a sample,
    with no simulated dropouts. ``workload`` trains a user's own model
    and per-client data (:class:`federation.workload.Workload`) instead of the config's named
    ones; a run made with a workload resumes only with it. The coordinator also plays the
    operator's enrolment authority: its key (``authority.key`` in ``key_directory``, kept across
    resumes) signs the run's directory, which every client checks against the key it pinned.
    ``client_policy``: every simulated client's own policy (default: ``ClientPolicy.accepting``
    of the run's config), enforced by the same checks as a networked client's.
    ``learner_override`` ((client_id, learner) -> learner, picklable) replaces some clients'
    local learning and nothing else (an empirical audit's canary clients:
    :mod:`federation.canaries`).
    """

    def __init__(self, config: RunConfig, repository: Repository, *, key_directory: Path,
                 run_id: int | None = None, name: str | None = None, exclude_clients: Collection[int] = (),
                 initial_parameters: np.ndarray | None = None, workload: Workload | None = None,
                 replay: CohortReplay | None = None, client_policy: ClientPolicy | None = None,
                 learner_override: Callable | None = None) -> None:
        self.repository = repository
        self.learner_override = learner_override
        if replay is not None and (run_id is not None or not isinstance(replay, CohortReplay)):
            raise ResumeError("replay must be a CohortReplay, and it starts a new run (a replay is never resumed)")
        self.replay = replay
        self._round_index = 0
        self.key_directory = Path(key_directory)
        if run_id is None:
            self.config = workload.bind(config) if workload is not None else config
            self.start_round = 0
        else:
            stored = repository.get_run(run_id)  # StorageError names a missing run
            self.run_tag = run_state_tag(run_id, stored.created_at)
            self.config = RunConfig.from_dict(stored.config)
            self.run_id = run_id
            if stored.status == "completed":
                raise ResumeError(f"run {run_id} already completed all {self.config.rounds} rounds")
            self.start_round = repository.next_round_index(run_id)
            if workload is not None:
                workload.check_matches(self.config)
            elif self.config.dataset == CUSTOM:
                raise ResumeError(f"run {run_id} trains a user's workload: resume it with the same Workload "
                                  "through the Python API (federation.workload)")
        self.workload = workload
        if workload is not None:
            workload.check_picklable()
        self.model = workload.global_model() if workload is not None else GlobalModel.for_config(self.config)
        self.dimension = self.model.parameter_count
        self.exclude_clients = frozenset(int(c) for c in exclude_clients)
        if any(not 0 <= c < self.config.clients for c in self.exclude_clients):
            raise ResumeError(f"exclude_clients must be client ids below {self.config.clients}")
        initial = None
        if initial_parameters is not None:
            if run_id is not None:
                raise ResumeError("initial_parameters start a new run; a resumed run restores its own model")
            initial = np.asarray(initial_parameters, dtype=np.float32)
            if initial.shape != (self.dimension,) or not np.all(np.isfinite(initial)):
                raise ResumeError(f"initial_parameters must be ({self.dimension},) finite floats")
            self.model.load_flat(initial)
        # LoCoDL's server pair (y, v), from the initial model (federation.locodl_run)
        self.locodl = LoCoDLCoordination(self.config, self.model.flat()) if self.config.trainer == "locodl" else None
        self.history_policy = HistoryPolicy(self.config.history_max_records)
        self.step = lattice_step(self.config, self.dimension)
        self.fedp3 = FedP3Rounds(self.config, self.model, self.step) if self.config.trainer == "fedp3" else None
        self.privacy = self.fedp3.privacy if self.fedp3 else PrivacyPlanner(self.config, self.dimension, self.step)
        self.bits = max(self.fedp3.bits.values()) if self.fedp3 else \
            secure_sum_bits(self.config, self.dimension, self.step, self.privacy.noise_share.std)
        if run_id is None:  # every check passed: only now does the run exist in storage
            info = repository.create_run(self.config.to_dict(), name=name)
            self.run_id = info.id
            self.run_tag = run_state_tag(info.id, info.created_at)
            if initial is not None:
                repository.save_checkpoint(self.run_id, CheckpointWrite(
                    {"flat": self.model.flat()}, codec="raw", source="initial", round_index=-1))
        self._simulation = np.random.default_rng(self.config.seed)  # dropouts/sampling: simulation only
        self.authority = simulation_authority(self.key_directory)
        self.client_policy = client_policy

    # --- set-up ------------------------------------------------------------------------------

    def _enrol(self, pool: WorkerPool) -> dict[int, bytes]:
        ids = list(range(self.config.clients))
        answers = pool.call("enrolment", {client_id: () for client_id in ids})
        failures = [a for a in answers.values() if isinstance(a, ClientFailure)]
        if failures:
            raise ResumeError(f"client {failures[0].client_id} could not load its keys: {failures[0].message}")
        if self.start_round == 0 and not self.repository.list_clients(self.run_id):
            self.repository.enrol_clients(self.run_id, [
                ClientEnrolment(client_id, public_key, commitment, self.config.client_budget, self.config.delta)
                for client_id, (public_key, commitment) in sorted(answers.items())
            ])
        enrolled = {c.client_id: c.identity_public_key for c in self.repository.list_clients(self.run_id)}
        for client_id, (public_key, _) in answers.items():
            if enrolled.get(client_id) != public_key:
                raise ResumeError(f"client {client_id}'s key file does not match its enrolled identity key")
        # The simulation's operator signs the directory with its authority key; every client
        # checks it against the key it pinned, as a networked client does (federation.authority).
        signed = sign_directory(self.authority, self.run_id, 1, enrolled)
        refused = [a for a in pool.call("set_directory", {client_id: (signed,) for client_id in ids}).values()
                   if isinstance(a, ClientFailure)]
        if refused:
            raise ResumeError(f"client {refused[0].client_id} refused the directory: {refused[0].message}")
        return enrolled

    def _restore(self) -> None:
        """Rebuild the model and the ledger's running totals from what was committed."""
        if self.start_round == 0:
            return
        restore_model(self.repository, self.run_id, self.model, self.config.server_learning_rate)
        if self.locodl is not None:  # every LoCoDL round checkpoints its (y, v) raw
            checkpoint = self.repository.load_checkpoint(self.run_id)
            if checkpoint is not None:
                self.locodl.restore(checkpoint.tensors)
                self.model.load_flat(self.locodl.model)
        self.privacy.restore(self.repository.ledger_entries(self.run_id))

    # --- the run -----------------------------------------------------------------------------

    def run(self, on_round: Callable[[RoundSummary], None] | None = None, *,
            max_rounds: int | None = None) -> RunSummary:
        """Run the remaining rounds (at most ``max_rounds`` of them: the run then stays
        ``running``, its noise still calibrated for all ``config.rounds``)."""
        summary = RunSummary(self.run_id, self.config, parameters=self.dimension, bits=self.bits,
                             lattice=self.config.lattice, float32_update_bytes=4 * self.dimension)
        self._restore()
        factory = ClientFactory(self.config, self.run_id, str(self.key_directory), self.run_tag, self.workload,
                                authority_public_key=self.authority.public_bytes, policy=self.client_policy,
                                learner_override=self.learner_override)
        self.repository.set_run_status(self.run_id, "running")
        stop = self.config.rounds if max_rounds is None else min(self.config.rounds, self.start_round + max_rounds)
        with WorkerPool(factory, range(self.config.clients), workers=self.config.workers) as pool:
            identity_keys = self._enrol(pool)
            self._reconfirm_records(pool)
            self._resend_mean_sent(pool)
            for round_index in range(self.start_round, stop):
                self._round_index = round_index
                result = self._round(pool, identity_keys, round_index)
                summary.rounds.append(result)
                if on_round is not None:
                    on_round(result)
        if stop == self.config.rounds:
            self.repository.set_run_status(self.run_id, "completed")
        return summary

    def _reconfirm_records(self, pool: WorkerPool) -> None:
        """After a crash between a round's commit and its confirmations, the clients whose record
        of the last committed round is stored still await confirmation: send it again."""
        if self.start_round == 0 or not self.config.history:
            return
        last = self.repository.get_round(self.run_id, self.start_round - 1)
        if last.status != "completed":
            return
        kept = self.history_policy.select(last.cohort, bytes.fromhex(last.parameters["round_seed"]), last.round_index)
        pool.call("confirm_record", {c: (last.round_index,) for c in sorted(kept & set(last.survivors))})

    def _resend_mean_sent(self, pool: WorkerPool) -> None:
        """LoCoDL, after a crash between a round's commit and its d̄ reaching the clients: send
        the stored d̄ again (clients that applied it already ignore it)."""
        if self.locodl is None or self.start_round == 0:
            return
        last = self.repository.get_round(self.run_id, self.start_round - 1)
        mean_sent = np.zeros(self.dimension)
        if last.status == "completed":
            stored = [a for a in self.repository.iter_aggregates(self.run_id, MEAN_SENT)
                      if a.round_index == last.round_index]
            mean_sent = stored[0].values
        included = set(last.survivors)
        pool.call("finish_round", {c: (last.round_index, mean_sent, c in included) for c in last.cohort})

    def _sample_cohort(self) -> list[int]:
        if self.replay is not None:  # the run's own cohort of this round (federation.cohort_replay)
            replayed = self.replay.cohort(self._round_index, self.exclude_clients)
            return replayed if not self.replay.released else \
                [c for c in replayed if self.privacy.can_participate(c)]
        active = [c.client_id for c in self.repository.list_clients(self.run_id, status="active")
                  if c.client_id not in self.exclude_clients]
        if self.locodl is not None:  # LoCoDL: everyone iterates every round; the budget decides who uploads
            return active
        eligible = [c for c in active if self.privacy.can_participate(c)]
        chosen = [c for c in eligible if self._simulation.random() < self.config.sample_rate]
        return chosen

    def _dropouts(self, cohort: list[int]) -> dict[str, set[int]]:
        """Which clients vanish before answering each stage (independently, rate per stage)."""
        drops: dict[str, set[int]] = {stage: set() for stage in STAGES}
        if self.replay is not None:  # the replayed cohort already is who stayed
            return drops
        alive = list(cohort)
        for stage in STAGES:
            for client_id in list(alive):
                if self._simulation.random() < self.config.dropout_rate / len(STAGES):
                    drops[stage].add(client_id)
                    alive.remove(client_id)
        return drops

    def _round(self, pool: WorkerPool, identity_keys: dict[int, bytes], round_index: int) -> RoundSummary:
        if self.fedp3 is not None:  # one secure sum per layer group: federation.fedp3_rounds
            return self.fedp3.run_round(self, pool, identity_keys, round_index)
        started = datetime.now(UTC)
        clock = time.perf_counter()
        cohort = self._sample_cohort()
        floor = self.privacy.noise_share.floor
        unreleased = self.replay is not None and not self.replay.released
        if unreleased:  # a sum that never leaves the scratch space: the replayed cohort is its floor
            floor = min(floor, len(cohort))
        if len(cohort) < max(2, floor):
            return self._abort(round_index, cohort, started, clock, {},
                               f"only {len(cohort)} eligible clients sampled; at least {max(2, floor)} needed")
        setup = open_round(self.config, round_index=round_index, cohort=cohort, dimension=self.dimension,
                           step=self.step, bits=self.bits, noise=self.privacy.noise_share,
                           survivor_floor=floor if unreleased else None)
        plan, round_config = setup.plan, setup.round_config
        plan_bytes = round_config.application_config
        server = SecAggServer(round_config, {c: identity_keys[c] for c in cohort})
        parameters, shared = self.model.flat(), ()
        if self.locodl is not None:
            parameters, v = self.locodl.begin(plan.round_seed)
            shared = (v,)
        # Who uploads a history record: a subset computed from the public seed (unlearning.history_policy).
        recorded = self.history_policy.select(cohort, plan.round_seed, round_index) if self.config.history \
            else frozenset()

        reports = pool.call("prepare", {c: (plan_bytes, parameters, c in recorded, *shared) for c in cohort})
        failed_training = {c for c, r in reports.items() if not isinstance(r, TrainReport)}
        drops = self._dropouts(cohort)
        drops[STAGES[0]] |= failed_training
        if self.locodl is not None:  # LoCoDL: a client past its budget iterates but does not upload
            drops[STAGES[0]] |= {c for c in cohort if not self.privacy.can_participate(c)}
        gone: set[int] = set()
        masked_input = 0
        upload = sum(len(r.history_record) for r in reports.values()  # sealed records travel with training
                     if isinstance(r, TrainReport) and r.history_record)
        charged: list[LedgerEntryWrite] = []
        stage_failures: list[ClientFailure] = []
        try:
            for stage in STAGES:
                gone |= drops[stage]
                requests = server.broadcast()
                if stage == MASKED_INPUT:  # charge before any client uploads its masked input
                    charged = self.privacy.charge(
                        [c for c in requests if c not in gone], round_index,
                        sample_events={c: reports[c].sample_events for c in requests if c not in gone})
                live = {c: (message,) for c, message in requests.items() if c not in gone}
                replies = pool.call("handle", live)
                for client_id, reply in replies.items():
                    if isinstance(reply, ClientFailure):
                        gone.add(client_id)
                        stage_failures.append(reply)
                        continue
                    try:
                        server.receive(client_id, reply)
                        upload += len(reply)
                        if stage == MASKED_INPUT:
                            masked_input += len(reply)
                    except ProtocolError:
                        gone.add(client_id)
                server.advance()
        except RoundAbortedError as error:
            refusals = [r for r in reports.values() if isinstance(r, ClientFailure)] + stage_failures
            reason = str(error)
            if refusals:  # say why clients stayed out (e.g. a budget they would pass)
                reason += f"; {len(refusals)} clients refused, e.g. {refusals[0].error_type}: {refusals[0].message}"
            return self._abort(round_index, cohort, started, clock, drops, reason, charged, pool)
        outcome = server.result
        survivors = sorted(outcome.survivors)
        try:
            if not unreleased:
                self.privacy.settle(len(survivors))
        except PrivacyError as error:  # fewer noise shares than calibrated: release nothing
            return self._abort(round_index, cohort, started, clock, drops, str(error), charged, pool)
        aggregate = aggregate_round(plan, outcome)
        extra_aggregates, mean_sent = (), None
        if self.locodl is not None:  # d̄ = Σ d_i / (2n) over the whole cohort (a missing d_i counts as 0)
            before = self.model.flat()
            total = plan.codec().decode_sum(outcome.sum, plan.round_seed, survivors, plan.dimension)
            mean_sent = self.locodl.finish(total, len(cohort))
            self.model.load_flat(self.locodl.model)
            mean_update = self.model.flat() - before
            extra_aggregates = (self.locodl.mean_sent_aggregate(mean_sent),)
        else:
            mean_update = aggregate.mean_update
            self.model.apply_update(mean_update, self.config.server_learning_rate)
        accuracy, loss = self.model.evaluate()
        weights = {c: 1.0 / len(survivors) for c in survivors}
        checkpoint = None
        if self.locodl is not None:
            checkpoint = self.locodl.checkpoint()
        elif checkpoint_due(self.config, round_index):
            checkpoint = CheckpointWrite({"flat": self.model.flat()})
        dropped = {stage: sorted(ids) for stage, ids in outcome.dropped.items() if ids}
        # Only survivors' records: a record whose update is not in the sum must not be stored.
        records = [SealedRecordWrite(c, reports[c].history_record, {"format_version": RECORD_FORMAT_VERSION},
                                     self.dimension)
                   for c in survivors if c in recorded and reports[c].history_record is not None]
        write = RoundWrite(
            round_index=round_index, cohort=cohort, survivors=survivors, started_at=started,
            finished_at=datetime.now(UTC), dropouts=dropped, client_weights=weights,
            parameters=public_parameters(setup),
            bytes_uploaded=upload,
            aggregates=(AggregateWrite(aggregate.lattice_sum, kind="lattice_sum"),
                        AggregateWrite(mean_update, kind="mean_update", name="mean_update"), *extra_aggregates),
            checkpoint=checkpoint, ledger_entries=charged, sealed_records=records,
            audit_details={"accuracy": accuracy, "survivors": len(survivors)},
        )
        self.repository.commit_round(self.run_id, write)
        if records:
            pool.call("confirm_record", {record.client_id: (round_index,) for record in records})
        if mean_sent is not None:
            pool.call("finish_round", {c: (round_index, mean_sent, c in outcome.survivors) for c in cohort})
        return RoundSummary(round_index, "completed", accuracy, loss, self.privacy.max_epsilon(), len(cohort),
                            len(survivors), len(cohort) - len(survivors), upload / max(1, len(cohort)),
                            time.perf_counter() - clock,
                            masked_input_bytes_per_client=masked_input / max(1, len(survivors)))

    def _abort(self, round_index, cohort, started, clock, drops, reason, charged=(), pool=None) -> RoundSummary:
        """Record an aborted round (nothing was revealed; charges made before upload stand).

        ``pool``: the clients already ran the round (LoCoDL then takes the step where every d_i
        is 0, on the server and on every client, and checkpoints it with the round)."""
        checkpoint = None
        if self.locodl is not None and pool is not None:
            mean_sent = self.locodl.finish(None, len(cohort))
            self.model.load_flat(self.locodl.model)
            checkpoint = self.locodl.checkpoint()
        if cohort:
            self.repository.commit_round(self.run_id, RoundWrite(
                round_index=round_index, cohort=cohort, survivors=[], started_at=started,
                finished_at=datetime.now(UTC), status="aborted", stage="aborted",
                dropouts={stage: sorted(ids) for stage, ids in drops.items() if ids},
                ledger_entries=list(charged), checkpoint=checkpoint, audit_details={"reason": reason}))
        if checkpoint is not None:
            pool.call("finish_round", {c: (round_index, mean_sent, False) for c in cohort})
        accuracy, loss = self.model.evaluate()
        return RoundSummary(round_index, "aborted", accuracy, loss, self.privacy.max_epsilon(), len(cohort), 0,
                            len(cohort), 0.0, time.perf_counter() - clock, abort_reason=reason)
