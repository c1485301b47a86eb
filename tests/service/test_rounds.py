"""The HTTP round manager without HTTP: stages, deadlines, dropouts, aborts, restarts, charges.

Scripted clients mask known vectors, so every completed round's committed secure sum is checked
exactly against the survivors' inputs; a restart is a fresh ``RoundManager`` on the same
database and state directory while the clients keep their in-memory protocol state.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from federation.service.errors import AuthenticationFailedError, BadRequestError, ConflictError, ForbiddenError
from federation.service.rounds import ClientReport, RoundManager, ServiceSettings
from secagg.modular import centered_lift
from secagg.stages import ADVERTISE_KEYS, MASKED_INPUT, SHARE_KEYS, STAGES, UNMASK
from tests.service.fleet import RuntimeClient, ScriptedClient, drive

SETTINGS = ServiceSettings(min_clients=6, train_timeout=30.0, stage_timeout=10.0, online_window=1e5)


def new_manager(repository, run_id, state, clock, settings=SETTINGS) -> RoundManager:
    return RoundManager(repository, run_id, state, settings, clock=clock)


def scripted_run(repository, state, clock, config, clients=6):
    run_id = repository.create_run(config.to_dict()).id
    manager = new_manager(repository, run_id, state, clock)
    fleet = [ScriptedClient(c, run_id) for c in range(clients)]
    for client in fleet:
        client.enrol(manager)
    return run_id, manager, fleet


def assert_exact_sums(repository, run_id, fleet, bits):
    """Every completed round's lattice sum is exactly Σ of its survivors' inputs (centred mod 2**b)."""
    by_id = {c.client_id: c for c in fleet}
    completed = 0
    for info in repository.list_rounds(run_id):
        if info.status != "completed":
            continue
        completed += 1
        expected = np.zeros_like(by_id[info.survivors[0]].inputs[info.round_index])
        for client_id in info.survivors:
            expected += by_id[client_id].inputs[info.round_index]  # uint32 wraps mod 2**32
        expected &= np.uint32(2**bits - 1)
        stored = repository.load_aggregates(run_id, info.round_index)["update"].values
        np.testing.assert_array_equal(stored, centered_lift(expected, bits))
    return completed


def test_rounds_commit_the_exact_secure_sum_of_every_client(repository, state, clock, small_config):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config)
    drive(manager, fleet, clock)
    rounds = repository.list_rounds(run_id)
    assert [(r.round_index, r.status, r.survivors) for r in rounds] == [(i, "completed", tuple(range(6)))
                                                                         for i in range(3)]
    assert assert_exact_sums(repository, run_id, fleet, manager.bits) == 3
    assert repository.get_run(run_id).status == "completed"
    assert not state.journal_path.exists()
    assert repository.verify_audit_log(run_id).ok


@pytest.mark.parametrize("stage", STAGES)
def test_clients_killed_at_any_stage_drop_out_and_the_round_still_completes(repository, state, clock,
                                                                             small_config, stage):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config.replace(rounds=1))
    crashed = drive(manager, fleet, clock, crash={4: (0, stage), 5: (0, stage)})
    assert crashed == {4, 5}
    info = repository.get_round(run_id, 0)
    assert info.status == "completed"
    # A client lost at unmask already sent its masked input: it is in the sum; earlier, it is not.
    expected_survivors = tuple(range(6)) if stage == UNMASK else (0, 1, 2, 3)
    assert info.survivors == expected_survivors
    assert len(info.survivors) >= info.parameters["threshold"]
    assert info.dropouts == {stage: (4, 5)}
    assert assert_exact_sums(repository, run_id, fleet, manager.bits) == 1


def test_too_few_survivors_abort_the_round_and_commit_no_aggregate(repository, state, clock, small_config):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config.replace(rounds=1))
    drive(manager, fleet, clock, crash={c: (0, MASKED_INPUT) for c in (1, 2, 3, 4)})
    info = repository.get_round(run_id, 0)
    assert (info.status, info.survivors) == ("aborted", ())
    assert repository.load_aggregates(run_id, 0) == {}
    status = manager.round_status(0)
    assert status.state == "aborted" and "threshold" in status.reason
    # The survivors are told: the last round in their task says it aborted, and why.
    task = manager.task(0)
    assert task.last_round.status == "aborted" and task.last_round.reason == status.reason


@pytest.mark.parametrize("stage", STAGES)
def test_server_restart_at_any_stage_resumes_the_round_with_the_same_sum(repository, state, clock,
                                                                          small_config, stage):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config.replace(rounds=2))
    drive(manager, fleet, clock, stop_after=(1, stage))  # round 0 committed, round 1 at `stage`
    for client in fleet[:3]:  # half the cohort answers the open stage before the crash
        client.answer(manager, manager.task(client.client_id))
    committed = repository.list_rounds(run_id)
    audit_before = repository.audit_entries(run_id)

    restarted = new_manager(repository, run_id, state, clock)  # the old one is gone mid-stage
    assert restarted.round_status(1).state == "open" and restarted.round_status(1).stage == stage
    for client in fleet[:3]:  # what they sent survived the crash; a retry is an idempotent repeat
        task = restarted.task(client.client_id)
        assert task.answered and task.request is None
    drive(restarted, fleet, clock)

    rounds = repository.list_rounds(run_id)
    assert rounds[:1] == committed  # nothing committed was lost or changed
    assert [(r.status, r.survivors) for r in rounds] == [("completed", tuple(range(6)))] * 2
    assert assert_exact_sums(repository, run_id, fleet, restarted.bits) == 2
    audit_after = repository.audit_entries(run_id)
    assert audit_after[:len(audit_before)] == audit_before
    resumed = [e for e in audit_after if e.event == "round.resumed"]
    assert [(e.round_index, e.payload["stage"]) for e in resumed] == [(1, stage)]
    assert repository.verify_audit_log(run_id).ok


def test_restart_after_the_unmask_closed_but_before_the_commit_finishes_the_round(
        repository, state, clock, small_config, monkeypatch):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config.replace(rounds=1))

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt("power cut")  # not an Exception: nothing catches it, like SIGKILL

    monkeypatch.setattr(repository, "commit_round", crash)
    with pytest.raises(KeyboardInterrupt):
        drive(manager, fleet, clock)
    monkeypatch.undo()
    assert repository.list_rounds(run_id) == [] and state.journal_path.exists()
    restarted = new_manager(repository, run_id, state, clock)
    restarted.tick()
    assert repository.get_round(run_id, 0).status == "completed"
    assert assert_exact_sums(repository, run_id, fleet, restarted.bits) == 1


def test_a_journal_of_an_already_committed_round_is_discarded(repository, state, clock, small_config):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config.replace(rounds=2))
    drive(manager, fleet, clock, stop_after=(0, UNMASK))
    saved = state.path / "journal-copy"
    drive(manager, fleet, clock, stop_after=(1, ADVERTISE_KEYS))
    shutil.copy(state.journal_path, saved)  # round 1's journal ...
    drive(manager, fleet, clock)
    shutil.copy(saved, state.journal_path)  # ... reappears after round 1 was committed (crash before delete)
    rounds = repository.list_rounds(run_id)
    restarted = new_manager(repository, run_id, state, clock)
    assert not state.journal_path.exists()
    assert restarted.completed and repository.list_rounds(run_id) == rounds


def test_messages_are_refused_outside_their_stage_and_from_outside_the_cohort(repository, state, clock,
                                                                               small_config):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config.replace(rounds=1))
    drive(manager, fleet, clock, stop_after=(0, SHARE_KEYS))
    with pytest.raises(ConflictError, match="stage masked_input of round 0 is not open"):
        manager.submit(0, 0, MASKED_INPUT, b"\x01" * 40)
    with pytest.raises(ConflictError, match="round 7 is not open"):
        manager.submit(0, 7, SHARE_KEYS, b"\x01" * 40)
    with pytest.raises(BadRequestError, match="malformed share_keys message"):
        manager.submit(0, 0, SHARE_KEYS, b"not a protocol message")
    fleet[0].answer(manager, manager.task(0))
    with pytest.raises(ConflictError, match="already answered share_keys"):
        manager.submit(0, 0, SHARE_KEYS, b"something else")
    journal_size = state.journal_path.stat().st_size
    with pytest.raises(ConflictError, match="already reported"):
        manager.report(1, 0, ClientReport(num_samples=99))
    assert state.journal_path.stat().st_size == journal_size  # refused input is never journaled


def test_charges_are_durable_before_any_masked_input_and_never_doubled_by_a_restart(
        repository, state, clock, small_config):
    config = small_config.replace(noise="distributed", mechanism="skellam", target_epsilon=50.0, rounds=1)
    run_id, manager, fleet = scripted_run(repository, state, clock, config)
    assert repository.ledger_entries(run_id) == []
    drive(manager, fleet, clock, stop_after=(0, MASKED_INPUT))
    charged = repository.ledger_entries(run_id)
    assert sorted(e.client_id for e in charged) == list(range(6))  # before a single masked input arrived
    restarted = new_manager(repository, run_id, state, clock)
    drive(restarted, fleet, clock)
    assert repository.ledger_entries(run_id) == charged
    assert repository.verify_ledger(run_id).ok
    assert repository.get_round(run_id, 0).status == "completed"


def test_real_clients_learn_store_their_records_and_confirm_them(repository, state, clock, tmp_path,
                                                                 small_config):
    from federation.client_runtime import ClientRuntime

    config = small_config.replace(history=True)
    run_id = repository.create_run(config.to_dict()).id
    manager = new_manager(repository, run_id, state, clock)
    before, _ = manager.model.evaluate()
    fleet = [RuntimeClient(ClientRuntime(c, config, run_id, tmp_path / "keys")) for c in range(6)]
    for client in fleet:
        client.enrol(manager)
    drive(manager, fleet, clock, crash={5: (1, MASKED_INPUT)})
    rounds = repository.list_rounds(run_id)
    assert [r.status for r in rounds] == ["completed"] * 3
    after, _ = manager.model.evaluate()
    assert before < 0.3 and after > 0.8  # 10 classes; three rounds of logistic regression
    assert repository.count_sealed_records(run_id) == sum(len(r.survivors) for r in rounds)
    assert repository.count_sealed_records(run_id, 5) == 1  # round 1: it never sent its masked input
    for client in fleet[:5]:
        manager.task(client.client_id)
        client.observe(manager.task(client.client_id))
        assert client.records_confirmed[-1] == 2


def test_deletion_waits_for_the_gap_between_rounds_then_unlearns_the_client(repository, state, clock, tmp_path,
                                                                          small_config):
    from federation.client_runtime import ClientRuntime
    from unlearning.requests import sign_deletion_request

    config = small_config.replace(history=True, checkpoint_every=1, rounds=2)
    run_id = repository.create_run(config.to_dict()).id
    manager = new_manager(repository, run_id, state, clock)
    runtimes = [ClientRuntime(c, config, run_id, tmp_path / "keys") for c in range(6)]
    fleet = [RuntimeClient(r) for r in runtimes]
    for client in fleet:
        client.enrol(manager)
    drive(manager, fleet, clock)
    model_before = manager.model.flat()
    keys = runtimes[2].keys
    secret = runtimes[2].history_secret  # this run's history secret (federation.run_secrets)

    with pytest.raises(ForbiddenError, match="does not match"):
        manager.request_deletion(sign_deletion_request(keys.identity, bytes(32), run_id, 2), timeout=0)
    with pytest.raises(AuthenticationFailedError, match="not signed by the client's enrolled identity key"):
        manager.request_deletion(sign_deletion_request(runtimes[3].keys.identity, secret, run_id, 2),
                                 timeout=0)
    assert repository.list_deletion_requests(run_id) == []

    request = sign_deletion_request(keys.identity, secret, run_id, 2)
    assert manager.request_deletion(request, timeout=0) is None  # queued for the driver
    manager.tick()
    (done,) = repository.list_deletion_requests(run_id)
    assert done.state == "shredded"
    assert repository.get_client(run_id, 2).status == "deleted"
    assert repository.count_sealed_records(run_id, 2) == 0
    assert not np.array_equal(manager.model.flat(), model_before)  # serving the unlearned model now
    assert manager.public_key_of(2) is None  # refused from now on
