"""Persistence: SQLAlchemy schema, engines (SQLite by default, any URL), repositories, blob codecs.
Imports nothing else of fedvault's.

Typical use::

    from storage import Repository, open_database
    repo = Repository(open_database("fedvault.db"))      # or a postgresql+psycopg:// URL
    run = repo.create_run({"rounds": 30})
    repo.commit_round(run.id, RoundWrite(...))            # one transaction per round
"""

from storage.audit import ChainHead, ChainVerification, verify_audit_log
from storage.engine import DATABASE_ENV_VAR, DEFAULT_DATABASE, Database, open_database
from storage.entities import (
    AggregateRead,
    AggregateWrite,
    AuditEntry,
    CheckpointInfo,
    CheckpointWrite,
    ClientEnrolment,
    ClientInfo,
    DeletionRequestInfo,
    LedgerEntryRead,
    LedgerEntryWrite,
    LoadedCheckpoint,
    RoundInfo,
    RoundWrite,
    RunInfo,
    SealedRecordRead,
    SealedRecordWrite,
    ShredResult,
    StorageUsage,
    TableUsage,
)
from storage.repositories import Repository
from storage.retention import checkpoint_due

__all__ = [
    "DATABASE_ENV_VAR",
    "DEFAULT_DATABASE",
    "AggregateRead",
    "AggregateWrite",
    "AuditEntry",
    "ChainHead",
    "ChainVerification",
    "CheckpointInfo",
    "CheckpointWrite",
    "ClientEnrolment",
    "ClientInfo",
    "Database",
    "DeletionRequestInfo",
    "LedgerEntryRead",
    "LedgerEntryWrite",
    "LoadedCheckpoint",
    "Repository",
    "RoundInfo",
    "RoundWrite",
    "RunInfo",
    "SealedRecordRead",
    "SealedRecordWrite",
    "ShredResult",
    "StorageUsage",
    "TableUsage",
    "checkpoint_due",
    "open_database",
    "verify_audit_log",
]
