"""The repository: the one typed API through which the coordinator, unlearning and the CLI read
and write a run. No SQL lives outside ``storage/``.

Every write method is one transaction and appends its own audit-log entry inside it, so the audit
log never says something happened that did not, nor misses something that did. ``commit_round``
writes a whole round (round row, aggregates, checkpoint, sealed records, ledger entries, audit
entry) or nothing. Reads return frozen dataclasses from ``storage.entities``, never ORM objects.

Concurrency: on SQLite every write transaction holds the database write lock from its first
statement (``BEGIN IMMEDIATE``); on PostgreSQL writes lock the run's row first, so the hash chains
of one run are always extended by one writer at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from storage import usage
from storage.audit import (
    ChainHead,
    ChainVerification,
    LedgerCrossCheck,
    append_audit_entry,
    cross_check_ledger_session,
    insert_ledger_entries,
    ledger_anchor,
    verify_audit_chains,
    verify_ledger_chains,
)
from storage.canonical import canonical_json
from storage.codecs import decode_array
from storage.deletion import check_transition
from storage.engine import Database, open_database
from storage.entities import (
    AggregateRead,
    ClientEnrolment,
    AuditEntry,
    CheckpointInfo,
    CheckpointWrite,
    ClientInfo,
    DeletionRequestInfo,
    LedgerEntryRead,
    LedgerEntryWrite,
    LoadedCheckpoint,
    RoundInfo,
    RoundWrite,
    RunInfo,
    SealedRecordRead,
    ShredResult,
    StorageUsage,
)
from storage.errors import (
    ClientDeletedError,
    ClientNotFoundError,
    ConflictError,
    DatabaseOperationalError,
    DeletionRequestNotFoundError,
    DuplicateError,
    RoundNotFoundError,
    RoundOrderError,
    RunNotFoundError,
    StorageValueError,
)
from storage.rows import (
    aggregate_read,
    audit_entry,
    checkpoint_info,
    client_info,
    ledger_read,
    request_info,
    round_info,
    run_info,
)
from storage.schema import (
    RUN_STATUSES,
    Aggregate,
    AuditHead,
    AuditLogEntry,
    Checkpoint,
    CheckpointTensor,
    Client,
    DeletionRequest,
    LedgerEntry,
    Round,
    Run,
    SealedRecord,
)
from storage.validation import (
    check_choice,
    check_int,
    check_json_object,
    check_text,
    check_time,
    from_db_time,
    utc_now,
)

class Repository:
    """Typed access to everything fedvault stores. Create with ``Repository(open_database(...))``
    or ``Repository.open(path_or_url)``; close with :meth:`close` or a ``with`` block."""

    def __init__(self, database: Database) -> None:
        if not isinstance(database, Database):
            raise StorageValueError(f"Repository needs a Database (storage.open_database), got {type(database).__name__}")
        self.database = database

    @classmethod
    def open(cls, url_or_path: str | os.PathLike[str] | None = None, **options: Any) -> Repository:
        """``Repository(open_database(url_or_path, **options))``."""
        return cls(open_database(url_or_path, **options))

    def close(self) -> None:
        self.database.dispose()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- transactions ----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        try:
            with self.database.transaction() as session:
                yield session
        except sa_exc.IntegrityError as error:
            raise ConflictError(f"the database refused the write: {_reason(error)}") from None
        except sa_exc.OperationalError as error:
            raise DatabaseOperationalError(f"database operation failed, nothing was written: {_reason(error)}") from None

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with self.database.reading() as session:
                yield session
        except sa_exc.OperationalError as error:
            raise DatabaseOperationalError(f"database read failed: {_reason(error)}") from None

    # --- runs ------------------------------------------------------------------------------------

    def create_run(self, config: Mapping[str, Any], *, name: str | None = None) -> RunInfo:
        """Start a run with its configuration (a JSON object); status ``running``."""
        config = check_json_object(config, "run config")
        if name is not None:
            check_text(name, "run name", max_length=200)
        now = utc_now()
        with self._write() as session:
            run = Run(name=name, config=dict(config), status="running", created_at=now, updated_at=now)
            session.add(run)
            session.flush()
            append_audit_entry(session, run.id, "run.created", {"name": name, "config_sha256": _json_digest(config)}, now=now)
            return run_info(run)

    def get_run(self, run_id: int) -> RunInfo:
        with self._read() as session:
            return run_info(_get_run(session, run_id))

    def list_runs(self) -> list[RunInfo]:
        with self._read() as session:
            return [run_info(run) for run in session.execute(select(Run).order_by(Run.id)).scalars()]

    def set_run_status(self, run_id: int, status: str) -> RunInfo:
        """Mark a run running, completed or failed (audited)."""
        check_choice(status, "run status", RUN_STATUSES)
        now = utc_now()
        with self._write() as session:
            run = _lock_run(session, run_id)
            if run.status != status:
                previous, run.status, run.updated_at = run.status, status, now
                append_audit_entry(session, run.id, "run.status", {"from": previous, "to": status}, now=now)
            return run_info(run)

    # --- clients ---------------------------------------------------------------------------------

    def enrol_clients(self, run_id: int, enrolments: Sequence[ClientEnrolment]) -> list[ClientInfo]:
        """Enrol several clients in one transaction (DuplicateError if any is already enrolled)."""
        enrolments = tuple(enrolments)
        if not enrolments or not all(isinstance(e, ClientEnrolment) for e in enrolments):
            raise StorageValueError("enrolments must be a non-empty sequence of ClientEnrolment")
        ids = [e.client_id for e in enrolments]
        if len(set(ids)) != len(ids):
            raise StorageValueError("a client id appears twice among the enrolments")
        now = utc_now()
        with self._write() as session:
            _lock_run(session, run_id)
            existing = set(
                session.execute(select(Client.client_id).where(Client.run_id == run_id, Client.client_id.in_(ids))).scalars()
            )
            if existing:
                raise DuplicateError(f"clients {sorted(existing)} are already enrolled in run {run_id}")
            clients = []
            for enrolment in enrolments:
                client = Client(
                    run_id=run_id,
                    client_id=enrolment.client_id,
                    identity_public_key=enrolment.identity_public_key,
                    history_commitment=enrolment.history_commitment,
                    enrolled_at=now,
                    status="active",
                    deleted_at=None,
                    epsilon_budget=enrolment.epsilon_budget,
                    delta=enrolment.delta,
                )
                session.add(client)
                clients.append(client)
                append_audit_entry(
                    session,
                    run_id,
                    "client.enrolled",
                    {
                        "identity_key_sha256": hashlib.sha256(enrolment.identity_public_key).hexdigest(),
                        "history_commitment": enrolment.history_commitment.hex(),
                        "epsilon_budget": enrolment.epsilon_budget,
                        "delta": enrolment.delta,
                    },
                    client_id=enrolment.client_id,
                    now=now,
                )
            return [client_info(client) for client in clients]

    def enrol_client(
        self,
        run_id: int,
        client_id: int,
        *,
        identity_public_key: bytes,
        history_commitment: bytes,
        epsilon_budget: float,
        delta: float,
    ) -> ClientInfo:
        """Enrol one client (see ClientEnrolment for the fields)."""
        enrolment = ClientEnrolment(client_id, identity_public_key, history_commitment, epsilon_budget, delta)
        return self.enrol_clients(run_id, [enrolment])[0]

    def get_client(self, run_id: int, client_id: int) -> ClientInfo:
        with self._read() as session:
            return client_info(_get_client(session, run_id, client_id))

    def list_clients(self, run_id: int, *, status: str | None = None) -> list[ClientInfo]:
        """The run's clients by id, optionally only ``active`` or ``deleted`` ones."""
        statement = select(Client).where(Client.run_id == run_id).order_by(Client.client_id)
        if status is not None:
            check_choice(status, "client status", ("active", "deleted"))
            statement = statement.where(Client.status == status)
        with self._read() as session:
            _get_run(session, run_id)
            return [client_info(client) for client in session.execute(statement).scalars()]

    def mark_client_deleted(self, run_id: int, client_id: int) -> ClientInfo:
        """Mark a client deleted: later rounds, records and charges for it are refused. Idempotent."""
        now = utc_now()
        with self._write() as session:
            _lock_run(session, run_id)
            client = _get_client(session, run_id, client_id)
            _delete_client(session, client, now)
            return client_info(client)

    # --- rounds ----------------------------------------------------------------------------------

    def commit_round(self, run_id: int, write: RoundWrite) -> RoundInfo:
        """Persist a whole round in ONE transaction: the round row, its aggregates, an optional
        checkpoint, the sealed records, the ledger entries and a ``round.committed`` audit entry
        that records the SHA-256 of every blob. All or nothing.

        Raises RoundOrderError unless ``write.round_index`` is ``last_committed_round + 1`` (0 for
        the first), ClientNotFoundError / ClientDeletedError if the cohort names a client that is
        not enrolled or was deleted, and ConflictError if the run is not ``running``.
        """
        if not isinstance(write, RoundWrite):
            raise StorageValueError(f"commit_round needs a RoundWrite, got {type(write).__name__}")
        now = utc_now()
        with self._write() as session:
            run = _lock_run(session, run_id)
            if run.status != "running":
                raise ConflictError(f"run {run_id} is {run.status}; set it running before committing rounds")
            last = _last_round(session, run_id)
            expected = 0 if last is None else last + 1
            if write.round_index != expected:
                kind = DuplicateError if last is not None and write.round_index <= last else RoundOrderError
                raise kind(
                    f"run {run_id}: round {write.round_index} cannot be committed; the next round is {expected}"
                )
            _require_active(session, run_id, write.cohort)
            round_row = _round_row(run_id, write, now)
            session.add(round_row)
            session.flush()
            for aggregate in write.aggregates:
                session.add(
                    Aggregate(
                        run_id=run_id,
                        round_index=write.round_index,
                        name=aggregate.name,
                        kind=aggregate.kind,
                        codec=aggregate.codec,
                        element_count=aggregate.element_count,
                        byte_size=len(aggregate.blob),
                        sha256=aggregate.sha256,
                        blob=aggregate.blob,
                    )
                )
            checkpoint_summary = None
            if write.checkpoint is not None:
                checkpoint = _insert_checkpoint(session, run_id, write.checkpoint, write.round_index, now)
                checkpoint_summary = {"model_version": checkpoint.model_version, "sha256": checkpoint.sha256}
            record_digests = []
            if write.sealed_records:
                rows = []
                for record in write.sealed_records:
                    rows.append(
                        {
                            "run_id": run_id,
                            "round_index": write.round_index,
                            "client_id": record.client_id,
                            "ciphertext": record.ciphertext,
                            "record_size": len(record.ciphertext),
                            "parameter_count": record.parameter_count,
                            "record_metadata": dict(record.metadata),
                            "created_at": now,
                        }
                    )
                    record_digests.append([record.client_id, hashlib.sha256(record.ciphertext).hexdigest()])
                session.execute(insert(SealedRecord), rows)
            ledger_rows = insert_ledger_entries(session, run_id, write.ledger_entries, now) if write.ledger_entries else []
            payload = {
                "status": write.status,
                "stage": write.stage,
                "cohort": list(write.cohort),
                "survivors": list(write.survivors),
                "dropouts": {stage: list(ids) for stage, ids in write.dropouts.items()},
                "bytes_uploaded": write.bytes_uploaded,
                "aggregates": [
                    {"name": a.name, "kind": a.kind, "codec": a.codec, "elements": a.element_count,
                     "bytes": len(a.blob), "sha256": a.sha256}
                    for a in write.aggregates
                ],
                "checkpoint": checkpoint_summary,
                "sealed_records": {"count": len(record_digests), "sha256": _json_digest(sorted(record_digests))},
                "ledger_entries": ledger_anchor(ledger_rows),
                "details": dict(write.audit_details),
            }
            append_audit_entry(session, run_id, "round.committed", payload, round_index=write.round_index, now=now)
            return round_info(round_row)

    def last_committed_round(self, run_id: int) -> int | None:
        """The index of the newest committed round (completed or aborted), None before round 0."""
        with self._read() as session:
            _get_run(session, run_id)
            return _last_round(session, run_id)

    def next_round_index(self, run_id: int) -> int:
        """``last_committed_round + 1``, or 0: the round a (resumed) coordinator runs next."""
        last = self.last_committed_round(run_id)
        return 0 if last is None else last + 1

    def get_round(self, run_id: int, round_index: int) -> RoundInfo:
        with self._read() as session:
            row = session.get(Round, (run_id, round_index))
            if row is None:
                _get_run(session, run_id)
                raise RoundNotFoundError(f"run {run_id} has no committed round {round_index}")
            return round_info(row)

    def list_rounds(self, run_id: int) -> list[RoundInfo]:
        """Every committed round of the run, in order."""
        with self._read() as session:
            _get_run(session, run_id)
            rows = session.execute(select(Round).where(Round.run_id == run_id).order_by(Round.round_index)).scalars()
            return [round_info(row) for row in rows]

    def load_aggregates(self, run_id: int, round_index: int) -> dict[str, AggregateRead]:
        """A round's aggregates by name, decoded (CorruptBlobError if a blob is damaged)."""
        with self._read() as session:
            if session.get(Round, (run_id, round_index)) is None:
                _get_run(session, run_id)
                raise RoundNotFoundError(f"run {run_id} has no committed round {round_index}")
            rows = session.execute(
                select(Aggregate).where(Aggregate.run_id == run_id, Aggregate.round_index == round_index).order_by(Aggregate.name)
            ).scalars()
            return {row.name: aggregate_read(row) for row in rows}

    def iter_aggregates(self, run_id: int, name: str = "update", *, batch_size: int = 16) -> Iterator[AggregateRead]:
        """Stream one named aggregate over all rounds in round order (a few blobs in memory)."""
        check_int(batch_size, "batch_size", minimum=1)
        with self._read() as session:
            _get_run(session, run_id)
            statement = (
                select(Aggregate)
                .where(Aggregate.run_id == run_id, Aggregate.name == name)
                .order_by(Aggregate.round_index)
                .execution_options(yield_per=batch_size)
            )
            for row in session.execute(statement).scalars():
                yield aggregate_read(row)
                session.expunge(row)

    # --- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(
        self, run_id: int, write: CheckpointWrite, *, unlearned_request_id: int | None = None
    ) -> CheckpointInfo:
        """Store a model version outside a round (the initial model, or an unlearned one).

        ``write.round_index`` is required (-1 for the initial model; otherwise a committed round).
        With ``unlearned_request_id`` the deletion request moves ``opened -> unlearned`` in the same
        transaction, so a crash never leaves a new model without its request's state, or the
        reverse.
        """
        if not isinstance(write, CheckpointWrite):
            raise StorageValueError(f"save_checkpoint needs a CheckpointWrite, got {type(write).__name__}")
        if write.round_index is None:
            raise StorageValueError("a checkpoint saved outside a round needs round_index (-1 for the initial model)")
        now = utc_now()
        with self._write() as session:
            _lock_run(session, run_id)
            if write.round_index >= 0 and session.get(Round, (run_id, write.round_index)) is None:
                raise RoundNotFoundError(f"run {run_id} has no committed round {write.round_index} to checkpoint")
            if unlearned_request_id is not None:
                request = _get_request(session, unlearned_request_id)
                if request.run_id != run_id:
                    raise StorageValueError(f"deletion request {unlearned_request_id} belongs to run {request.run_id}")
            checkpoint = _insert_checkpoint(session, run_id, write, write.round_index, now)
            append_audit_entry(
                session,
                run_id,
                "checkpoint.saved",
                {"model_version": checkpoint.model_version, "source": write.source, "sha256": write.sha256,
                 "bytes": write.byte_size, "parameters": write.parameter_count, "details": dict(write.details)},
                round_index=write.round_index if write.round_index >= 0 else None,
                now=now,
            )
            if unlearned_request_id is not None:
                _transition(session, request, "unlearned", reason=None,
                            details={"model_version": checkpoint.model_version}, now=now)
            return checkpoint_info(checkpoint)

    def load_checkpoint(self, run_id: int, round_index: int | None = None) -> LoadedCheckpoint | None:
        """The newest model at or before ``round_index`` (newest overall when None): the highest
        round, then the highest model version. None when there is no such checkpoint."""
        statement = select(Checkpoint).where(Checkpoint.run_id == run_id)
        if round_index is not None:
            statement = statement.where(Checkpoint.round_index <= check_int(round_index, "round_index", minimum=-1))
        statement = statement.order_by(Checkpoint.round_index.desc(), Checkpoint.model_version.desc()).limit(1)
        with self._read() as session:
            _get_run(session, run_id)
            checkpoint = session.execute(statement).scalar_one_or_none()
            if checkpoint is None:
                return None
            tensors = session.execute(
                select(CheckpointTensor.name, CheckpointTensor.blob)
                .where(CheckpointTensor.checkpoint_id == checkpoint.id)
                .order_by(CheckpointTensor.position)
            ).all()
            return LoadedCheckpoint(
                info=checkpoint_info(checkpoint), tensors={name: decode_array(blob) for name, blob in tensors}
            )

    def list_checkpoints(self, run_id: int) -> list[CheckpointInfo]:
        with self._read() as session:
            _get_run(session, run_id)
            rows = session.execute(
                select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.model_version)
            ).scalars()
            return [checkpoint_info(row) for row in rows]

    def drop_old_checkpoints(self, run_id: int, keep_last: int) -> int:
        """Delete all but the newest ``keep_last`` (>= 1) model versions, in one transaction.
        Returns how many were dropped (audited with their versions)."""
        keep_last = check_int(keep_last, "keep_last", minimum=1)
        now = utc_now()
        with self._write() as session:
            _lock_run(session, run_id)
            versions = list(
                session.execute(
                    select(Checkpoint.id, Checkpoint.model_version)
                    .where(Checkpoint.run_id == run_id)
                    .order_by(Checkpoint.model_version.desc())
                ).all()
            )
            doomed = versions[keep_last:]
            if not doomed:
                return 0
            ids = [row.id for row in doomed]
            session.execute(delete(CheckpointTensor).where(CheckpointTensor.checkpoint_id.in_(ids)))
            session.execute(delete(Checkpoint).where(Checkpoint.id.in_(ids)))
            append_audit_entry(
                session, run_id, "checkpoints.dropped",
                {"model_versions": sorted(row.model_version for row in doomed), "kept": keep_last}, now=now,
            )
            return len(doomed)

    # --- sealed history records ------------------------------------------------------------------

    def iter_sealed_records(self, run_id: int, client_id: int, *, batch_size: int = 64) -> Iterator[SealedRecordRead]:
        """Stream one client's sealed records in round order, ``batch_size`` rows at a time, so
        memory stays O(record size) however long the history (the unlearning pass needs this)."""
        check_int(batch_size, "batch_size", minimum=1)
        with self._read() as session:
            _get_client(session, run_id, client_id)
            # Plain rows, not ORM objects: nothing accumulates in the session while streaming.
            statement = (
                select(
                    SealedRecord.round_index,
                    SealedRecord.ciphertext,
                    SealedRecord.record_size,
                    SealedRecord.record_metadata,
                    SealedRecord.parameter_count,
                    SealedRecord.created_at,
                )
                .where(SealedRecord.run_id == run_id, SealedRecord.client_id == client_id)
                .order_by(SealedRecord.round_index)
                .execution_options(yield_per=batch_size)
            )
            for row in session.execute(statement):
                yield SealedRecordRead(
                    run_id=run_id,
                    round_index=row.round_index,
                    client_id=client_id,
                    ciphertext=bytes(row.ciphertext),
                    record_size=row.record_size,
                    metadata=dict(row.record_metadata),
                    parameter_count=row.parameter_count,
                    created_at=from_db_time(row.created_at),
                )

    def count_sealed_records(self, run_id: int, client_id: int | None = None) -> int:
        statement = select(func.count()).select_from(SealedRecord).where(SealedRecord.run_id == run_id)
        if client_id is not None:
            statement = statement.where(SealedRecord.client_id == client_id)
        with self._read() as session:
            _get_run(session, run_id)
            return int(session.execute(statement).scalar_one())

    def shred_client_records(self, run_id: int, client_id: int, *, request_id: int | None = None) -> ShredResult:
        """Destroy every sealed record of a client, in one transaction (crypto-shredding: the
        server never held the key, and the ciphertexts are now gone too).

        With ``request_id`` the same transaction marks the client deleted and moves the deletion
        request ``unlearned -> shredded``. Afterwards the engine is made to drop its copies (SQLite:
        zeroed pages, WAL checkpointed and truncated; PostgreSQL: VACUUM), see ShredResult.
        """
        now = utc_now()
        with self._write() as session:
            _lock_run(session, run_id)
            client = _get_client(session, run_id, client_id)
            request = None
            if request_id is not None:
                request = _get_request(session, request_id)
                if (request.run_id, request.client_id) != (run_id, client_id):
                    raise StorageValueError(f"deletion request {request_id} is not for run {run_id} client {client_id}")
                check_transition(request.state, "shredded", reason=None)
            count, size = session.execute(
                select(func.count(), func.coalesce(func.sum(SealedRecord.record_size), 0)).where(
                    SealedRecord.run_id == run_id, SealedRecord.client_id == client_id
                )
            ).one()
            session.execute(delete(SealedRecord).where(SealedRecord.run_id == run_id, SealedRecord.client_id == client_id))
            append_audit_entry(
                session, run_id, "records.shredded",
                {"records": int(count), "bytes": int(size), "request_id": request_id},
                client_id=client_id, now=now,
            )
            if request is not None:
                _delete_client(session, client, now)
                _transition(session, request, "shredded", reason=None, details={"records": int(count)}, now=now)
        return ShredResult(run_id, client_id, int(count), int(size), self._compact_after_shredding())

    def _compact_after_shredding(self) -> bool:
        """Make the engine drop its copies of deleted records (outside any transaction)."""
        raw = self.database.engine.raw_connection()
        try:
            cursor = raw.cursor()
            if self.database.dialect == "sqlite":
                busy, _, _ = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                return busy == 0
            if self.database.dialect == "postgresql":
                raw.driver_connection.autocommit = True  # VACUUM cannot run inside a transaction
                try:
                    cursor.execute("VACUUM sealed_records")
                finally:
                    raw.driver_connection.autocommit = False
                return True
            return False
        finally:
            raw.close()

    # --- privacy ledger --------------------------------------------------------------------------

    def append_ledger_entries(self, run_id: int, entries: Sequence[LedgerEntryWrite]) -> list[LedgerEntryRead]:
        """Record privacy charges outside a round commit (e.g. charged before an upload whose
        round then aborted), extending each client's hash chain; one transaction, audited."""
        entries = tuple(entries)
        if not entries or not all(isinstance(e, LedgerEntryWrite) for e in entries):
            raise StorageValueError("entries must be a non-empty sequence of LedgerEntryWrite")
        now = utc_now()
        with self._write() as session:
            _lock_run(session, run_id)
            _require_active(session, run_id, sorted({e.client_id for e in entries}))
            rows = insert_ledger_entries(session, run_id, entries, now)
            append_audit_entry(session, run_id, "ledger.charged", ledger_anchor(rows), now=now)
            return [ledger_read(row) for row in rows]

    def ledger_entries(self, run_id: int, client_id: int | None = None) -> list[LedgerEntryRead]:
        """The run's ledger entries in the order they were written (one client's if given)."""
        statement = select(LedgerEntry).where(LedgerEntry.run_id == run_id).order_by(LedgerEntry.id)
        if client_id is not None:
            statement = statement.where(LedgerEntry.client_id == client_id)
        with self._read() as session:
            if client_id is None:
                _get_run(session, run_id)
            else:
                _get_client(session, run_id, client_id)
            return [ledger_read(row) for row in session.execute(statement).scalars()]

    def verify_ledger(self, run_id: int, client_id: int | None = None) -> ChainVerification:
        """Verify the ledger hash chain of every client of the run (or one)."""
        with self._read() as session:
            _get_run(session, run_id)
            return verify_ledger_chains(session, run_id, client_id)

    def cross_check_ledger(self, run_id: int) -> LedgerCrossCheck:
        """The run's ledger against the counts, digests, chain heads, cohorts and survivors its
        audit log records (``storage.audit.cross_check_ledger``)."""
        with self._read() as session:
            _get_run(session, run_id)
            return cross_check_ledger_session(session, run_id)

    # --- deletion requests -----------------------------------------------------------------------

    def create_deletion_request(
        self, run_id: int, client_id: int, *, details: Mapping[str, Any] | None = None
    ) -> DeletionRequestInfo:
        """Open a deletion request (state ``requested``), or return the client's request that is
        still open: a repeated request resumes the first (idempotent). ClientDeletedError if the
        client was already deleted."""
        details = check_json_object(details or {}, "deletion request details")
        now = utc_now()
        with self._write() as session:
            _lock_run(session, run_id)
            client = _get_client(session, run_id, client_id)
            open_request = _open_request(session, run_id, client_id)
            if open_request is not None:
                return request_info(open_request)
            if client.status == "deleted":
                raise ClientDeletedError(f"client {client_id} of run {run_id} is already deleted")
            request = DeletionRequest(
                run_id=run_id, client_id=client_id, state="requested", reason=None,
                details=dict(details), created_at=now, updated_at=now,
            )
            session.add(request)
            session.flush()
            append_audit_entry(
                session, run_id, "deletion.requested", {"request_id": request.id, "details": dict(details)},
                client_id=client_id, now=now,
            )
            return request_info(request)

    def transition_deletion_request(
        self,
        request_id: int,
        state: str,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> DeletionRequestInfo:
        """Move a request along its state machine (``storage.deletion``); ``reason`` is required
        for (and only for) ``failed``; ``details`` are merged into the request's details.
        Moving to the current state is a no-op. InvalidTransitionError for any other edge."""
        details = check_json_object(details or {}, "transition details")
        now = utc_now()
        with self._write() as session:
            request = _get_request(session, request_id)
            _lock_run(session, request.run_id)
            session.refresh(request)
            _transition(session, request, state, reason=reason, details=details, now=now)
            return request_info(request)

    def get_deletion_request(self, request_id: int) -> DeletionRequestInfo:
        with self._read() as session:
            return request_info(_get_request(session, request_id))

    def open_deletion_request(self, run_id: int, client_id: int) -> DeletionRequestInfo | None:
        """The client's request that is neither shredded nor failed, if any (to resume after a crash)."""
        with self._read() as session:
            _get_client(session, run_id, client_id)
            request = _open_request(session, run_id, client_id)
            return None if request is None else request_info(request)

    def list_deletion_requests(self, run_id: int, client_id: int | None = None) -> list[DeletionRequestInfo]:
        statement = select(DeletionRequest).where(DeletionRequest.run_id == run_id).order_by(DeletionRequest.id)
        if client_id is not None:
            statement = statement.where(DeletionRequest.client_id == client_id)
        with self._read() as session:
            _get_run(session, run_id)
            return [request_info(row) for row in session.execute(statement).scalars()]

    # --- audit log -------------------------------------------------------------------------------

    def append_audit(
        self,
        run_id: int,
        event: str,
        payload: Mapping[str, Any],
        *,
        round_index: int | None = None,
        client_id: int | None = None,
    ) -> AuditEntry:
        """Append one entry to the run's hash-chained audit log. ``event`` is a lower-case dotted
        name (``unlearning.verified``); ``payload`` a JSON object."""
        payload = check_json_object(payload, "audit payload")
        now = utc_now()
        with self._write() as session:
            _lock_run(session, run_id)
            row = append_audit_entry(session, run_id, event, payload, round_index=round_index, client_id=client_id, now=now)
            return audit_entry(row)

    def audit_entries(self, run_id: int, *, event: str | None = None) -> list[AuditEntry]:
        """The run's audit log in order (only one kind of event if given)."""
        statement = select(AuditLogEntry).where(AuditLogEntry.run_id == run_id).order_by(AuditLogEntry.sequence)
        if event is not None:
            statement = statement.where(AuditLogEntry.event == event)
        with self._read() as session:
            _get_run(session, run_id)
            return [audit_entry(row) for row in session.execute(statement).scalars()]

    def audit_head(self, run_id: int) -> ChainHead:
        """The run's audit-log head: publish it elsewhere and pass it back as ``expected_head``."""
        with self._read() as session:
            _get_run(session, run_id)
            head = session.get(AuditHead, run_id)
            if head is None:
                raise RunNotFoundError(f"run {run_id} has no audit log head")
            return ChainHead(head.sequence, head.entry_hash)

    def verify_audit_log(self, run_id: int | None = None, *, expected_head: ChainHead | None = None) -> ChainVerification:
        """Verify the audit chain of one run (every run when None); names the first bad entry."""
        with self._read() as session:
            if run_id is not None:
                _get_run(session, run_id)
            return verify_audit_chains(session, run_id, expected_head=expected_head)

    # --- usage -----------------------------------------------------------------------------------

    def storage_usage(self, run_id: int) -> StorageUsage:
        """Rows, payload bytes and (for model-sized tables) bits per parameter, per table, for
        one run; ``database_bytes`` is the whole database's size on disk (all runs)."""
        with self._read() as session:
            _get_run(session, run_id)
            return usage.storage_usage(session, run_id)


# --- helpers (inside a session) ------------------------------------------------------------------


def _reason(error: sa_exc.DBAPIError) -> str:
    return " ".join(str(error.orig if error.orig is not None else error).split())


def _json_digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, check_int(run_id, "run_id", minimum=1))
    if run is None:
        raise RunNotFoundError(f"no run with id {run_id}")
    return run


def _lock_run(session: Session, run_id: int) -> Run:
    """The run row, locked for the rest of the transaction (a no-op lock on SQLite, whose write
    transactions already hold the database lock)."""
    statement = select(Run).where(Run.id == check_int(run_id, "run_id", minimum=1)).with_for_update()
    run = session.execute(statement).scalar_one_or_none()
    if run is None:
        raise RunNotFoundError(f"no run with id {run_id}")
    return run


def _get_client(session: Session, run_id: int, client_id: int) -> Client:
    client = session.get(Client, (check_int(run_id, "run_id", minimum=1), check_int(client_id, "client_id")))
    if client is None:
        _get_run(session, run_id)
        raise ClientNotFoundError(f"client {client_id} is not enrolled in run {run_id}")
    return client


def _require_active(session: Session, run_id: int, client_ids: Sequence[int]) -> None:
    rows = dict(
        session.execute(
            select(Client.client_id, Client.status).where(Client.run_id == run_id, Client.client_id.in_(list(client_ids)))
        ).all()
    )
    missing = sorted(set(client_ids) - set(rows))
    if missing:
        raise ClientNotFoundError(f"clients {missing} are not enrolled in run {run_id}")
    deleted = sorted(client for client, status in rows.items() if status == "deleted")
    if deleted:
        raise ClientDeletedError(f"clients {deleted} of run {run_id} were deleted and are refused")


def _delete_client(session: Session, client: Client, now) -> None:
    if client.status == "deleted":
        return
    client.status, client.deleted_at = "deleted", now
    append_audit_entry(session, client.run_id, "client.deleted", {}, client_id=client.client_id, now=now)


def _last_round(session: Session, run_id: int) -> int | None:
    return session.execute(select(func.max(Round.round_index)).where(Round.run_id == run_id)).scalar_one()


def _round_row(run_id: int, write: RoundWrite, now) -> Round:
    return Round(
        run_id=run_id,
        round_index=write.round_index,
        status=write.status,
        stage=write.stage,
        cohort=list(write.cohort),
        survivors=list(write.survivors),
        dropouts={stage: list(ids) for stage, ids in write.dropouts.items()},
        # JSON object keys are strings; read back as ints by _round_info.
        client_weights={str(client): weight for client, weight in write.client_weights.items()},
        parameters=dict(write.parameters),
        bytes_uploaded=write.bytes_uploaded,
        started_at=check_time(write.started_at, "started_at"),
        finished_at=check_time(write.finished_at, "finished_at"),
        committed_at=now,
    )


def _insert_checkpoint(session: Session, run_id: int, write: CheckpointWrite, round_index: int, now) -> Checkpoint:
    latest = session.execute(select(func.max(Checkpoint.model_version)).where(Checkpoint.run_id == run_id)).scalar_one()
    checkpoint = Checkpoint(
        run_id=run_id,
        round_index=round_index,
        model_version=0 if latest is None else latest + 1,
        source=write.source,
        codec=write.codec,
        parameter_count=write.parameter_count,
        byte_size=write.byte_size,
        sha256=write.sha256,
        details=dict(write.details),
        created_at=now,
    )
    session.add(checkpoint)
    session.flush()
    session.execute(
        insert(CheckpointTensor),
        [
            {"checkpoint_id": checkpoint.id, "position": position, "name": name, "blob": blob}
            for position, (name, blob) in enumerate(write.encoded)
        ],
    )
    return checkpoint


def _get_request(session: Session, request_id: int) -> DeletionRequest:
    request = session.get(DeletionRequest, check_int(request_id, "request_id", minimum=1))
    if request is None:
        raise DeletionRequestNotFoundError(f"no deletion request with id {request_id}")
    return request


def _open_request(session: Session, run_id: int, client_id: int) -> DeletionRequest | None:
    return session.execute(
        select(DeletionRequest).where(
            DeletionRequest.run_id == run_id,
            DeletionRequest.client_id == client_id,
            DeletionRequest.state.not_in(("shredded", "failed")),
        )
    ).scalar_one_or_none()


def _transition(session: Session, request: DeletionRequest, state: str, *, reason, details, now) -> None:
    if not check_transition(request.state, state, reason=reason):
        return
    previous = request.state
    request.state, request.updated_at = state, now
    if reason is not None:
        request.reason = reason
    if details:
        request.details = {**request.details, **dict(details)}
    append_audit_entry(
        session, request.run_id, f"deletion.{state}",
        {"request_id": request.id, "from": previous, "reason": reason, "details": dict(details)},
        client_id=request.client_id, now=now,
    )


