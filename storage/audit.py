"""Hash chains: building audit-log and ledger entries, and verifying them.

Each run's audit log is one chain and each (run, client) privacy ledger is one chain. Entry ``k``
stores ``entry_hash_k = SHA-256(canonical_json(content_k + {"prev_hash": entry_hash_(k-1)}))``
(``storage.canonical.chain_hash``) with ``entry_hash_(-1)`` = 64 zeros; ``content`` includes the
entry's own sequence number. The audit log's head (last sequence and hash) is kept in
``audit_heads``, written in the same transaction, so deleting the newest entries is caught too.

What this detects: an edited entry (its hash no longer matches), a deleted, inserted or reordered
entry (a sequence gap, or a ``prev_hash`` that does not match its predecessor), and a truncated
tail (the head disagrees). What it cannot: someone able to rewrite the whole chain *and* its head
consistently, since the chain has no secret key; compare the head against a copy kept elsewhere
(``expected_head``) for that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, aliased

from storage.canonical import GENESIS_HASH, chain_hash
from storage.entities import LedgerEntryWrite
from storage.errors import IntegrityError, StorageValueError
from storage.schema import AuditHead, AuditLogEntry, LedgerEntry, Run
from storage.validation import check_int, check_json_object, iso_utc

if TYPE_CHECKING:
    from storage.engine import Database
    from storage.repositories import Repository

_VERIFY_BATCH = 500
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


# --- appending (inside the caller's write transaction) --------------------------------------------


def append_audit_entry(
    session: Session,
    run_id: int,
    event: str,
    payload: Mapping[str, Any],
    *,
    round_index: int | None = None,
    client_id: int | None = None,
    now: datetime,
) -> AuditLogEntry:
    """Append one entry to the run's audit chain inside the caller's write transaction: lock the
    head row, hash the entry onto it, insert it and move the head, all or nothing with the caller.

    ``event`` is a lower-case dotted name; ``payload`` a JSON object; ``now`` naive UTC.
    """
    if not (isinstance(event, str) and _EVENT_NAME.match(event)):
        raise StorageValueError(f"audit event must be a lower-case dotted name like 'round.committed', got {event!r}")
    if round_index is not None:
        round_index = check_int(round_index, "audit round_index")
    if client_id is not None:
        client_id = check_int(client_id, "audit client_id")
    head = session.execute(select(AuditHead).where(AuditHead.run_id == run_id).with_for_update()).scalar_one_or_none()
    sequence, prev_hash = (0, GENESIS_HASH) if head is None else (head.sequence + 1, head.entry_hash)
    row = AuditLogEntry(
        run_id=run_id,
        sequence=sequence,
        event=event,
        round_index=round_index,
        client_id=client_id,
        payload=dict(check_json_object(payload, "audit payload")),
        created_at=now,
        prev_hash=prev_hash,
    )
    row.entry_hash = chain_hash(audit_content(row), prev_hash)
    session.add(row)
    if head is None:
        session.add(AuditHead(run_id=run_id, sequence=sequence, entry_hash=row.entry_hash))
    else:
        head.sequence, head.entry_hash = sequence, row.entry_hash
    session.flush()
    return row


def insert_ledger_entries(
    session: Session, run_id: int, entries: Sequence[LedgerEntryWrite], now: datetime
) -> list[SimpleNamespace]:
    """Insert ledger entries inside the caller's write transaction, extending each client's chain
    from its newest entry (one query for all clients); returns the rows as written."""
    clients = sorted({entry.client_id for entry in entries})
    # A correlated MAX per client: each is one probe of the (run_id, client_id, sequence) index on
    # both engines (a GROUP BY join let PostgreSQL's generic plan scan the table each round).
    previous = aliased(LedgerEntry)
    newest = (
        select(func.max(previous.sequence))
        .where(previous.run_id == LedgerEntry.run_id, previous.client_id == LedgerEntry.client_id)
        .scalar_subquery()
    )
    heads: dict[int, tuple[int, str]] = {client: (-1, GENESIS_HASH) for client in clients}
    for client, sequence, entry_hash in session.execute(
        select(LedgerEntry.client_id, LedgerEntry.sequence, LedgerEntry.entry_hash).where(
            LedgerEntry.run_id == run_id, LedgerEntry.client_id.in_(clients), LedgerEntry.sequence == newest
        )
    ):
        heads[client] = (sequence, entry_hash)
    rows = []
    for entry in entries:
        sequence, prev_hash = heads[entry.client_id]
        row = SimpleNamespace(
            run_id=run_id,
            client_id=entry.client_id,
            sequence=sequence + 1,
            round_index=entry.round_index,
            stream=entry.stream,
            event=dict(entry.event_json),
            epsilon_after=entry.epsilon_after,
            delta=entry.delta,
            created_at=now,
            prev_hash=prev_hash,
        )
        row.entry_hash = chain_hash(ledger_content(row), prev_hash)
        heads[entry.client_id] = (row.sequence, row.entry_hash)
        rows.append(row)
    session.execute(insert(LedgerEntry), [vars(row) for row in rows])
    return rows


# --- hashed content and verification ---------------------------------------------------------------


def audit_content(row: AuditLogEntry) -> dict[str, Any]:
    """The hashed content of an audit-log row."""
    return {
        "kind": "audit",
        "run_id": row.run_id,
        "sequence": row.sequence,
        "event": row.event,
        "round_index": row.round_index,
        "client_id": row.client_id,
        "payload": row.payload,
        "created_at": iso_utc(row.created_at),
    }


def ledger_content(row: LedgerEntry) -> dict[str, Any]:
    """The hashed content of a privacy-ledger row."""
    return {
        "kind": "ledger",
        "run_id": row.run_id,
        "client_id": row.client_id,
        "sequence": row.sequence,
        "round_index": row.round_index,
        "stream": row.stream,
        "event": row.event,
        "epsilon_after": row.epsilon_after,
        "delta": row.delta,
        "created_at": iso_utc(row.created_at),
    }


@dataclass(frozen=True)
class ChainHead:
    """The last entry of a chain: an anchor to compare against a copy kept elsewhere."""

    sequence: int
    entry_hash: str


@dataclass(frozen=True)
class BadEntry:
    """The first entry at which a chain stops verifying.

    ``sequence`` is the position that is wrong (for a deleted entry: the missing position);
    ``entry_id`` the row's primary key when a row exists at that position.
    """

    chain: str
    sequence: int
    entry_id: int | None
    reason: str

    def __str__(self) -> str:
        row = f" (row id {self.entry_id})" if self.entry_id is not None else ""
        return f"{self.chain}: entry #{self.sequence}{row}: {self.reason}"


@dataclass(frozen=True)
class ChainVerification:
    """Result of verifying one or more chains: ``ok``, how much was checked, the first bad entry."""

    ok: bool
    chains_checked: int
    entries_checked: int
    first_bad: BadEntry | None = None
    heads: Mapping[str, ChainHead] | None = None

    def raise_if_bad(self) -> None:
        """Raise IntegrityError naming the first bad entry, if there is one."""
        if self.first_bad is not None:
            raise IntegrityError(f"hash chain broken at {self.first_bad}")


def verify_chain(
    rows: Iterable[Any],
    *,
    chain: str,
    content_of,
    head: ChainHead | None,
    head_required: bool,
) -> tuple[int, BadEntry | None, ChainHead | None]:
    """Walk ``rows`` (ordered by sequence) and return (entries checked, first bad, last head).

    ``content_of(row)`` gives the hashed content; rows carry ``id``, ``sequence``, ``prev_hash``,
    ``entry_hash``. When ``head_required``, ``head`` (None if absent) must match the last row.
    """
    expected_sequence = 0
    previous_hash = GENESIS_HASH
    checked = 0
    for row in rows:
        if row.sequence != expected_sequence:
            if row.sequence > expected_sequence:
                reason = f"missing: the log jumps from #{expected_sequence - 1} to #{row.sequence} (entries deleted)"
                return checked, BadEntry(chain, expected_sequence, None, reason), None
            reason = f"out of order: found sequence {row.sequence} where #{expected_sequence} belongs"
            return checked, BadEntry(chain, expected_sequence, row.id, reason), None
        if row.prev_hash != previous_hash:
            reason = "its prev_hash does not match the entry before it (an entry was deleted, inserted or reordered)"
            return checked, BadEntry(chain, row.sequence, row.id, reason), None
        if chain_hash(content_of(row), row.prev_hash) != row.entry_hash:
            reason = "its content does not match its hash (the entry was edited)"
            return checked, BadEntry(chain, row.sequence, row.id, reason), None
        previous_hash = row.entry_hash
        expected_sequence += 1
        checked += 1
    last = ChainHead(expected_sequence - 1, previous_hash) if checked else None
    if head_required:
        if head is None and last is not None:
            return checked, BadEntry(chain, 0, None, "the chain's head record is missing"), last
        if head is not None and last != head:
            if last is None or head.sequence > last.sequence:
                start = 0 if last is None else last.sequence + 1
                reason = f"missing: the head says the log ends at #{head.sequence} (newest entries deleted)"
                return checked, BadEntry(chain, start, None, reason), last
            reason = "the head does not match the last entry (the chain was rewritten or extended past it)"
            return checked, BadEntry(chain, last.sequence, None, reason), last
    return checked, None, last


def _rows(session: Session, statement):
    return session.execute(statement.execution_options(yield_per=_VERIFY_BATCH)).scalars()


def verify_audit_chains(
    session: Session, run_id: int | None = None, *, expected_head: ChainHead | None = None
) -> ChainVerification:
    """Verify the audit chain of ``run_id`` (every run's when None) inside ``session``."""
    if run_id is None:
        run_ids = list(session.execute(select(Run.id).order_by(Run.id)).scalars())
        if expected_head is not None:
            raise StorageValueError("expected_head needs a run_id")
    else:
        run_ids = [run_id]
    total = 0
    heads: dict[str, ChainHead] = {}
    for position, current in enumerate(run_ids, start=1):
        chain = f"run {current} audit log"
        stored = session.get(AuditHead, current)
        head = ChainHead(stored.sequence, stored.entry_hash) if stored is not None else None
        statement = select(AuditLogEntry).where(AuditLogEntry.run_id == current).order_by(AuditLogEntry.sequence)
        checked, bad, last = verify_chain(
            _rows(session, statement), chain=chain, content_of=audit_content, head=head, head_required=True
        )
        total += checked
        if bad is None and last is None:
            # Every run starts its log with a run.created entry, so an empty log was emptied.
            bad = BadEntry(chain, 0, None, "missing: the run has no audit entries at all (all deleted)")
        if bad is None and expected_head is not None and last != expected_head:
            bad = BadEntry(chain, last.sequence, None, f"the log's head does not match the expected {expected_head}")
        if bad is not None:
            return ChainVerification(False, position, total, bad, heads)
        heads[chain] = last
    return ChainVerification(True, len(run_ids), total, None, heads)


def verify_ledger_chains(session: Session, run_id: int, client_id: int | None = None) -> ChainVerification:
    """Verify the privacy-ledger chain of each client of ``run_id`` (or of one client)."""
    statement = select(LedgerEntry.client_id).where(LedgerEntry.run_id == run_id).distinct()
    if client_id is not None:
        statement = statement.where(LedgerEntry.client_id == client_id)
    clients = sorted(session.execute(statement).scalars())
    total = 0
    heads: dict[str, ChainHead] = {}
    for client in clients:
        chain = f"run {run_id} client {client} ledger"
        rows = _rows(
            session,
            select(LedgerEntry)
            .where(LedgerEntry.run_id == run_id, LedgerEntry.client_id == client)
            .order_by(LedgerEntry.sequence),
        )
        checked, bad, last = verify_chain(rows, chain=chain, content_of=ledger_content, head=None, head_required=False)
        total += checked
        if bad is not None:
            return ChainVerification(False, len(heads) + 1, total, bad, heads)
        heads[chain] = last
    return ChainVerification(True, len(clients), total, None, heads)


def verify_audit_log(
    source: Repository | Database | Session,
    run_id: int | None = None,
    *,
    expected_head: ChainHead | None = None,
) -> ChainVerification:
    """Verify the audit log of one run (or every run), naming the first bad entry if any.

    ``source`` is a Repository, a Database or an open Session. ``expected_head`` optionally
    pins the chain to a head recorded elsewhere (needs ``run_id``).
    """
    from storage.engine import Database
    from storage.repositories import Repository

    if isinstance(source, Session):
        return verify_audit_chains(source, run_id, expected_head=expected_head)
    if isinstance(source, Repository):
        source = source.database
    if not isinstance(source, Database):
        raise StorageValueError(f"verify_audit_log needs a Repository, Database or Session, got {type(source).__name__}")
    with source.reading() as session:
        return verify_audit_chains(session, run_id, expected_head=expected_head)
