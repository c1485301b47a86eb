"""The fedvault database schema (SQLAlchemy 2.x typed declarative models).

Nine tables and two helpers, one per thing a run persists:

- ``runs``: one training run and its configuration.
- ``clients``: enrolled clients of a run: identity key, history-secret commitment, privacy budget.
- ``rounds``: one row per committed round (completed or aborted): cohort, survivors, dropouts.
- ``aggregates``: a round's summed lattice coordinates and/or decoded mean update, as codec blobs.
- ``checkpoints`` + ``checkpoint_tensors``: model states (fp16/bf16 blobs) with a model version.
- ``sealed_records``: clients' encrypted history records (opaque to the server) for unlearning.
- ``ledger_entries``: the privacy ledger, hash-chained per (run, client).
- ``deletion_requests``: the unlearning state machine (see ``storage.deletion``).
- ``audit_log`` + ``audit_heads``: the append-only, hash-chained audit log and each run's head.

Times are naive UTC ``DATETIME`` (microseconds) so SQLite and PostgreSQL read back the same value,
which the hash chains depend on. The schema is created and changed only by the Alembic migrations
in ``storage/migrations``; a test checks that the migrations and these models agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

RUN_STATUSES = ("running", "completed", "failed")
CLIENT_STATUSES = ("active", "deleted")
ROUND_STATUSES = ("completed", "aborted")
LEDGER_STREAMS = ("update-ldp", "dp-sgd", "distributed")
DELETION_STATES = ("requested", "opened", "unlearned", "shredded", "failed")
DELETION_TERMINAL_STATES = ("shredded", "failed")
AGGREGATE_KINDS = ("lattice_sum", "mean_update")
CHECKPOINT_SOURCES = ("initial", "training", "unlearning")
HASH_HEX_LENGTH = 64


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations can name every constraint."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {
        datetime: DateTime(timezone=False),
        bytes: LargeBinary,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String(200))
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Client(Base):
    __tablename__ = "clients"
    __table_args__ = (
        CheckConstraint(_one_of("status", CLIENT_STATUSES), name="status"),
        CheckConstraint("client_id >= 0", name="client_id_non_negative"),
        CheckConstraint("epsilon_budget > 0", name="epsilon_budget_positive"),
        CheckConstraint("delta >= 0 AND delta < 1", name="delta_range"),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    client_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    identity_public_key: Mapped[bytes]
    history_commitment: Mapped[bytes]
    enrolled_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    deleted_at: Mapped[datetime | None]
    epsilon_budget: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (
        CheckConstraint(_one_of("status", ROUND_STATUSES), name="status"),
        CheckConstraint("round_index >= 0", name="round_index_non_negative"),
        CheckConstraint("bytes_uploaded >= 0", name="bytes_uploaded_non_negative"),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    round_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(64))
    cohort: Mapped[list[Any]]
    survivors: Mapped[list[Any]]
    dropouts: Mapped[dict[str, Any]]
    client_weights: Mapped[dict[str, Any]]
    parameters: Mapped[dict[str, Any]]
    bytes_uploaded: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    committed_at: Mapped[datetime]


class Aggregate(Base):
    __tablename__ = "aggregates"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "round_index"], ["rounds.run_id", "rounds.round_index"]),
        CheckConstraint(_one_of("kind", AGGREGATE_KINDS), name="kind"),
    )

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    codec: Mapped[str] = mapped_column(String(32))
    element_count: Mapped[int] = mapped_column(BigInteger)
    byte_size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(HASH_HEX_LENGTH))
    blob: Mapped[bytes]


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (
        UniqueConstraint("run_id", "model_version"),
        CheckConstraint(_one_of("source", CHECKPOINT_SOURCES), name="source"),
        CheckConstraint("round_index >= -1", name="round_index_range"),
        Index(None, "run_id", "round_index"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    # The last round folded into this model; -1 is the initial model, before round 0.
    round_index: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    codec: Mapped[str] = mapped_column(String(32))
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    byte_size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(HASH_HEX_LENGTH))
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class CheckpointTensor(Base):
    __tablename__ = "checkpoint_tensors"

    checkpoint_id: Mapped[int] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    blob: Mapped[bytes]


class SealedRecord(Base):
    __tablename__ = "sealed_records"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "round_index"], ["rounds.run_id", "rounds.round_index"]),
        ForeignKeyConstraint(["run_id", "client_id"], ["clients.run_id", "clients.client_id"]),
        UniqueConstraint("run_id", "client_id", "round_index"),
        CheckConstraint("record_size >= 0", name="record_size_non_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer)
    round_index: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes]
    record_size: Mapped[int] = mapped_column(Integer)
    parameter_count: Mapped[int | None] = mapped_column(BigInteger)
    # ``metadata`` is reserved on declarative classes; the column keeps the plain name.
    record_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime]


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "client_id"], ["clients.run_id", "clients.client_id"]),
        UniqueConstraint("run_id", "client_id", "sequence"),
        CheckConstraint(_one_of("stream", LEDGER_STREAMS), name="stream"),
        CheckConstraint("epsilon_after >= 0", name="epsilon_after_non_negative"),
        CheckConstraint("delta >= 0 AND delta < 1", name="delta_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(Integer)
    round_index: Mapped[int] = mapped_column(Integer)
    stream: Mapped[str] = mapped_column(String(32))
    event: Mapped[dict[str, Any]]
    epsilon_after: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(HASH_HEX_LENGTH))
    entry_hash: Mapped[str] = mapped_column(String(HASH_HEX_LENGTH))


class DeletionRequest(Base):
    __tablename__ = "deletion_requests"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "client_id"], ["clients.run_id", "clients.client_id"]),
        CheckConstraint(_one_of("state", DELETION_STATES), name="state"),
        # At most one open request per client: a second request resumes the first.
        Index(
            "uq_deletion_requests_open_per_client",
            "run_id",
            "client_id",
            unique=True,
            sqlite_where=text("state NOT IN ('shredded', 'failed')"),
            postgresql_where=text("state NOT IN ('shredded', 'failed')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AuditLogEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("run_id", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(64))
    round_index: Mapped[int | None] = mapped_column(Integer)
    client_id: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(HASH_HEX_LENGTH))
    entry_hash: Mapped[str] = mapped_column(String(HASH_HEX_LENGTH))


class AuditHead(Base):
    """The last entry of each run's audit chain, updated in the same transaction as the append.

    A hash chain alone cannot reveal that its newest entries were deleted; the head can.
    """

    __tablename__ = "audit_heads"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(HASH_HEX_LENGTH))
