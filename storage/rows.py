"""Database rows -> the frozen values of ``storage.entities`` (no ORM object leaves storage).

Times come back timezone-aware (UTC); JSON columns come back as plain dicts and lists; blobs are
decoded, and a blob whose header disagrees with its row raises CorruptBlobError.
"""

from __future__ import annotations

from types import SimpleNamespace

from storage.codecs import decode_array, read_header
from storage.entities import (
    AggregateRead,
    AuditEntry,
    CheckpointInfo,
    ClientInfo,
    DeletionRequestInfo,
    LedgerEntryRead,
    RoundInfo,
    RunInfo,
)
from storage.errors import CorruptBlobError
from storage.schema import Aggregate, AuditLogEntry, Checkpoint, Client, DeletionRequest, LedgerEntry, Round, Run
from storage.validation import from_db_time


def run_info(row: Run) -> RunInfo:
    return RunInfo(row.id, row.name, dict(row.config), row.status, from_db_time(row.created_at), from_db_time(row.updated_at))


def client_info(row: Client) -> ClientInfo:
    return ClientInfo(
        run_id=row.run_id,
        client_id=row.client_id,
        identity_public_key=bytes(row.identity_public_key),
        history_commitment=bytes(row.history_commitment),
        enrolled_at=from_db_time(row.enrolled_at),
        status=row.status,
        deleted_at=from_db_time(row.deleted_at),
        epsilon_budget=row.epsilon_budget,
        delta=row.delta,
    )


def round_info(row: Round) -> RoundInfo:
    return RoundInfo(
        run_id=row.run_id,
        round_index=row.round_index,
        status=row.status,
        stage=row.stage,
        cohort=tuple(row.cohort),
        survivors=tuple(row.survivors),
        dropouts={stage: tuple(ids) for stage, ids in row.dropouts.items()},
        client_weights={int(client): float(weight) for client, weight in row.client_weights.items()},
        parameters=dict(row.parameters),
        bytes_uploaded=row.bytes_uploaded,
        started_at=from_db_time(row.started_at),
        finished_at=from_db_time(row.finished_at),
        committed_at=from_db_time(row.committed_at),
    )


def aggregate_read(row: Aggregate) -> AggregateRead:
    blob = bytes(row.blob)
    values = decode_array(blob)
    header = read_header(blob)
    if header.codec != row.codec or header.element_count != row.element_count:
        raise CorruptBlobError(f"aggregate {row.name!r} of round {row.round_index}: blob header disagrees with its row")
    return AggregateRead(row.run_id, row.round_index, row.name, row.kind, row.codec, values, row.byte_size, row.sha256)


def checkpoint_info(row: Checkpoint) -> CheckpointInfo:
    return CheckpointInfo(
        id=row.id,
        run_id=row.run_id,
        round_index=row.round_index,
        model_version=row.model_version,
        source=row.source,
        codec=row.codec,
        parameter_count=row.parameter_count,
        byte_size=row.byte_size,
        sha256=row.sha256,
        details=dict(row.details),
        created_at=from_db_time(row.created_at),
    )


def ledger_read(row: LedgerEntry | SimpleNamespace) -> LedgerEntryRead:
    return LedgerEntryRead(
        run_id=row.run_id,
        client_id=row.client_id,
        sequence=row.sequence,
        round_index=row.round_index,
        stream=row.stream,
        event_json=dict(row.event),
        epsilon_after=row.epsilon_after,
        delta=row.delta,
        created_at=from_db_time(row.created_at),
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


def request_info(row: DeletionRequest) -> DeletionRequestInfo:
    return DeletionRequestInfo(
        id=row.id,
        run_id=row.run_id,
        client_id=row.client_id,
        state=row.state,
        reason=row.reason,
        details=dict(row.details),
        created_at=from_db_time(row.created_at),
        updated_at=from_db_time(row.updated_at),
    )


def audit_entry(row: AuditLogEntry) -> AuditEntry:
    return AuditEntry(
        run_id=row.run_id,
        sequence=row.sequence,
        event=row.event,
        round_index=row.round_index,
        client_id=row.client_id,
        payload=dict(row.payload),
        created_at=from_db_time(row.created_at),
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )
