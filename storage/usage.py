"""How much a run stores, per table: rows, payload bytes, and bits per parameter for the tables
that hold model-sized arrays (for ``fedvault history``).

"Payload bytes" are the blobs and JSON text a table holds for the run, not index or page overhead;
``StorageUsage.database_bytes`` is the whole database on disk (all runs) for that.
"""

from __future__ import annotations

from sqlalchemy import Text, cast, func, literal, select, text
from sqlalchemy.orm import Session

from storage.entities import StorageUsage, TableUsage
from storage.schema import (
    Aggregate,
    AuditLogEntry,
    Base,
    Checkpoint,
    Client,
    DeletionRequest,
    LedgerEntry,
    Round,
    Run,
    SealedRecord,
)


def storage_usage(session: Session, run_id: int) -> StorageUsage:
    """The usage report of one run (the run must exist)."""
    tables = [
        TableUsage("runs", 1, _json_length(session, Run.config, Run.id == run_id)),
        _table_usage(session, "clients", Client, Client.run_id == run_id,
                     func.length(Client.identity_public_key) + func.length(Client.history_commitment)),
        _table_usage(session, "rounds", Round, Round.run_id == run_id, None,
                     json_columns=(Round.cohort, Round.survivors, Round.dropouts, Round.client_weights, Round.parameters)),
        _table_usage(session, "aggregates", Aggregate, Aggregate.run_id == run_id, Aggregate.byte_size,
                     parameters=Aggregate.element_count),
        _table_usage(session, "checkpoints", Checkpoint, Checkpoint.run_id == run_id, Checkpoint.byte_size,
                     parameters=Checkpoint.parameter_count),
        _table_usage(session, "sealed_records", SealedRecord, SealedRecord.run_id == run_id, SealedRecord.record_size,
                     parameters=SealedRecord.parameter_count),
        _table_usage(session, "ledger_entries", LedgerEntry, LedgerEntry.run_id == run_id, None,
                     json_columns=(LedgerEntry.event,)),
        _table_usage(session, "deletion_requests", DeletionRequest, DeletionRequest.run_id == run_id, None,
                     json_columns=(DeletionRequest.details,)),
        _table_usage(session, "audit_log", AuditLogEntry, AuditLogEntry.run_id == run_id, None,
                     json_columns=(AuditLogEntry.payload,)),
    ]
    return StorageUsage(run_id, tuple(tables), database_bytes(session))


def _json_length(session: Session, column, condition) -> int:
    value = session.execute(select(func.coalesce(func.sum(func.length(cast(column, Text))), 0)).where(condition)).scalar_one()
    return int(value)


def _table_usage(session: Session, name: str, model, condition, byte_column, *, json_columns=(), parameters=None) -> TableUsage:
    columns = [func.count()]
    size = None
    if byte_column is not None:
        size = func.coalesce(func.sum(byte_column), 0)
    for column in json_columns:
        part = func.coalesce(func.sum(func.length(cast(column, Text))), 0)
        size = part if size is None else size + part
    columns.append(size if size is not None else literal(0))
    if parameters is not None:
        columns.append(func.sum(parameters))
    row = session.execute(select(*columns).select_from(model).where(condition)).one()
    counted = None if parameters is None or row[2] is None else int(row[2])
    return TableUsage(name, int(row[0]), int(row[1]), counted)


def database_bytes(session: Session) -> int | None:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        page_count = session.execute(text("PRAGMA page_count")).scalar_one()
        page_size = session.execute(text("PRAGMA page_size")).scalar_one()
        return int(page_count) * int(page_size)
    if dialect == "postgresql":
        tables = list(Base.metadata.tables)
        value = session.execute(
            text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY(:tables)"
            ),
            {"tables": tables},
        ).scalar_one()
        return int(value)
    return None
