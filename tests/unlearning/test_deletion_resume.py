"""Specification: the deletion flow survives a crash between any two of its steps; running it again
resumes the same request and stores bit-for-bit the model an uninterrupted run stores."""

import numpy as np
import pytest

import unlearning.deletion as deletion
from unlearning.deletion import UnlearningSettings, unlearn_client
from unlearning.deletion_errors import DeletionRequestError
from unlearning.requests import sign_deletion_request

from .conftest import copy_database

CLIENT = 3
STEPS = ("_begin", "_open", "_unlearn", "_shred", "_record_completion")


class InjectedCrash(Exception):
    pass


def _request(run):
    return sign_deletion_request(run.identities[CLIENT], run.secrets[CLIENT], run.run_id, CLIENT)


def _final_state(repository, run_id):
    checkpoint = repository.load_checkpoint(run_id)
    requests = repository.list_deletion_requests(run_id, CLIENT)
    return {
        "model": checkpoint.tensors["flat"],
        "versions": [c.model_version for c in repository.list_checkpoints(run_id) if c.source == "unlearning"],
        "requests": [r.state for r in requests],
        "records": repository.count_sealed_records(run_id, CLIENT),
        "status": repository.get_client(run_id, CLIENT).status,
        "completed": len(repository.audit_entries(run_id, event="unlearning.completed")),
        "audit_ok": repository.verify_audit_log(run_id).ok,
    }


@pytest.fixture(scope="module")
def uninterrupted(synthetic_template, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("uninterrupted") / "run.db")
    copy_database(synthetic_template.path, path)
    from storage import Repository

    with Repository.open(path) as repository:
        unlearn_client(repository, _request(synthetic_template))
        return _final_state(repository, synthetic_template.run_id)


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_before_any_step_resumes_to_the_uninterrupted_result(synthetic_run, uninterrupted, monkeypatch, step):
    def crash(*args, **kwargs):
        raise InjectedCrash(step)

    with synthetic_run.open() as repository:
        with monkeypatch.context() as patch:
            patch.setattr(deletion, step, crash)
            with pytest.raises(InjectedCrash):
                unlearn_client(repository, _request(synthetic_run))
        interrupted = repository.list_deletion_requests(synthetic_run.run_id, CLIENT)
        assert all(r.state != "failed" for r in interrupted)  # a crash is not a failure: it resumes
        outcome = unlearn_client(repository, _request(synthetic_run))
        final = _final_state(repository, synthetic_run.run_id)
    assert outcome.resumed == (step != "_begin")
    assert np.array_equal(final.pop("model").view(np.uint32), uninterrupted["model"].view(np.uint32))
    assert final == {key: value for key, value in uninterrupted.items() if key != "model"}
    assert final["requests"] == ["shredded"] and final["records"] == 0 and final["completed"] == 1


def test_a_request_in_progress_resumes_only_with_its_own_settings(synthetic_run, monkeypatch):
    with synthetic_run.open() as repository:
        with monkeypatch.context() as patch:
            patch.setattr(deletion, "_unlearn", lambda *a, **k: (_ for _ in ()).throw(InjectedCrash()))
            with pytest.raises(InjectedCrash):
                unlearn_client(repository, _request(synthetic_run), settings=UnlearningSettings(alpha=0.2))
        with pytest.raises(DeletionRequestError, match="same settings"):
            unlearn_client(repository, _request(synthetic_run), settings=UnlearningSettings(alpha=0.07))
        outcome = unlearn_client(repository, _request(synthetic_run), settings=UnlearningSettings(alpha=0.2))
        assert outcome.resumed and repository.get_deletion_request(outcome.request_id).state == "shredded"
