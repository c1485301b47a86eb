"""Specification of the deletion flow on a stored run: the streamed correction equals the formula,
the client's records and secret are gone afterwards, later rounds refuse it, failures fail
closed."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from storage import RoundWrite
from storage.errors import ClientDeletedError
from unlearning.deletion import UnlearningSettings, current_model, medu_correction, unlearn_client
from unlearning.deletion_errors import IncompleteHistoryError, RetrainError
from unlearning.errors import UnlearningConfigurationError
from unlearning.records import open_history
from unlearning.requests import sign_deletion_request

from .conftest import CLIENTS, DROPPED, ROUNDS


def _request(run, client):
    return sign_deletion_request(run.identities[client], run.secrets[client], run.run_id, client)


def _model_before(repository, run_id):
    """w_T computed independently: the round-2 checkpoint plus the later stored mean updates."""
    model = np.asarray(repository.load_checkpoint(run_id, 2).tensors["flat"], dtype=np.float32)
    for t in range(3, ROUNDS):
        model = model + np.float32(1.0) * repository.load_aggregates(run_id, t)["mean_update"].values
    return model


def _direct_correction(run, client, updates, alpha, theta):
    """θ·Σ_t (Π_{s>t} β_s)·p_t·(−Δ_t), each product written out (no streaming)."""
    betas = {t: 1.0 - alpha * sum(1.0 / len(run.survivors[t]) for k in run.survivors[t] if k != client)
             for t in range(ROUNDS)}
    total = np.zeros_like(next(iter(updates.values())))
    for t, update in updates.items():
        decay = np.prod([betas[s] for s in range(t + 1, ROUNDS)])
        total += decay * (1.0 / len(run.survivors[t])) * (-update)
    return theta * total, betas


def _opened(repository, run, client):
    stored = [(r.round_index, r.ciphertext) for r in repository.iter_sealed_records(run.run_id, client)]
    commitment = repository.get_client(run.run_id, client).history_commitment
    return {o.round_index: o for o in open_history(stored, history_secret=run.secrets[client], commitment=commitment,
                                                   run_id=run.run_id, client_id=client,
                                                   config=run.record_config())}


def test_current_model_replays_stored_updates_after_the_newest_checkpoint(synthetic_run):
    with synthetic_run.open() as repository:
        model, last = current_model(repository, synthetic_run.run_id)
        assert last == ROUNDS - 1
        assert np.array_equal(model, _model_before(repository, synthetic_run.run_id))


@pytest.mark.parametrize("client, alpha, theta", [(3, 0.07, 1.0), (0, 0.3, 0.5), (2, 0.0, 1.0)])
def test_streamed_correction_over_stored_records_equals_the_direct_formula(synthetic_run, client, alpha, theta):
    run = synthetic_run
    with run.open() as repository:
        before = _model_before(repository, run.run_id)
        opened = _opened(repository, run, client)
        direct, _ = _direct_correction(run, client, {t: o.update for t, o in opened.items()}, alpha, theta)
        outcome = unlearn_client(repository, _request(run, client), settings=UnlearningSettings(rule="fast-fedul", alpha=alpha,
                                                                               theta=theta))
        stored = repository.load_checkpoint(run.run_id)
    assert stored.info.source == "unlearning" and stored.info.model_version == outcome.model_version
    assert stored.info.round_index == ROUNDS - 1
    expected = (before.astype(np.float64) + direct).astype(np.float32)
    assert np.allclose(stored.tensors["flat"], expected, rtol=0, atol=2e-6)
    assert outcome.records_opened == len(opened) == ROUNDS - (1 if client in DROPPED.values() else 0)


def test_correction_from_compressed_records_is_within_the_propagated_lattice_bound(synthetic_run):
    run, client, alpha = synthetic_run, 3, 0.07
    with run.open() as repository:
        opened = _opened(repository, run, client)
        streamed = medu_correction(repository, run.run_id, client, run.secrets[client], rule="fast-fedul",
                                   alpha=alpha)
        before = _model_before(repository, run.run_id)
    true, betas = _direct_correction(run, client, {t: run.updates[(t, client)] for t in opened}, alpha, 1.0)
    bound = sum(np.prod([betas[s] for s in range(t + 1, ROUNDS)]) / len(run.survivors[t]) * o.error_bound
                for t, o in opened.items())
    error = np.abs(streamed.parameters.astype(np.float64) - (before.astype(np.float64) + true))
    assert bound > 0 and np.max(error) <= bound + 1e-5  # 1e-5: float32 storage of the model
    # The bound is not vacuous: the correction is far larger than its error.
    assert np.linalg.norm(true) > 5 * np.linalg.norm(error)


def test_after_unlearning_the_records_are_gone_the_client_refused_and_the_event_audited(synthetic_run):
    run, client = synthetic_run, 3
    with run.open() as repository:
        others = {c: repository.count_sealed_records(run.run_id, c) for c in range(CLIENTS) if c != client}
        outcome = unlearn_client(repository, _request(run, client))
        assert outcome.records_shredded == ROUNDS and not outcome.already_done
        assert repository.count_sealed_records(run.run_id, client) == 0
        assert {c: repository.count_sealed_records(run.run_id, c) for c in others} == others
        assert repository.get_client(run.run_id, client).status == "deleted"
        assert repository.get_deletion_request(outcome.request_id).state == "shredded"
        now = datetime.now(UTC)
        with pytest.raises(ClientDeletedError):
            repository.commit_round(run.run_id, RoundWrite(round_index=ROUNDS, cohort=list(range(CLIENTS)),
                                                           survivors=[], started_at=now, finished_at=now,
                                                           status="aborted", stage="aborted"))
        events = [e.event for e in repository.audit_entries(run.run_id)]
        assert repository.verify_audit_log(run.run_id).ok
    tail = events[events.index("deletion.requested"):]
    for event in ("deletion.opened", "checkpoint.saved", "deletion.unlearned", "records.shredded",
                  "client.deleted", "deletion.shredded", "unlearning.completed"):
        assert event in tail
    # The server forgot the released secret: it is nowhere in the database files, raw or hex.
    secret = run.secrets[client]
    for path in Path(run.path).parent.glob("run.db*"):
        data = path.read_bytes()
        assert secret not in data and secret.hex().encode() not in data


def test_repeating_a_finished_request_reports_it_and_does_nothing_new(synthetic_run):
    run = synthetic_run
    with run.open() as repository:
        first = unlearn_client(repository, _request(run, 2))
        checkpoints = repository.list_checkpoints(run.run_id)
        second = unlearn_client(repository, _request(run, 2))
        assert second.already_done and second.model_version == first.model_version
        assert repository.list_checkpoints(run.run_id) == checkpoints
        assert len(repository.audit_entries(run.run_id, event="unlearning.completed")) == 1


def test_a_survivor_without_a_record_cannot_be_corrected_and_the_request_fails_closed(synthetic_run):
    run, client = synthetic_run, 1  # its round-3 update entered the sum without a stored record
    with run.open() as repository:
        checkpoints = repository.list_checkpoints(run.run_id)
        with pytest.raises(IncompleteHistoryError, match="rounds 3"):
            unlearn_client(repository, _request(run, client))
        (request,) = repository.list_deletion_requests(run.run_id, client)
        assert request.state == "failed" and "IncompleteHistoryError" in request.reason
        assert repository.list_checkpoints(run.run_id) == checkpoints
        assert repository.count_sealed_records(run.run_id, client) == ROUNDS - 1
        assert repository.get_client(run.run_id, client).status == "active"


def test_retraining_and_healing_need_a_trainer(synthetic_run):
    run = synthetic_run
    with run.open() as repository:
        for settings in (UnlearningSettings(method="retrain"), UnlearningSettings(heal_rounds=2)):
            with pytest.raises(UnlearningConfigurationError, match="trainer"):
                unlearn_client(repository, _request(run, 3), settings=settings)
        assert repository.list_deletion_requests(run.run_id) == []


@pytest.mark.parametrize("changes", [{"method": "rewind"}, {"alpha": -1.0}, {"heal_rounds": -1},
                                     {"method": "retrain", "heal_rounds": 2}, {"theta": float("nan")}])
def test_settings_are_validated(changes):
    with pytest.raises(UnlearningConfigurationError):
        UnlearningSettings(**changes)


class _TrainerWithoutClients:
    """A RemainingClientsTrainer whose every round aborts (as CoordinatorTrainer does when too few
    clients remain)."""

    def heal(self, repository, run_id, parameters, rounds, exclude):
        raise RetrainError(f"every one of the {rounds} healing rounds aborted (only 1 eligible client)")

    def retrain(self, repository, run_id, exclude):
        raise RetrainError("every one of the 6 retraining rounds aborted (only 1 eligible client)")


@pytest.mark.parametrize("settings", [UnlearningSettings(heal_rounds=2), UnlearningSettings(method="retrain")])
def test_training_that_cannot_run_fails_the_request_so_another_can_follow(synthetic_run, settings):
    run = synthetic_run
    with run.open() as repository:
        checkpoints = repository.list_checkpoints(run.run_id)
        with pytest.raises(RetrainError):
            unlearn_client(repository, _request(run, 3), settings=settings, trainer=_TrainerWithoutClients())
        (request,) = repository.list_deletion_requests(run.run_id, 3)
        assert request.state == "failed" and repository.list_checkpoints(run.run_id) == checkpoints
        assert unlearn_client(repository, _request(run, 3)).request_id != request.id  # a new request succeeds
