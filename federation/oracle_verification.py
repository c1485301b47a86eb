"""Verification of an unlearned model against the retrained oracle (docs/ALGORITHMS.md §6.6), for
runs of the named datasets and models and for runs made with a user's ``Workload``.

The metrics are :func:`unlearning.verification.verify_unlearning`'s; this module supplies what
only the running system knows: the run's model architecture, its test set, the forgotten
client's training data (as it trained on it, trigger copies included) and its planted backdoor,
and the oracle itself (:meth:`federation.retraining.CoordinatorTrainer.oracle`, trained in a
scratch space: the run's ledger, model versions and rounds are only read). The one thing
written to the run's database is the verification's own evidence, the audit entry
``unlearning.verified``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.utils.data import DataLoader

from federation.backdoor import backdoor_for, client_data_for
from federation.config import CUSTOM, RunConfig
from federation.datasets import Examples
from federation.evaluation import data_for, model_for
from federation.parameters import load_parameters
from federation.retraining import CoordinatorTrainer
from federation.workload import Workload
from storage.repositories import Repository
from unlearning.deletion import RetrainedModel
from unlearning.errors import UnlearningInputError
from unlearning.verification import Backdoor, VerificationReport, verify_unlearning

VERIFIED_EVENT = "unlearning.verified"


def _tensors(data: Examples | DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, int64 labels) of examples or of every batch a loader yields, in its order."""
    if isinstance(data, Examples):
        return torch.tensor(np.asarray(data.features)), torch.tensor(np.asarray(data.labels))
    features, labels = [], []
    for batch in data:
        if not isinstance(batch, list | tuple) or len(batch) < 2:
            raise UnlearningInputError("a workload loader must yield (features, labels) batches to be verified")
        features.append(torch.as_tensor(batch[0]).float())
        labels.append(torch.as_tensor(batch[1]).long())
    if not features:
        raise UnlearningInputError("a workload loader yielded no batches")
    return torch.cat(features), torch.cat(labels)


def _check_workload(config: RunConfig, workload: Workload | None) -> None:
    if config.dataset == CUSTOM and workload is None:
        raise UnlearningInputError("the run trains a user's workload: verify it with the same Workload "
                                   "(CoordinatorTrainer(..., workload=workload))")
    if workload is not None:
        workload.check_matches(config)


def _subjects(config: RunConfig, client_id: int, workload: Workload | None):
    """(a fresh model module, test data, the forgotten client's data, its backdoor or None)."""
    _check_workload(config, workload)
    if config.dataset == CUSTOM:
        return (lambda: copy.deepcopy(workload.model)), _tensors(workload.test), \
            _tensors(workload.clients[client_id]), None
    data = data_for(config)
    planted = backdoor_for(config)
    backdoor = None
    if planted is not None and planted.client_id == client_id:
        backdoor = Backdoor(trigger=planted.stamp, target_label=planted.target_label)
    return (lambda: model_for(config, data)), _tensors(data.test), _tensors(client_data_for(config, client_id)), \
        backdoor


def verify_against_oracle(repository: Repository, run_id: int, client_id: int, unlearned: np.ndarray,
                          oracle: RetrainedModel, workload: Workload | None = None) -> VerificationReport:
    """docs/ALGORITHMS.md §6.6 metrics of the unlearned parameters against the retrained oracle.

    Test accuracy and backdoor success (named datasets with a planted backdoor) on the run's test
    set; accuracy and loss-threshold MIA AUC on the forgotten client's training data against the
    test set as non-members; ‖w_u − w_r‖/‖w_r‖ and the prediction divergence. ``workload``: the
    run's Workload when it was made with one (required then).
    """
    config = RunConfig.from_dict(repository.get_run(run_id).config)
    build, test, forgotten, backdoor = _subjects(config, client_id, workload)
    models = []
    for parameters in (unlearned, oracle.parameters):
        module = build()
        load_parameters(module, np.asarray(parameters, dtype=np.float32))
        models.append(module)
    return verify_unlearning(models[0], models[1], test, forgotten, test, backdoor)


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
    """Build the oracle without every deleted client (``client_id`` included) in a scratch space,
    compare model version ``model_version`` with it, and append ``unlearning.verified`` to the
    run's audit log (the only write)."""
    info = next((c for c in repository.list_checkpoints(run_id) if c.model_version == model_version), None)
    if info is None:
        raise UnlearningInputError(f"run {run_id} has no model version {model_version}")
    loaded = repository.load_checkpoint(run_id, info.round_index)
    if loaded is None or loaded.info.model_version != model_version:
        raise UnlearningInputError(f"model version {model_version} is no longer the newest at round "
                                   f"{info.round_index}; verify the newest one")
    _check_workload(RunConfig.from_dict(repository.get_run(run_id).config), trainer.workload)
    excluded = {c.client_id for c in repository.list_clients(run_id, status="deleted")} | {client_id}
    oracle = trainer.oracle(repository, run_id, excluded)
    report = verify_against_oracle(repository, run_id, client_id, loaded.tensors["flat"], oracle,
                                   workload=trainer.workload)
    repository.append_audit(run_id, VERIFIED_EVENT,
                            {"model_version": model_version, "oracle_rounds": oracle.rounds_run,
                             "oracle_start_round": oracle.start_round, **verification_payload(report)},
                            client_id=client_id)
    return report, oracle
