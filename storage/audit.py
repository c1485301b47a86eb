"""Hash chains: building audit-log and ledger entries, and verifying them.

Each run's audit log is one chain and each (run, client) privacy ledger is one chain. Entry ``k``
stores ``entry_hash_k = SHA-256(canonical_json(content_k + {"prev_hash": entry_hash_(k-1)}))``
(``storage.canonical.chain_hash``) with ``entry_hash_(-1)`` = 64 zeros; ``content`` includes the
entry's own sequence number. The audit log's head (last sequence and hash) is kept in
``audit_heads``, written in the same transaction, so deleting the newest entries is caught too.

What this detects: an edited entry (its hash no longer matches), a deleted, inserted or reordered
entry (a sequence gap, or a ``prev_hash`` that does not match its predecessor), and a truncated
tail (the head disagrees). A ledger chain's tail is anchored in the audit log: every ledger write
records its rows' count, digest and each client's new head there (:func:`ledger_anchor`), and
:func:`cross_check_ledger` compares. What the chains alone cannot catch: someone able to rewrite
the whole audit chain *and* its head consistently, since the chain has no secret key; a head
signed by the server and kept elsewhere (``storage.signed_head``) catches that.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, aliased

from storage.canonical import GENESIS_HASH, canonical_json, chain_hash
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


# --- the ledger anchored in the audit log ------------------------------------------------------------


def ledger_anchor(rows: Sequence[Any]) -> dict[str, Any]:
    """What an audit entry records about the ledger rows written in its transaction: ``count``,
    ``sha256`` (SHA-256 of the canonical JSON list of their entry hashes, in write order) and
    ``heads``: for each client written, ``[sequence, entry_hash, round_index]`` of its newest row.

    The heads anchor every client's chain in the audit log: a ledger row can only be removed,
    replaced or re-hashed without changing the audit chain if it is newer than every anchor,
    and no legitimate row is (every write goes through this function).
    """
    heads: dict[str, list[Any]] = {}
    for row in rows:
        heads[str(row.client_id)] = [row.sequence, row.entry_hash, row.round_index]
    return {"count": len(rows), "sha256": ledger_digest([row.entry_hash for row in rows]), "heads": heads}


def ledger_digest(entry_hashes: Sequence[str]) -> str:
    """SHA-256 (hex) of the canonical JSON list of ledger entry hashes."""
    return hashlib.sha256(canonical_json(list(entry_hashes))).hexdigest()


@dataclass(frozen=True)
class LedgerFinding:
    """One way the ledger disagrees with the audit log: the client and round it concerns (None
    when unknown), the audit entry that says otherwise, and what is missing or wrong."""

    client_id: int | None
    round_index: int | None
    audit_sequence: int | None
    problem: str

    def __str__(self) -> str:
        where = []
        if self.client_id is not None:
            where.append(f"client {self.client_id}")
        if self.round_index is not None:
            where.append(f"round {self.round_index}")
        if self.audit_sequence is not None:
            where.append(f"audit entry #{self.audit_sequence}")
        return f"{', '.join(where) or 'ledger'}: {self.problem}"

    def as_json(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "round_index": self.round_index,
                "audit_sequence": self.audit_sequence, "problem": self.problem}


@dataclass(frozen=True)
class LedgerCrossCheck:
    """The ledger checked against the audit log: ``ok`` when no finding; how many audit entries
    and rounds were compared, how many ledger rows were accounted for."""

    ok: bool
    audit_entries_checked: int
    rounds_checked: int
    ledger_rows: int
    findings: tuple[LedgerFinding, ...]

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "audit_entries_checked": self.audit_entries_checked,
                "rounds_checked": self.rounds_checked, "ledger_rows": self.ledger_rows,
                "findings": [finding.as_json() for finding in self.findings]}


_LEDGER_EVENTS = ("round.committed", "ledger.charged")


def _run_charges(config: Mapping[str, Any]) -> bool:
    """Whether the run's configuration charges every participant each round (any noise, or
    DP-SGD inside the clients): then every survivor of a completed round has a ledger entry."""
    return config.get("noise", "none") != "none" or config.get("trainer") == "dpsgd"


def cross_check_ledger_session(session: Session, run_id: int) -> LedgerCrossCheck:
    """Compare the run's privacy ledger with what its audit log says was written (see
    :func:`cross_check_ledger`)."""
    run = session.get(Run, run_id)
    if run is None:
        raise StorageValueError(f"run {run_id} does not exist")
    rows = list(session.execute(
        select(LedgerEntry.id, LedgerEntry.client_id, LedgerEntry.sequence, LedgerEntry.round_index,
               LedgerEntry.entry_hash).where(LedgerEntry.run_id == run_id).order_by(LedgerEntry.id)))
    by_client: dict[int, dict[int, Any]] = {}
    for row in rows:
        by_client.setdefault(row.client_id, {})[row.sequence] = row
    audits = list(session.execute(
        select(AuditLogEntry).where(AuditLogEntry.run_id == run_id, AuditLogEntry.event.in_(_LEDGER_EVENTS))
        .order_by(AuditLogEntry.sequence)).scalars())
    findings: list[LedgerFinding] = []
    claimed: set[int] = set()
    anchored: dict[int, int] = {}  # client -> newest anchored sequence
    rounds = 0
    charges = _run_charges(run.config or {})
    for audit in audits:
        payload = audit.payload or {}
        record = payload.get("ledger_entries") if audit.event == "round.committed" else payload
        if not isinstance(record, Mapping):
            findings.append(LedgerFinding(None, audit.round_index, audit.sequence, "the audit entry has no ledger record"))
            continue
        heads = record.get("heads")
        if isinstance(heads, Mapping):
            mine = _claim_anchored(heads, by_client, anchored, audit, findings)
        else:  # written before heads were anchored: the next `count` rows in write order
            mine = [row for row in rows if row.id not in claimed and row.id > max(claimed, default=0)]
            mine = mine[: int(record.get("count", 0))]
            for row in mine:  # a later anchored entry starts after these
                anchored[row.client_id] = max(anchored.get(row.client_id, -1), row.sequence)
        claimed.update(row.id for row in mine)
        mine.sort(key=lambda row: row.id)
        count, digest = record.get("count"), record.get("sha256")
        if count != len(mine) or digest != ledger_digest([row.entry_hash for row in mine]):
            findings.append(LedgerFinding(
                None, audit.round_index, audit.sequence,
                f"the audit log records {count} ledger entries (sha256 {str(digest)[:12]}…) written here; the "
                f"ledger holds {len(mine)} of them" + ("" if count != len(mine) else " with a different digest "
                                                       "(entries rewritten)")))
        if audit.event == "round.committed":
            rounds += 1
            findings.extend(_check_round(audit, payload, rows, charges))
    for row in rows:
        if row.id not in claimed:
            findings.append(LedgerFinding(
                row.client_id, row.round_index, None,
                f"ledger entry #{row.sequence} is anchored by no audit-log entry (written outside a recorded "
                "commit, or the audit log was cut after it)"))
    return LedgerCrossCheck(not findings, len(audits), rounds, len(rows), tuple(findings))


def _claim_anchored(heads: Mapping[str, Any], by_client, anchored: dict[int, int], audit, findings) -> list[Any]:
    """The rows an anchored audit entry covers: per client, the sequences after its previous
    anchor up to this head; a finding for each one missing or different."""
    mine = []
    for key, head in heads.items():
        try:
            client = int(key)
            sequence, entry_hash, round_index = int(head[0]), str(head[1]), head[2]
        except (TypeError, ValueError, IndexError):
            findings.append(LedgerFinding(None, audit.round_index, audit.sequence, f"unreadable ledger head {key!r}"))
            continue
        chain = by_client.get(client, {})
        start = anchored.get(client, -1) + 1
        missing = [s for s in range(start, sequence + 1) if s not in chain]
        if missing:
            what = (f"all of its ledger entries are missing (#{start}..#{sequence})" if not chain
                    else f"ledger entries {_ranges(missing)} are missing")
            findings.append(LedgerFinding(client, round_index, audit.sequence,
                                          f"{what}; the audit log anchors its chain at #{sequence}"))
        elif chain[sequence].entry_hash != entry_hash:
            findings.append(LedgerFinding(client, round_index, audit.sequence,
                                          f"ledger entry #{sequence} differs from the hash the audit log anchors "
                                          "(the entry or one before it was rewritten)"))
        mine.extend(chain[s] for s in range(start, sequence + 1) if s in chain)
        anchored[client] = max(anchored.get(client, -1), sequence)
    return mine


def _check_round(audit, payload: Mapping[str, Any], rows, charges: bool) -> list[LedgerFinding]:
    """A completed round against the ledger: every entry of the round from a client of its
    cohort and, in a charging run, every survivor charged in that round."""
    cohort = set(payload.get("cohort") or ())
    survivors = payload.get("survivors") or ()
    round_index = audit.round_index
    charged = {row.client_id for row in rows if row.round_index == round_index}
    findings: list[LedgerFinding] = []
    if payload.get("status") != "completed":  # an aborted round's cohort omits clients deleted meanwhile
        return findings
    findings.extend(LedgerFinding(client, round_index, audit.sequence,
                                  "has a ledger entry for this round but was not in its cohort")
                    for client in sorted(charged - cohort))
    if charges:
        findings.extend(LedgerFinding(client, round_index, audit.sequence,
                                      "survived this round (its input is in the released sum) but has no "
                                      "ledger entry for it: the charge is missing")
                        for client in sorted(set(survivors) - charged))
    return findings


def _ranges(values: Sequence[int]) -> str:
    parts, start, previous = [], None, None
    for value in values:
        if start is None:
            start = previous = value
        elif value == previous + 1:
            previous = value
        else:
            parts.append(f"#{start}" if start == previous else f"#{start}..#{previous}")
            start = previous = value
    if start is not None:
        parts.append(f"#{start}" if start == previous else f"#{start}..#{previous}")
    return ", ".join(parts)


def cross_check_ledger(source: Repository | Database | Session, run_id: int) -> LedgerCrossCheck:
    """Check the run's privacy ledger against its audit log, entry by entry.

    Every audit entry that wrote ledger rows (``round.committed``, ``ledger.charged``) records
    their count, the SHA-256 of their hashes and each client's new chain head
    (:func:`ledger_anchor`). The check recomputes those from the ledger and compares; it also
    checks each committed round against its cohort and survivors, and that no ledger row lies
    outside every anchor. A finding names the client, the round and what is missing.

    Assumes the audit chain itself verifies (:func:`verify_audit_log`; pin its head with a
    signed copy, ``storage.signed_head``): the anchors are only as good as the chain holding them.
    """
    from storage.engine import Database
    from storage.repositories import Repository

    if isinstance(source, Session):
        return cross_check_ledger_session(source, run_id)
    if isinstance(source, Repository):
        source = source.database
    if not isinstance(source, Database):
        raise StorageValueError(f"cross_check_ledger needs a Repository, Database or Session, got {type(source).__name__}")
    with source.reading() as session:
        return cross_check_ledger_session(session, run_id)
