"""Repository round trips for every table, on SQLite and PostgreSQL, and the rules a write obeys:
rounds in order, whole rounds only, deleted clients refused, retention and shredding atomic."""

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

import storage.repositories as repositories
from storage import (
    AggregateWrite,
    CheckpointWrite,
    ClientEnrolment,
    LedgerEntryWrite,
    RoundWrite,
    SealedRecordWrite,
    checkpoint_due,
)
from storage.errors import (
    ClientDeletedError,
    ClientNotFoundError,
    ConflictError,
    DuplicateError,
    RoundNotFoundError,
    RoundOrderError,
    RunNotFoundError,
    StorageValueError,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_runs_round_trip_with_their_config_and_status(repo):
    config = {"dataset": "digits", "rounds": 30, "lattice": "E8", "epsilon": 4.5, "nested": {"a": [1, 2.5, None]}}
    run = repo.create_run(config, name="digits-e8")
    assert repo.get_run(run.id) == run
    assert run.config == config and run.status == "running" and run.name == "digits-e8"
    assert run.created_at.tzinfo is UTC
    finished = repo.set_run_status(run.id, "completed")
    assert finished.status == "completed"
    assert [r.id for r in repo.list_runs()] == [run.id]
    with pytest.raises(RunNotFoundError):
        repo.get_run(run.id + 1)
    with pytest.raises(StorageValueError, match="non-finite"):
        repo.create_run({"epsilon": float("nan")})
    with pytest.raises(StorageValueError, match="keys must be str"):
        repo.create_run({1: "int key"})


def test_clients_round_trip_and_refuse_duplicates(repo):
    run = repo.create_run({})
    key, commitment = os.urandom(32), os.urandom(32)
    client = repo.enrol_client(run.id, 7, identity_public_key=key, history_commitment=commitment, epsilon_budget=3.5, delta=1e-6)
    assert repo.get_client(run.id, 7) == client
    assert (client.identity_public_key, client.history_commitment) == (key, commitment)
    assert (client.epsilon_budget, client.delta, client.status, client.deleted_at) == (3.5, 1e-6, "active", None)
    with pytest.raises(DuplicateError):
        repo.enrol_client(run.id, 7, identity_public_key=key, history_commitment=commitment, epsilon_budget=1, delta=0)
    with pytest.raises(StorageValueError, match="32 bytes"):
        ClientEnrolment(8, b"short", commitment, 1.0, 1e-5)
    with pytest.raises(StorageValueError, match="> 0"):
        ClientEnrolment(8, key, commitment, 0.0, 1e-5)
    with pytest.raises(ClientNotFoundError):
        repo.get_client(run.id, 8)
    deleted = repo.mark_client_deleted(run.id, 7)
    assert deleted.status == "deleted" and deleted.deleted_at is not None
    assert repo.mark_client_deleted(run.id, 7) == deleted  # idempotent
    assert repo.list_clients(run.id, status="active") == []
    assert [c.client_id for c in repo.list_clients(run.id, status="deleted")] == [7]


def test_a_committed_round_reads_back_field_for_field(repo, enrolled_run, make_round, aggregate_values_of):
    write = make_round(0, cohort=(0, 1, 2, 3), survivors=(0, 1, 3), checkpoint=True)
    info = repo.commit_round(enrolled_run, write)
    assert repo.get_round(enrolled_run, 0) == info
    assert (info.cohort, info.survivors, info.dropouts) == ((0, 1, 2, 3), (0, 1, 3), {"masked_input": (2,)})
    assert info.client_weights == {0: 1.0, 1: 2.0, 3: 4.0}
    assert info.parameters == {"bits": 16, "lattice": "E8", "step": 0.03}
    assert (info.status, info.stage, info.bytes_uploaded) == ("completed", "completed", 4000)
    assert (info.started_at, info.finished_at) == (write.started_at, write.finished_at)
    assert info.started_at.microsecond == 678901  # microseconds survive both backends

    aggregates = repo.load_aggregates(enrolled_run, 0)
    assert set(aggregates) == {"update", "mean"}
    assert aggregates["update"].codec == "zigzag-zstd" and aggregates["update"].kind == "lattice_sum"
    assert np.array_equal(aggregates["update"].values, aggregate_values_of(0))
    assert aggregates["mean"].values.dtype == np.float32 and aggregates["mean"].codec == "raw"

    records = list(repo.iter_sealed_records(enrolled_run, 3))
    assert len(records) == 1
    assert records[0].ciphertext == write.sealed_records[2].ciphertext
    assert records[0].metadata == {"parent": -1, "seed_id": 3} and records[0].record_size == 128

    ledger = repo.ledger_entries(enrolled_run, client_id=1)
    assert [(e.sequence, e.round_index, e.stream, e.epsilon_after) for e in ledger] == [(0, 0, "distributed", 0.25)]
    assert ledger[0].event_json == {"name": "SkellamEvent", "mu": 2.5, "l2_sensitivity": 1.0}

    checkpoint = repo.load_checkpoint(enrolled_run)
    assert (checkpoint.info.round_index, checkpoint.info.model_version, checkpoint.info.source) == (0, 0, "training")
    assert np.array_equal(checkpoint.tensors["w"], np.zeros((4, 5), np.float32))

    [entry] = repo.audit_entries(enrolled_run, event="round.committed")
    assert entry.round_index == 0
    recorded = {a["name"]: a["sha256"] for a in entry.payload["aggregates"]}
    assert recorded == {name: aggregate.sha256 for name, aggregate in aggregates.items()}


def test_rounds_must_be_committed_in_order(repo, enrolled_run, make_round):
    with pytest.raises(RoundOrderError, match="next round is 0"):
        repo.commit_round(enrolled_run, make_round(1))
    repo.commit_round(enrolled_run, make_round(0))
    with pytest.raises(DuplicateError):
        repo.commit_round(enrolled_run, make_round(0))
    with pytest.raises(RoundOrderError, match="next round is 1"):
        repo.commit_round(enrolled_run, make_round(2))
    assert repo.last_committed_round(enrolled_run) == 0
    assert repo.next_round_index(enrolled_run) == 1


def test_an_aborted_round_is_recorded_without_aggregates_and_counts_as_committed(repo, enrolled_run, make_round):
    info = repo.commit_round(enrolled_run, make_round(0, status="aborted", records=False))
    assert info.status == "aborted" and info.stage == "masked_input"
    assert repo.load_aggregates(enrolled_run, 0) == {}
    assert repo.next_round_index(enrolled_run) == 1
    with pytest.raises(StorageValueError, match="aborted round has no aggregate"):
        RoundWrite(0, (0,), (), T0, T0, status="aborted", aggregates=(AggregateWrite(np.zeros(2, np.int64)),))
    with pytest.raises(StorageValueError, match="needs at least one aggregate"):
        RoundWrite(0, (0,), (0,), T0, T0)


def test_round_write_validates_its_parts():
    aggregate = (AggregateWrite(np.zeros(3, np.int64)),)
    with pytest.raises(StorageValueError, match="not in the cohort"):
        RoundWrite(0, (0, 1), (2,), T0, T0, aggregates=aggregate)
    with pytest.raises(StorageValueError, match="twice"):
        RoundWrite(0, (0, 0), (0,), T0, T0, aggregates=aggregate)
    with pytest.raises(StorageValueError, match="timezone-aware"):
        RoundWrite(0, (0,), (0,), datetime(2026, 1, 1), datetime(2026, 1, 1), aggregates=aggregate)
    with pytest.raises(StorageValueError, match="before started_at"):
        RoundWrite(0, (0,), (0,), T0, T0 - timedelta(seconds=1), aggregates=aggregate)
    with pytest.raises(StorageValueError, match="outside the cohort"):
        RoundWrite(0, (0,), (0,), T0, T0, aggregates=aggregate, sealed_records=(SealedRecordWrite(5, b"x"),))
    with pytest.raises(StorageValueError, match="ledger entry of round 1"):
        entry = LedgerEntryWrite(0, 1, "dp-sgd", {}, 1.0, 1e-5)
        RoundWrite(0, (0,), (0,), T0, T0, aggregates=aggregate, ledger_entries=(entry,))
    with pytest.raises(StorageValueError, match="stream"):
        LedgerEntryWrite(0, 0, "made-up", {}, 1.0, 1e-5)
    with pytest.raises(StorageValueError, match="integers"):
        AggregateWrite(np.zeros(3, np.float32), kind="lattice_sum")


def test_unknown_and_deleted_clients_are_refused_in_a_round(repo, enrolled_run, make_round):
    with pytest.raises(ClientNotFoundError, match=r"\[9\]"):
        repo.commit_round(enrolled_run, make_round(0, cohort=(0, 9), survivors=(0,)))
    repo.mark_client_deleted(enrolled_run, 2)
    with pytest.raises(ClientDeletedError, match=r"\[2\]"):
        repo.commit_round(enrolled_run, make_round(0, cohort=(0, 1, 2), survivors=(0, 1)))
    with pytest.raises(ClientDeletedError):
        repo.append_ledger_entries(enrolled_run, [LedgerEntryWrite(2, 0, "update-ldp", {}, 0.1, 1e-5)])
    assert repo.last_committed_round(enrolled_run) is None


def test_a_failure_inside_commit_round_leaves_nothing_behind(repo, enrolled_run, make_round, monkeypatch):
    repo.commit_round(enrolled_run, make_round(0, checkpoint=True))
    before = repo.storage_usage(enrolled_run)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash after every row of the round was written")

    # The audit entry is the round's last write: failing there proves the earlier ones roll back.
    monkeypatch.setattr(repositories, "append_audit_entry", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        repo.commit_round(enrolled_run, make_round(1, checkpoint=True))
    monkeypatch.undo()
    assert repo.last_committed_round(enrolled_run) == 0
    assert repo.storage_usage(enrolled_run) == before
    assert len(repo.list_checkpoints(enrolled_run)) == 1
    assert repo.verify_audit_log(enrolled_run).ok
    repo.commit_round(enrolled_run, make_round(1))  # and the run goes on from there
    assert repo.last_committed_round(enrolled_run) == 1


def test_rounds_are_refused_unless_the_run_is_running(repo, enrolled_run, make_round):
    repo.set_run_status(enrolled_run, "completed")
    with pytest.raises(ConflictError, match="completed"):
        repo.commit_round(enrolled_run, make_round(0))
    repo.set_run_status(enrolled_run, "running")
    repo.commit_round(enrolled_run, make_round(0))


def test_checkpoints_store_torch_state_dicts_in_fp16_and_bf16(repo, enrolled_run):
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32))
    state = model.state_dict()
    saved = repo.save_checkpoint(enrolled_run, CheckpointWrite(state, source="initial", round_index=-1))
    assert (saved.model_version, saved.round_index, saved.parameter_count) == (0, -1, sum(t.numel() for t in state.values()))
    loaded = repo.load_checkpoint(enrolled_run).as_torch()
    assert list(loaded) == list(state)
    for name, tensor in state.items():
        if tensor.is_floating_point():
            assert torch.equal(loaded[name], tensor.half().float()), name
        else:
            assert torch.equal(loaded[name], tensor), name  # num_batches_tracked stays int64, exact
    repo.save_checkpoint(enrolled_run, CheckpointWrite(state, codec="bf16", round_index=-1))
    bf16 = repo.load_checkpoint(enrolled_run)
    assert bf16.info.model_version == 1 and bf16.info.codec == "bf16"
    assert torch.equal(torch.from_numpy(bf16.tensors["0.weight"]), state["0.weight"].bfloat16().float())
    assert 16 < bf16.info.bits_per_parameter < 32


def test_load_checkpoint_picks_the_newest_at_or_before_a_round(repo, enrolled_run, make_round):
    assert repo.load_checkpoint(enrolled_run) is None
    for index in range(6):
        repo.commit_round(enrolled_run, make_round(index, checkpoint=checkpoint_due(index, every=2)))
    assert [c.round_index for c in repo.list_checkpoints(enrolled_run)] == [1, 3, 5]
    assert repo.load_checkpoint(enrolled_run).info.round_index == 5
    assert repo.load_checkpoint(enrolled_run, round_index=4).info.round_index == 3
    assert repo.load_checkpoint(enrolled_run, round_index=0) is None
    with pytest.raises(RoundNotFoundError):
        repo.save_checkpoint(enrolled_run, CheckpointWrite({"w": np.zeros(2, np.float32)}, round_index=9))
    unlearned = repo.save_checkpoint(
        enrolled_run, CheckpointWrite({"w": np.ones((4, 5), np.float32)}, source="unlearning", round_index=5)
    )
    newest = repo.load_checkpoint(enrolled_run)
    assert newest.info == unlearned and np.array_equal(newest.tensors["w"], np.ones((4, 5), np.float32))


def test_drop_old_checkpoints_keeps_the_newest_versions(repo, enrolled_run, make_round):
    for index in range(5):
        repo.commit_round(enrolled_run, make_round(index, checkpoint=True))
    assert repo.drop_old_checkpoints(enrolled_run, keep_last=2) == 3
    assert [c.model_version for c in repo.list_checkpoints(enrolled_run)] == [3, 4]
    assert repo.drop_old_checkpoints(enrolled_run, keep_last=2) == 0
    with pytest.raises(StorageValueError):
        repo.drop_old_checkpoints(enrolled_run, keep_last=0)
    [entry] = repo.audit_entries(enrolled_run, event="checkpoints.dropped")
    assert entry.payload["model_versions"] == [0, 1, 2]
    assert repo.storage_usage(enrolled_run).table("checkpoints").rows == 2


def test_sealed_records_stream_in_round_order_for_one_client(repo, enrolled_run, make_round):
    for index in range(7):
        repo.commit_round(enrolled_run, make_round(index, survivors=(0, 1) if index % 2 else (0, 1, 2)))
    records = list(repo.iter_sealed_records(enrolled_run, 2, batch_size=2))
    assert [r.round_index for r in records] == [0, 2, 4, 6]
    assert all(r.ciphertext == bytes([r.round_index, 2]) * 64 for r in records)
    assert repo.count_sealed_records(enrolled_run) == 4 * 3 + 3 * 2
    assert list(repo.iter_sealed_records(enrolled_run, 4)) == []
    with pytest.raises(ClientNotFoundError):
        list(repo.iter_sealed_records(enrolled_run, 42))


def test_shredding_removes_exactly_one_clients_records(repo, enrolled_run, make_round):
    for index in range(3):
        repo.commit_round(enrolled_run, make_round(index))
    result = repo.shred_client_records(enrolled_run, 1)
    assert (result.records_deleted, result.bytes_deleted) == (3, 3 * 128)
    assert result.compacted
    assert repo.count_sealed_records(enrolled_run, 1) == 0
    assert repo.count_sealed_records(enrolled_run) == 6
    assert repo.get_client(enrolled_run, 1).status == "active"  # without a request it only shreds
    assert repo.storage_usage(enrolled_run).table("sealed_records").rows == 6


def test_ledger_entries_chain_per_client_across_rounds_and_standalone_charges(repo, enrolled_run, make_round):
    repo.commit_round(enrolled_run, make_round(0))
    extra = repo.append_ledger_entries(
        enrolled_run,
        [LedgerEntryWrite(0, 1, "dp-sgd", {"name": "GaussianEvent", "noise_multiplier": 1.1}, 0.9, 1e-5),
         LedgerEntryWrite(0, 1, "update-ldp", {"name": "GaussianEvent", "noise_multiplier": 2.0}, 1.2, 1e-5)],
    )
    assert [e.sequence for e in extra] == [1, 2]
    entries = repo.ledger_entries(enrolled_run, client_id=0)
    assert [e.sequence for e in entries] == [0, 1, 2]
    assert entries[1].prev_hash == entries[0].entry_hash and entries[2].prev_hash == entries[1].entry_hash
    assert [e.epsilon_after for e in entries] == [0.25, 0.9, 1.2]
    assert len(repo.ledger_entries(enrolled_run)) == 3 + 2
    assert repo.verify_ledger(enrolled_run).ok


def test_storage_usage_reports_rows_bytes_and_bits_per_parameter(repo, enrolled_run, make_round):
    for index in range(3):
        repo.commit_round(enrolled_run, make_round(index, checkpoint=index == 2, length=1000))
    usage = repo.storage_usage(enrolled_run)
    aggregates = usage.table("aggregates")
    assert aggregates.rows == 6 and aggregates.parameters == 6 * 1000
    blobs = sum(a.byte_size for index in range(3) for a in repo.load_aggregates(enrolled_run, index).values())
    assert aggregates.payload_bytes == blobs
    assert aggregates.bits_per_parameter == pytest.approx(8 * blobs / 6000)
    records = usage.table("sealed_records")
    assert (records.rows, records.payload_bytes, records.parameters) == (9, 9 * 128, 9 * 1000)
    checkpoint = usage.table("checkpoints")
    assert checkpoint.rows == 1 and checkpoint.parameters == 25 and checkpoint.bits_per_parameter > 16
    assert usage.table("rounds").rows == 3 and usage.table("audit_log").rows > 3
    assert usage.database_bytes is not None and usage.database_bytes > usage.payload_bytes


def test_iter_aggregates_streams_one_named_aggregate_in_round_order(repo, enrolled_run, make_round, aggregate_values_of):
    for index in range(4):
        repo.commit_round(enrolled_run, make_round(index, status="aborted" if index == 2 else "completed", records=False))
    streamed = list(repo.iter_aggregates(enrolled_run, "update", batch_size=1))
    assert [a.round_index for a in streamed] == [0, 1, 3]  # the aborted round has none
    assert all(np.array_equal(a.values, aggregate_values_of(a.round_index)) for a in streamed)
    assert [a.round_index for a in repo.iter_aggregates(enrolled_run, "mean")] == [0, 1, 3]
    assert list(repo.iter_aggregates(enrolled_run, "no-such-name")) == []


def test_checkpoint_due_every_k_rounds_and_after_the_last():
    assert [r for r in range(10) if checkpoint_due(r, every=3)] == [2, 5, 8]
    assert [r for r in range(10) if checkpoint_due(r, every=3, last_round=9)] == [2, 5, 8, 9]
    assert [r for r in range(5) if checkpoint_due(r, every=0, last_round=4)] == [4]
    with pytest.raises(StorageValueError):
        checkpoint_due(5, every=2, last_round=4)
    with pytest.raises(StorageValueError):
        checkpoint_due(-1, every=2)


def test_repository_needs_a_database():
    with pytest.raises(StorageValueError, match="open_database"):
        repositories.Repository("fedvault.db")
