"""Specification: every deletion request ends. An error before the new model is stored fails the
request with its reason and applies nothing; an error after it leaves the request ``unlearned``,
finished by running the flow again; a crash (KeyboardInterrupt, SIGKILL) leaves it where it
stopped, and running the flow again stores bit-for-bit the model an uninterrupted run stores;
a request that is not to be resumed is cancelled. The database stays consistent throughout."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import unlearning.deletion as deletion
from storage import Repository
from unlearning.deletion import UnlearningSettings, cancel_deletion_request, unlearn_client
from unlearning.deletion_errors import DeletionRequestError
from unlearning.requests import DeletionRequest, sign_deletion_request

from .conftest import ROUNDS, copy_database

CLIENT = 3
STEPS = ("_begin", "_open", "_unlearn", "_shred", "_record_completion")


class InjectedError(Exception):
    pass


def _request(run):
    return sign_deletion_request(run.identities[CLIENT], run.secrets[CLIENT], run.run_id, CLIENT)


def _final_state(repository, run_id):
    checkpoint = repository.load_checkpoint(run_id)
    requests = repository.list_deletion_requests(run_id, CLIENT)
    return {
        "model": checkpoint.tensors["flat"],
        "versions": len([c for c in repository.list_checkpoints(run_id) if c.source == "unlearning"]),
        "requests": [r.state for r in requests],
        "records": repository.count_sealed_records(run_id, CLIENT),
        "status": repository.get_client(run_id, CLIENT).status,
        "completed": len(repository.audit_entries(run_id, event="unlearning.completed")),
        "audit_ok": repository.verify_audit_log(run_id).ok,
    }


def _assert_nothing_applied(repository, run_id):
    """The consistent state of a request that failed before its model was stored."""
    assert [c for c in repository.list_checkpoints(run_id) if c.source == "unlearning"] == []
    assert repository.count_sealed_records(run_id, CLIENT) == ROUNDS  # it survived and recorded every round
    assert repository.get_client(run_id, CLIENT).status == "active"
    assert repository.audit_entries(run_id, event="unlearning.completed") == []
    assert repository.verify_audit_log(run_id).ok


@pytest.fixture(scope="module")
def uninterrupted(synthetic_template, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("uninterrupted") / "run.db")
    copy_database(synthetic_template.path, path)
    with Repository.open(path) as repository:
        unlearn_client(repository, _request(synthetic_template))
        return _final_state(repository, synthetic_template.run_id)


def _matches_uninterrupted(final, uninterrupted, requests):
    assert np.array_equal(final.pop("model").view(np.uint32), uninterrupted["model"].view(np.uint32))
    expected = {key: value for key, value in uninterrupted.items() if key != "model"}
    assert final == {**expected, "requests": requests}


def _injected(monkeypatch, step, when, error):
    original = getattr(deletion, step)

    def step_with_error(*args, **kwargs):
        if when == "after":
            original(*args, **kwargs)
        raise error

    monkeypatch.setattr(deletion, step, step_with_error)


#: (step, when) -> the request's state after the injected error; "failed" ones applied nothing.
AFTER_ERROR = {
    ("_begin", "before"): None, ("_begin", "after"): "requested",
    ("_open", "before"): "failed", ("_open", "after"): "failed",
    ("_unlearn", "before"): "failed", ("_unlearn", "after"): "unlearned",
    ("_shred", "before"): "unlearned", ("_shred", "after"): "shredded",
    ("_record_completion", "before"): "shredded", ("_record_completion", "after"): "shredded",
}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", STEPS)
def test_an_error_at_any_step_fails_the_request_or_leaves_it_finishable(synthetic_run, uninterrupted, monkeypatch,
                                                                       step, when):
    run_id = synthetic_run.run_id
    expected = AFTER_ERROR[(step, when)]
    with synthetic_run.open() as repository:
        with monkeypatch.context() as patch:
            _injected(patch, step, when, InjectedError(f"{when} {step}"))
            with pytest.raises(InjectedError):
                unlearn_client(repository, _request(synthetic_run))
        requests = repository.list_deletion_requests(run_id, CLIENT)
        assert [r.state for r in requests] == ([] if expected is None else [expected])
        if expected == "failed":
            assert requests[0].reason == f"InjectedError: {when} {step}"
            _assert_nothing_applied(repository, run_id)
        assert repository.verify_audit_log(run_id).ok
        outcome = unlearn_client(repository, _request(synthetic_run))  # resumes it, or a new request after failed
        final = _final_state(repository, run_id)
    assert outcome.resumed == (expected not in (None, "failed"))
    _matches_uninterrupted(final, uninterrupted, ["failed", "shredded"] if expected == "failed" else ["shredded"])


@pytest.mark.parametrize("step", ["_open", "_unlearn", "_shred"])
def test_a_crash_leaves_the_request_where_it_stopped_and_resuming_finishes_it(synthetic_run, uninterrupted,
                                                                             monkeypatch, step):
    with synthetic_run.open() as repository:
        with monkeypatch.context() as patch:
            _injected(patch, step, "before", KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                unlearn_client(repository, _request(synthetic_run))
        (interrupted,) = repository.list_deletion_requests(synthetic_run.run_id, CLIENT)
        assert interrupted.state == {"_open": "requested", "_unlearn": "opened", "_shred": "unlearned"}[step]
        outcome = unlearn_client(repository, _request(synthetic_run))
        final = _final_state(repository, synthetic_run.run_id)
    assert outcome.resumed
    _matches_uninterrupted(final, uninterrupted, ["shredded"])


_KILLED_CHILD = textwrap.dedent("""
    import os, signal, sys
    import unlearning.deletion as deletion
    from storage import Repository
    from unlearning.requests import DeletionRequest

    path, step = sys.argv[1], sys.argv[2]
    original = getattr(deletion, step)

    def killed_after(*args, **kwargs):
        original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # no handler, no cleanup: a power cut right after the step

    setattr(deletion, step, killed_after)
    request = DeletionRequest.from_bytes(bytes.fromhex(sys.stdin.read()))
    deletion.unlearn_client(Repository.open(path), request)
""")


@pytest.mark.slow
@pytest.mark.parametrize("step, state", [("_open", "opened"), ("_unlearn", "unlearned"), ("_shred", "shredded")])
def test_a_process_killed_mid_deletion_leaves_a_consistent_database_that_resumes(synthetic_run, uninterrupted,
                                                                               step, state):
    request = _request(synthetic_run)
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD, synthetic_run.path, step],
                           input=request.to_bytes().hex(), text=True, capture_output=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.returncode == -signal.SIGKILL, child.stderr
    with synthetic_run.open() as repository:
        (killed,) = repository.list_deletion_requests(synthetic_run.run_id, CLIENT)
        assert killed.state == state and repository.verify_audit_log(synthetic_run.run_id).ok
        if state == "opened":
            _assert_nothing_applied(repository, synthetic_run.run_id)
        outcome = unlearn_client(repository, DeletionRequest.from_bytes(request.to_bytes()))
        final = _final_state(repository, synthetic_run.run_id)
    assert outcome.resumed
    _matches_uninterrupted(final, uninterrupted, ["shredded"])


# --- cancelling -----------------------------------------------------------------------------------


def _interrupt(repository, run, step, settings=UnlearningSettings()):
    original = getattr(deletion, step)
    setattr(deletion, step, lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with pytest.raises(KeyboardInterrupt):
            unlearn_client(repository, _request(run), settings=settings)
    finally:
        setattr(deletion, step, original)


@pytest.mark.parametrize("step, state", [("_open", "requested"), ("_unlearn", "opened")])
def test_cancelling_an_open_request_fails_it_with_the_reason_and_applies_nothing(synthetic_run, uninterrupted,
                                                                                step, state):
    run_id = synthetic_run.run_id
    with synthetic_run.open() as repository:
        _interrupt(repository, synthetic_run, step)
        assert repository.open_deletion_request(run_id, CLIENT).state == state
        cancelled = cancel_deletion_request(repository, run_id, CLIENT, reason="the key file is lost")
        assert (cancelled.state, cancelled.reason) == ("failed", "cancelled: the key file is lost")
        assert repository.open_deletion_request(run_id, CLIENT) is None
        (event,) = repository.audit_entries(run_id, event="deletion.failed")
        assert event.payload["reason"] == "cancelled: the key file is lost"
        _assert_nothing_applied(repository, run_id)
        outcome = unlearn_client(repository, _request(synthetic_run))  # the client may ask again
        final = _final_state(repository, run_id)
    assert not outcome.resumed
    _matches_uninterrupted(final, uninterrupted, ["failed", "shredded"])


def test_a_request_whose_model_is_stored_cannot_be_cancelled_only_finished(synthetic_run, uninterrupted):
    run_id = synthetic_run.run_id
    with synthetic_run.open() as repository:
        _interrupt(repository, synthetic_run, "_shred")
        with pytest.raises(DeletionRequestError, match="cannot be taken back; finish it by running the same"):
            cancel_deletion_request(repository, run_id, CLIENT)
        assert repository.open_deletion_request(run_id, CLIENT).state == "unlearned"
        unlearn_client(repository, _request(synthetic_run))
        final = _final_state(repository, run_id)
        with pytest.raises(DeletionRequestError, match="no open deletion request"):
            cancel_deletion_request(repository, run_id, CLIENT)
    _matches_uninterrupted(final, uninterrupted, ["shredded"])


def test_a_request_in_progress_resumes_only_with_its_own_settings_or_is_cancelled(synthetic_run):
    run_id = synthetic_run.run_id
    with synthetic_run.open() as repository:
        _interrupt(repository, synthetic_run, "_unlearn", UnlearningSettings(alpha=0.2))
        with pytest.raises(DeletionRequestError, match=f"same settings .* --client {CLIENT} --cancel"):
            unlearn_client(repository, _request(synthetic_run), settings=UnlearningSettings(alpha=0.07))
        assert repository.open_deletion_request(run_id, CLIENT).state == "opened"  # the refusal changed nothing
        cancel_deletion_request(repository, run_id, CLIENT)
        outcome = unlearn_client(repository, _request(synthetic_run), settings=UnlearningSettings(alpha=0.07))
        assert not outcome.resumed
        assert [r.state for r in repository.list_deletion_requests(run_id, CLIENT)] == ["failed", "shredded"]
        assert repository.get_deletion_request(outcome.request_id).details["alpha"] == 0.07


def test_a_failure_that_cannot_be_recorded_leaves_the_request_resumable_and_says_so(synthetic_run, monkeypatch):
    run_id = synthetic_run.run_id
    with synthetic_run.open() as repository:
        def storage_down(*args, **kwargs):
            raise OSError("disk unplugged")

        with monkeypatch.context() as patch:
            _injected(patch, "_unlearn", "before", InjectedError("boom"))
            patch.setattr(repository, "transition_deletion_request",
                          lambda request_id, state, **kw: storage_down() if state == "failed"
                          else Repository.transition_deletion_request(repository, request_id, state, **kw))
            with pytest.raises(InjectedError) as raised:
                unlearn_client(repository, _request(synthetic_run))
        assert any("could not be marked failed (OSError: disk unplugged)" in note and "--cancel" in note
                   for note in raised.value.__notes__)
        assert repository.open_deletion_request(run_id, CLIENT).state == "opened"
        outcome = unlearn_client(repository, _request(synthetic_run))
        assert outcome.resumed and repository.get_deletion_request(outcome.request_id).state == "shredded"
