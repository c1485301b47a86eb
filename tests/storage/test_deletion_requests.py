"""The deletion-request state machine: the allowed path, every refused edge, idempotent retries,
and the atomic steps that tie a state change to the model and to shredding."""

import itertools

import numpy as np
import pytest

from storage import CheckpointWrite
from storage.deletion import ALLOWED_TRANSITIONS, check_transition
from storage.errors import (
    ClientDeletedError,
    DeletionRequestNotFoundError,
    InvalidTransitionError,
    StorageValueError,
)
from storage.schema import DELETION_STATES

HAPPY_PATH = ("requested", "opened", "unlearned", "shredded")


def test_the_state_machine_has_exactly_the_documented_edges():
    edges = {(a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}
    path = set(itertools.pairwise(HAPPY_PATH))
    failures = {(state, "failed") for state in ("requested", "opened", "unlearned")}
    assert edges == path | failures


@pytest.mark.parametrize(("current", "target"), list(itertools.product(DELETION_STATES, repeat=2)))
def test_every_pair_of_states_is_allowed_or_refused_as_specified(current, target):
    reason = "boom" if target == "failed" else None
    if current == target:
        assert check_transition(current, target, reason=reason) is False
    elif target in ALLOWED_TRANSITIONS[current]:
        assert check_transition(current, target, reason=reason) is True
    else:
        with pytest.raises(InvalidTransitionError, match=f"{current}"):
            check_transition(current, target, reason=reason)


def test_failing_needs_a_reason_and_other_moves_take_none():
    with pytest.raises(StorageValueError, match="reason"):
        check_transition("opened", "failed", reason=None)
    with pytest.raises(StorageValueError, match="reason"):
        check_transition("opened", "failed", reason="   ")
    with pytest.raises(StorageValueError, match="only a transition to 'failed'"):
        check_transition("requested", "opened", reason="why")
    with pytest.raises(StorageValueError, match="unknown deletion state"):
        check_transition("requested", "forgotten", reason=None)


def test_a_request_walks_the_whole_path_atomically_with_the_model_and_the_shredding(repo, enrolled_run, make_round):
    for index in range(3):
        repo.commit_round(enrolled_run, make_round(index))
    request = repo.create_deletion_request(enrolled_run, 1, details={"method": "fast-fedul"})
    assert (request.state, request.details, request.is_open) == ("requested", {"method": "fast-fedul"}, True)
    assert repo.open_deletion_request(enrolled_run, 1) == request
    assert repo.create_deletion_request(enrolled_run, 1) == request  # a repeated request resumes the first

    opened = repo.transition_deletion_request(request.id, "opened", details={"records": 3})
    assert opened.state == "opened" and opened.details == {"method": "fast-fedul", "records": 3}
    assert repo.transition_deletion_request(request.id, "opened") == opened  # a retried step is a no-op

    with pytest.raises(InvalidTransitionError):
        repo.shred_client_records(enrolled_run, 1, request_id=request.id)  # not unlearned yet
    assert repo.count_sealed_records(enrolled_run, 1) == 3  # and nothing was shredded

    model = CheckpointWrite({"w": np.ones(8, np.float32)}, source="unlearning", round_index=2)
    saved = repo.save_checkpoint(enrolled_run, model, unlearned_request_id=request.id)
    unlearned = repo.get_deletion_request(request.id)
    assert unlearned.state == "unlearned" and unlearned.details["model_version"] == saved.model_version

    shredded = repo.shred_client_records(enrolled_run, 1, request_id=request.id)
    assert shredded.records_deleted == 3
    final = repo.get_deletion_request(request.id)
    assert final.state == "shredded" and not final.is_open
    assert repo.get_client(enrolled_run, 1).status == "deleted"
    assert repo.count_sealed_records(enrolled_run, 1) == 0
    assert repo.open_deletion_request(enrolled_run, 1) is None
    with pytest.raises(ClientDeletedError):
        repo.create_deletion_request(enrolled_run, 1)
    with pytest.raises(ClientDeletedError):
        repo.commit_round(enrolled_run, make_round(3, cohort=(0, 1, 2), survivors=(0, 2)))

    events = [e.event for e in repo.audit_entries(enrolled_run) if e.client_id == 1 or e.event == "checkpoint.saved"]
    assert events[-7:] == [
        "deletion.requested", "deletion.opened", "checkpoint.saved", "deletion.unlearned",
        "records.shredded", "client.deleted", "deletion.shredded",
    ]
    assert repo.verify_audit_log(enrolled_run).ok


def test_invalid_transitions_are_refused_and_change_nothing(repo, enrolled_run):
    request = repo.create_deletion_request(enrolled_run, 2)
    for target in ("unlearned", "shredded"):
        with pytest.raises(InvalidTransitionError, match="cannot go from requested"):
            repo.transition_deletion_request(request.id, target)
    assert repo.get_deletion_request(request.id) == request
    failed = repo.transition_deletion_request(request.id, "failed", reason="history secret does not match its commitment")
    assert failed.state == "failed" and failed.reason.startswith("history secret")
    with pytest.raises(InvalidTransitionError, match="final state"):
        repo.transition_deletion_request(request.id, "opened")
    with pytest.raises(DeletionRequestNotFoundError):
        repo.transition_deletion_request(request.id + 100, "opened")
    # After a failure the client may ask again: a new request, the old one kept as history.
    again = repo.create_deletion_request(enrolled_run, 2)
    assert again.id != request.id and again.state == "requested"
    assert [r.state for r in repo.list_deletion_requests(enrolled_run, client_id=2)] == ["failed", "requested"]


def test_saving_the_unlearned_model_refuses_a_request_that_was_not_opened(repo, enrolled_run):
    request = repo.create_deletion_request(enrolled_run, 0)
    model = CheckpointWrite({"w": np.ones(8, np.float32)}, source="unlearning", round_index=-1)
    with pytest.raises(InvalidTransitionError):
        repo.save_checkpoint(enrolled_run, model, unlearned_request_id=request.id)
    assert repo.list_checkpoints(enrolled_run) == []  # the model and the state move together or not at all
