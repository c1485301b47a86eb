"""Training the remaining clients through the real system: retraining, the oracle, healing rounds.

``unlearning`` never imports this module: its deletion flow and verification take a
:class:`~unlearning.deletion.RemainingClientsTrainer`, and the caller (the CLI, a bench, a user's
script) builds a :class:`CoordinatorTrainer` and passes it in. Everything trains with the real
``federation.Coordinator`` (workers, SecAgg+, lattice codec, noise) in a **scratch space**: a
temporary folder holding a throw-away database and copies of the clients' key files, so neither
the run's database nor the clients' own state files (ledgers, record chains) are written by the
scratch run itself.

- **The oracle** (:meth:`CoordinatorTrainer.oracle`, what ``--verify`` compares against;
  docs/ALGORITHMS.md §6.3): from the last trained model version before the first round any
  excluded client's update entered (the seeded initial model if none), every later completed
  round of the run is replayed with *its own* survivors minus the excluded clients
  (``federation.cohort_replay``). Nothing of it is released or stored: the run's ledger, rounds
  and model versions are left exactly as they were, and its sums may hold fewer inputs than the
  noise floor (each client still adds the run's calibrated noise share).
- **Retraining** (:meth:`CoordinatorTrainer.retrain`, ``--method retrain``): the same replay, but
  its result becomes the run's model, so it is a release: the scratch planner starts from the
  run's ledger (a client over budget is left out), the floors hold, and the charges are appended
  to the run's ledger after the run's last round. On a run whose clients spent their budgets every
  round aborts and :class:`~unlearning.deletion_errors.RetrainError` says so.
- **Healing** (:meth:`CoordinatorTrainer.heal`): a few freshly sampled rounds of the remaining
  clients from the corrected model, charged like retraining.

Round seeds are fresh from the OS CSPRNG, as in every run, so two retrainings differ by the
training randomness.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federation.client_policy import ClientPolicy
from federation.cohort_replay import CohortReplay
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.workload import Workload
from storage.entities import LedgerEntryWrite
from storage.repositories import Repository
from unlearning.deletion import RetrainedModel, current_model
from unlearning.deletion_errors import RetrainError
from unlearning.errors import UnlearningInputError


@dataclass(frozen=True)
class _Plan:
    """What a retraining replays: from ``initial`` (None: the seeded initial model) after round
    ``start - 1``, the completed rounds ``rounds`` with their survivors ``cohorts``."""

    start: int
    initial: np.ndarray | None
    rounds: tuple[int, ...]
    cohorts: tuple[tuple[int, ...], ...]
    last_round: int


@dataclass(frozen=True)
class _Trained:
    parameters: np.ndarray
    completed: int
    charges: tuple[LedgerEntryWrite, ...]


def _copy_key_files(source: Path, target: Path, clients: int) -> None:
    """The clients' key files, and nothing else of their state, into the scratch folder."""
    for client_id in range(clients):
        key_file = source / f"client-{client_id}.key"
        if not key_file.is_file():
            raise RetrainError(f"no key file for client {client_id} in {source}; retraining runs every remaining "
                               "client from its key file (the run's --out/keys)")
        shutil.copy2(key_file, target / key_file.name)


@dataclass(frozen=True)
class CoordinatorTrainer:
    """Trains the remaining clients with ``federation.Coordinator`` in a scratch space.

    key_directory: the clients' key files (the run's ``--out``/keys); only ``client-N.key`` is
    read, copied into the scratch folder. workers: client worker processes (None: the run's
    setting). workload: the user's model and data of a run made with one
    (``federation.workload.Workload``), None for the run's named dataset and model.
    """

    key_directory: Path
    workers: int | None = None
    workload: Workload | None = None

    def _config(self, repository: Repository, run_id: int) -> RunConfig:
        config = RunConfig.from_dict(repository.get_run(run_id).config)
        # No history records in a scratch run: nobody will ever unlearn from it.
        return config.replace(history=False, workers=self.workers or config.workers)

    def _plan(self, repository: Repository, run_id: int, exclude: frozenset[int]) -> _Plan:
        last_round = repository.last_committed_round(run_id)
        if last_round is None:
            raise RetrainError(f"run {run_id} has no committed rounds to retrain")
        rounds = repository.list_rounds(run_id)
        first = min((r.round_index for r in rounds if exclude & set(r.survivors)), default=last_round + 1)
        checkpoint = repository.load_checkpoint(run_id, first - 1) if first > 0 else None
        while checkpoint is not None and checkpoint.info.source == "unlearning":
            # An unlearned model is approximate; the oracle starts only from trained ones.
            previous = checkpoint.info.round_index - 1
            checkpoint = repository.load_checkpoint(run_id, previous) if previous >= -1 else None
        start = 0 if checkpoint is None else checkpoint.info.round_index + 1
        initial = None if checkpoint is None else np.asarray(checkpoint.tensors["flat"], dtype=np.float32)
        replayed = [r for r in rounds if r.round_index >= start and r.status == "completed"]
        return _Plan(start, initial, tuple(r.round_index for r in replayed),
                     tuple(tuple(r.survivors) for r in replayed), last_round)

    def _train(self, repository: Repository, run_id: int, exclude: frozenset[int], initial: np.ndarray | None,
               rounds: int, *, replay: CohortReplay | None, charged: bool, purpose: str) -> _Trained:
        """``rounds`` rounds in a scratch space; ``charged``: the planner starts from the run's
        ledger and the scratch charges are returned (the caller appends them to the run's)."""
        config = self._config(repository, run_id)
        with tempfile.TemporaryDirectory(prefix="fedvault-scratch-") as directory:
            keys = Path(directory) / "keys"
            keys.mkdir(mode=0o700)
            _copy_key_files(Path(self.key_directory), keys, config.clients)
            # A scratch database thrown away afterwards: durability buys nothing here.
            scratch = Repository.open(str(Path(directory) / "scratch.db"), sqlite_synchronous="OFF")
            try:
                # The oracle's simulated clients accept its sums below the noise floor: they never leave.
                policy = None if replay is None or replay.released else \
                    ClientPolicy.accepting(config).replace(allow_floor_below_noise_calibration=True)
                coordinator = Coordinator(config, scratch, key_directory=keys, exclude_clients=exclude,
                                          initial_parameters=initial, workload=self.workload, replay=replay,
                                          client_policy=policy)
                if charged:
                    # Budgets carry over: the planner starts from what the run's ledger charged. The
                    # scratch rounds count from 0, so the run's charges are replayed as round 0's
                    # (the totals are what matter for eligibility, not the round numbers).
                    coordinator.privacy.restore(dataclasses.replace(entry, round_index=0)
                                                for entry in repository.ledger_entries(run_id))
                summary = coordinator.run(max_rounds=rounds)
                charges = tuple(LedgerEntryWrite(e.client_id, 0, e.stream, e.event_json, e.epsilon_after, e.delta)
                                for e in scratch.ledger_entries(coordinator.run_id)) if charged else ()
                completed = sum(1 for r in summary.rounds if r.status == "completed")
                reasons = sorted({r.abort_reason for r in summary.rounds if r.abort_reason})
                parameters = coordinator.model.flat()
            finally:
                scratch.close()
        if completed == 0:
            shown = "; ".join(reasons[:2]) + (f"; {len(reasons) - 2} more reasons" if len(reasons) > 2 else "")
            raise RetrainError(f"every one of the {rounds} {purpose} rounds aborted ({shown}): "
                               "too few remaining clients for the run's SecAgg threshold or noise floor, or "
                               "their privacy budgets are spent")
        return _Trained(parameters, completed, charges)

    def _append_charges(self, repository: Repository, run_id: int, charges: tuple[LedgerEntryWrite, ...]) -> None:
        if not charges:
            return
        # Charged at the run's last round or later (each client's ledger chain is append-only).
        after = max([0, repository.last_committed_round(run_id) or 0,
                     *(e.round_index for e in repository.ledger_entries(run_id))])
        repository.append_ledger_entries(run_id, [dataclasses.replace(c, round_index=after) for c in charges])

    def _replayed(self, repository: Repository, run_id: int, exclude: Collection[int], *,
                  released: bool) -> RetrainedModel:
        exclude = frozenset(int(c) for c in exclude)
        if not exclude:
            raise UnlearningInputError("retraining needs at least one client to exclude")
        started = time.perf_counter()
        plan = self._plan(repository, run_id, exclude)
        if not plan.rounds:  # no excluded update entered any round: the current model is the oracle
            parameters, _ = current_model(repository, run_id)
            return RetrainedModel(parameters, plan.last_round, plan.start, 0, 0, time.perf_counter() - started)
        purpose = "retraining" if released else "oracle"
        trained = self._train(repository, run_id, exclude, plan.initial, len(plan.rounds),
                              replay=CohortReplay(plan.cohorts, released=released), charged=released,
                              purpose=purpose)
        if released:
            self._append_charges(repository, run_id, trained.charges)
        return RetrainedModel(trained.parameters, plan.last_round, plan.start, len(plan.rounds), trained.completed,
                              time.perf_counter() - started)

    def oracle(self, repository: Repository, run_id: int, exclude: Collection[int]) -> RetrainedModel:
        """The verification oracle: run ``run_id``'s completed rounds replayed with their own
        survivors minus ``exclude``, entirely in a scratch space (see the module docstring);
        the run's database is only read."""
        return self._replayed(repository, run_id, exclude, released=False)

    def retrain(self, repository: Repository, run_id: int, exclude: Collection[int]) -> RetrainedModel:
        """Retrain run ``run_id`` without ``exclude`` as a release (``--method retrain``): the
        oracle's replay under every privacy rule, charged to the run's ledger."""
        return self._replayed(repository, run_id, exclude, released=True)

    def heal(self, repository: Repository, run_id: int, parameters: np.ndarray, rounds: int,
             exclude: Collection[int]) -> np.ndarray:
        """``rounds`` federated rounds of the clients not in ``exclude``, from ``parameters``,
        charged to the run's ledger (RetrainError when every one of them aborts: nothing healed,
        nothing charged)."""
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise UnlearningInputError(f"rounds must be a positive int, got {rounds!r}")
        trained = self._train(repository, run_id, frozenset(int(c) for c in exclude),
                              np.asarray(parameters, dtype=np.float32), rounds, replay=None, charged=True,
                              purpose="healing")
        self._append_charges(repository, run_id, trained.charges)
        return trained.parameters
