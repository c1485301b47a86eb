"""Training the remaining clients through the real system: the exact oracle and healing rounds.

This is the one module of ``unlearning`` that drives ``federation`` (its coordinator, workers,
SecAgg+ and codec): the oracle is *defined* as the run's own training without the client, so it
must run the same code. It sits above federation like the CLI does; nothing in federation imports
it, and :mod:`unlearning.deletion` receives it as a :class:`~unlearning.deletion.RemainingClientsTrainer`.

- **Retraining** (docs/ALGORITHMS.md §6.3): from the last stored model version before the first round
  any excluded client's update entered (the seeded initial model if none), the run's committed
  rounds are trained again with the same settings, every excluded client left out, into a
  temporary database. The noise stays calibrated for the run's full schedule (same per-round
  noise), and the main database records only the resulting model (and, with DP noise, the new
  privacy charges).
- **Healing**: a few such rounds from the corrected model.

Retraining and healing release new functions of the remaining clients' data. With integer DP
noise the temporary run's privacy planner starts from the main ledger (a client over budget is
not sampled) and its charges are appended to the main ledger, so ε stays recomputable there.
Round seeds are fresh from the OS CSPRNG, as in every run, so two retrainings differ by the
training randomness.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from federation.backdoor import backdoor_for, client_data_for
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.evaluation import data_for, model_for
from federation.parameters import load_parameters
from federation.workload import Workload
from storage.entities import LedgerEntryWrite
from storage.repositories import Repository
from unlearning.deletion import RetrainedModel, current_model
from unlearning.deletion_errors import RetrainError
from unlearning.errors import UnlearningInputError
from unlearning.verification import Backdoor, VerificationReport, verify_unlearning


def _temporary_repository(directory: str) -> Repository:
    # A scratch database thrown away afterwards: durability buys nothing here.
    return Repository.open(str(Path(directory) / "oracle.db"), sqlite_synchronous="OFF")


@dataclass(frozen=True)
class CoordinatorTrainer:
    """Trains the remaining clients with ``federation.Coordinator``.

    key_directory: the clients' key files (the run's ``--out``/keys). workers: client worker
    processes (None: the run's setting). workload: the user's model and data of a run made with
    one (``federation.workload.Workload``), None for the run's named dataset and model.
    """

    key_directory: Path
    workers: int | None = None
    workload: Workload | None = None

    def _config(self, repository: Repository, run_id: int) -> RunConfig:
        config = RunConfig.from_dict(repository.get_run(run_id).config)
        # No history records in a scratch run: nobody will ever unlearn from it.
        return config.replace(history=False, workers=self.workers)

    def _train(self, repository: Repository, run_id: int, config: RunConfig, exclude: Collection[int],
               initial: np.ndarray | None, rounds: int, purpose: str) -> tuple[np.ndarray, int]:
        last_round = repository.last_committed_round(run_id)
        with tempfile.TemporaryDirectory(prefix="fedvault-oracle-") as directory:
            scratch = _temporary_repository(directory)
            try:
                coordinator = Coordinator(config, scratch, key_directory=Path(self.key_directory),
                                          exclude_clients=exclude, initial_parameters=initial,
                                          workload=self.workload)
                # Budgets carry over: the planner starts from what the main ledger charged.
                coordinator.privacy.restore(repository.ledger_entries(run_id))
                summary = coordinator.run(max_rounds=rounds)
                charges = [LedgerEntryWrite(e.client_id, max(last_round or 0, 0), e.stream, e.event_json,
                                            e.epsilon_after, e.delta)
                           for e in scratch.ledger_entries(coordinator.run_id)]
                completed = sum(1 for r in summary.rounds if r.status == "completed")
                reasons = sorted({r.abort_reason for r in summary.rounds if r.abort_reason})
                parameters = coordinator.model.flat()
            finally:
                scratch.close()
        if charges:
            repository.append_ledger_entries(run_id, charges)
        if completed == 0:
            raise RetrainError(f"every one of the {rounds} {purpose} rounds aborted ({'; '.join(reasons)}): "
                               "too few remaining clients for the run's SecAgg threshold or noise floor, or "
                               "their privacy budgets are spent")
        return parameters, completed

    def retrain(self, repository: Repository, run_id: int, exclude: Collection[int]) -> RetrainedModel:
        """Retrain run ``run_id``'s committed rounds without ``exclude`` (see the module docstring)."""
        exclude = frozenset(int(c) for c in exclude)
        if not exclude:
            raise UnlearningInputError("retraining needs at least one client to exclude")
        started = time.perf_counter()
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
        count = last_round + 1 - start
        if count == 0:  # no excluded update entered any round: the current model is the oracle
            parameters, _ = current_model(repository, run_id)
            return RetrainedModel(parameters, last_round, start, 0, 0, time.perf_counter() - started)
        parameters, completed = self._train(repository, run_id, self._config(repository, run_id), exclude,
                                            initial, count, "retraining")
        return RetrainedModel(parameters, last_round, start, count, completed, time.perf_counter() - started)

    def heal(self, repository: Repository, run_id: int, parameters: np.ndarray, rounds: int,
             exclude: Collection[int]) -> np.ndarray:
        """``rounds`` federated rounds of the clients not in ``exclude``, from ``parameters``
        (RetrainError when every one of them aborts: nothing healed)."""
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise UnlearningInputError(f"rounds must be a positive int, got {rounds!r}")
        healed, _ = self._train(repository, run_id, self._config(repository, run_id), exclude,
                                np.asarray(parameters, dtype=np.float32), rounds, "healing")
        return healed


# --- verification against the oracle ------------------------------------------------------------


def _tensors(examples) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(np.asarray(examples.features)), torch.tensor(np.asarray(examples.labels))


def verify_against_oracle(repository: Repository, run_id: int, client_id: int, unlearned: np.ndarray,
                          oracle: RetrainedModel) -> VerificationReport:
    """docs/ALGORITHMS.md §6.6 metrics of the unlearned parameters against the retrained oracle.

    Test accuracy and backdoor success on the run's test set; accuracy and loss-threshold MIA
    AUC on the forgotten client's training data (as it trained on it, trigger copies included)
    against the test set as non-members; ‖w_u − w_r‖/‖w_r‖ and the prediction divergence.
    """
    config = RunConfig.from_dict(repository.get_run(run_id).config)
    data = data_for(config)
    models = []
    for parameters in (unlearned, oracle.parameters):
        module = model_for(config, data)
        load_parameters(module, np.asarray(parameters, dtype=np.float32))
        models.append(module)
    test = _tensors(data.test)
    forgotten = _tensors(client_data_for(config, client_id))
    planted = backdoor_for(config)
    backdoor = None
    if planted is not None and planted.client_id == client_id:
        backdoor = Backdoor(trigger=planted.stamp, target_label=planted.target_label)
    return verify_unlearning(models[0], models[1], test, forgotten, test, backdoor)


VERIFIED_EVENT = "unlearning.verified"


def verification_payload(report: VerificationReport) -> dict:
    """The report as a JSON object (what ``--json`` prints and the audit entry records)."""
    def model(entry) -> dict:
        return {"test_accuracy": entry.test_accuracy, "forgotten_accuracy": entry.forgotten_accuracy,
                "membership_auc": entry.membership_auc, "backdoor_success": entry.backdoor_success}

    return {"unlearned": model(report.unlearned), "retrained": model(report.retrained),
            "relative_distance": report.relative_distance,
            "forgotten_prediction_divergence": report.forgotten_prediction_divergence}


def verify_model_version(repository: Repository, run_id: int, client_id: int, model_version: int,
                         trainer: CoordinatorTrainer) -> tuple[VerificationReport, RetrainedModel]:
    """Retrain the oracle without every deleted client (``client_id`` included), compare model
    version ``model_version`` with it, and append ``unlearning.verified`` to the audit log."""
    info = next((c for c in repository.list_checkpoints(run_id) if c.model_version == model_version), None)
    if info is None:
        raise UnlearningInputError(f"run {run_id} has no model version {model_version}")
    loaded = repository.load_checkpoint(run_id, info.round_index)
    if loaded is None or loaded.info.model_version != model_version:
        raise UnlearningInputError(f"model version {model_version} is no longer the newest at round "
                                   f"{info.round_index}; verify the newest one")
    excluded = {c.client_id for c in repository.list_clients(run_id, status="deleted")} | {client_id}
    oracle = trainer.retrain(repository, run_id, excluded)
    report = verify_against_oracle(repository, run_id, client_id, loaded.tensors["flat"], oracle)
    repository.append_audit(run_id, VERIFIED_EVENT,
                            {"model_version": model_version, "oracle_rounds": oracle.rounds_run,
                             "oracle_start_round": oracle.start_round, **verification_payload(report)},
                            client_id=client_id)
    return report, oracle
