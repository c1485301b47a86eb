"""The hash-chained audit log and privacy ledger: every kind of tampering is detected and the first
bad entry is named; the append-only triggers refuse changes made through SQL."""

from datetime import timedelta

import pytest
from sqlalchemy import delete, exc, select, text, update

from storage import ChainHead, LedgerEntryWrite, verify_audit_log
from storage.canonical import GENESIS_HASH, canonical_json, chain_hash
from storage.errors import IntegrityError, StorageValueError
from storage.schema import AuditHead, AuditLogEntry, LedgerEntry


def _drop_append_only_guards(repo) -> None:
    """What an attacker with DDL rights does first; the hash chain must still catch the rest."""
    with repo.database.transaction() as session:
        if repo.database.dialect == "sqlite":
            for table in ("audit_log", "ledger_entries"):
                for action in ("update", "delete"):
                    session.execute(text(f"DROP TRIGGER {table}_append_only_{action}"))
        else:
            for table in ("audit_log", "ledger_entries"):
                session.execute(text(f"DROP TRIGGER {table}_append_only ON {table}"))


def _tamper(repo, statement) -> None:
    with repo.database.transaction() as session:
        session.execute(statement)


@pytest.fixture
def audited_run(repo, enrolled_run, make_round):
    """A run whose audit log has 9 entries: run.created, 5 enrolments, 3 rounds."""
    for index in range(3):
        repo.commit_round(enrolled_run, make_round(index))
    assert [e.sequence for e in repo.audit_entries(enrolled_run)] == list(range(9))
    assert repo.verify_audit_log(enrolled_run).ok
    _drop_append_only_guards(repo)
    return enrolled_run


def _row(repo, run_id, sequence) -> dict:
    with repo.database.reading() as session:
        row = session.execute(
            select(AuditLogEntry).where(AuditLogEntry.run_id == run_id, AuditLogEntry.sequence == sequence)
        ).scalar_one()
        return {c: getattr(row, c) for c in ("id", "event", "round_index", "client_id", "payload", "created_at", "prev_hash", "entry_hash")}


def _where(run_id, sequence):
    return (AuditLogEntry.run_id == run_id) & (AuditLogEntry.sequence == sequence)


def test_an_intact_log_verifies_and_reports_its_head(repo, audited_run):
    result = repo.verify_audit_log(audited_run)
    assert result.ok and result.first_bad is None
    assert result.entries_checked == 9 and result.chains_checked == 1
    head = repo.audit_head(audited_run)
    assert head.sequence == 8 and result.heads[f"run {audited_run} audit log"] == head
    assert repo.verify_audit_log(audited_run, expected_head=head).ok
    result.raise_if_bad()


def test_the_chain_hashes_are_the_documented_sha256_construction(repo, audited_run):
    entries = repo.audit_entries(audited_run)
    assert entries[0].prev_hash == GENESIS_HASH
    for previous, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == previous.entry_hash
    first = entries[0]
    content = {
        "kind": "audit", "run_id": first.run_id, "sequence": 0, "event": "run.created", "round_index": None,
        "client_id": None, "payload": first.payload, "created_at": first.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    import hashlib

    assert first.entry_hash == hashlib.sha256(canonical_json({**content, "prev_hash": GENESIS_HASH})).hexdigest()
    assert chain_hash(content, GENESIS_HASH) == first.entry_hash


@pytest.mark.parametrize(
    ("column", "value"),
    [("payload", {"forged": True}), ("event", "round.forged"), ("client_id", 99), ("round_index", 42)],
)
def test_an_edited_entry_is_named(repo, audited_run, column, value):
    _tamper(repo, update(AuditLogEntry).where(_where(audited_run, 4)).values({column: value}))
    result = repo.verify_audit_log(audited_run)
    assert not result.ok
    assert (result.first_bad.sequence, result.first_bad.entry_id) == (4, _row(repo, audited_run, 4)["id"])
    assert "edited" in result.first_bad.reason
    with pytest.raises(IntegrityError, match="entry #4"):
        result.raise_if_bad()


def test_an_edited_timestamp_is_detected(repo, audited_run):
    created = _row(repo, audited_run, 6)["created_at"]
    _tamper(repo, update(AuditLogEntry).where(_where(audited_run, 6)).values(created_at=created - timedelta(hours=1)))
    assert repo.verify_audit_log(audited_run).first_bad.sequence == 6


def test_an_edit_that_recomputes_the_entrys_own_hash_breaks_the_next_link(repo, audited_run):
    # A smarter forger re-hashes the edited entry; its successor's prev_hash then disagrees.
    from storage.audit import audit_content

    with repo.database.transaction() as session:
        row = session.execute(select(AuditLogEntry).where(_where(audited_run, 3))).scalar_one()
        row.payload = {"forged": True}
        session.flush()
        row.entry_hash = chain_hash(audit_content(row), row.prev_hash)
    result = repo.verify_audit_log(audited_run)
    assert result.first_bad.sequence == 4 and "prev_hash" in result.first_bad.reason


def test_a_deleted_entry_is_named_by_its_missing_position(repo, audited_run):
    _tamper(repo, delete(AuditLogEntry).where(_where(audited_run, 5)))
    result = repo.verify_audit_log(audited_run)
    assert (result.first_bad.sequence, result.first_bad.entry_id) == (5, None)
    assert "missing" in result.first_bad.reason


def test_deleting_and_renumbering_is_caught_by_the_broken_link(repo, audited_run):
    _tamper(repo, delete(AuditLogEntry).where(_where(audited_run, 5)))
    with repo.database.transaction() as session:
        for sequence in range(6, 9):
            session.execute(update(AuditLogEntry).where(_where(audited_run, sequence)).values(sequence=sequence - 1))
        session.execute(update(AuditHead).where(AuditHead.run_id == audited_run).values(sequence=7))
    result = repo.verify_audit_log(audited_run)
    assert result.first_bad.sequence == 5 and "prev_hash" in result.first_bad.reason


def test_reordered_entries_are_named(repo, audited_run):
    fourth, fifth = _row(repo, audited_run, 4), _row(repo, audited_run, 5)
    movable = {k: v for k, v in fifth.items() if k != "id"}
    with repo.database.transaction() as session:
        session.execute(update(AuditLogEntry).where(_where(audited_run, 4)).values(movable))
        session.execute(update(AuditLogEntry).where(_where(audited_run, 5)).values({k: v for k, v in fourth.items() if k != "id"}))
    result = repo.verify_audit_log(audited_run)
    assert result.first_bad.sequence == 4
    assert "reordered" in result.first_bad.reason


def test_an_inserted_entry_is_caught_even_when_its_own_hash_is_valid(repo, audited_run):
    from storage.audit import audit_content
    from storage.schema import AuditLogEntry as Entry

    with repo.database.transaction() as session:
        for sequence in range(8, 2, -1):
            session.execute(update(Entry).where(_where(audited_run, sequence)).values(sequence=sequence + 1))
        second = session.execute(select(Entry).where(_where(audited_run, 2))).scalar_one()
        forged = Entry(run_id=audited_run, sequence=3, event="client.enrolled", round_index=None, client_id=77,
                       payload={"forged": True}, created_at=second.created_at, prev_hash=second.entry_hash)
        forged.entry_hash = chain_hash(audit_content(forged), forged.prev_hash)
        session.add(forged)
        session.execute(update(AuditHead).where(AuditHead.run_id == audited_run).values(sequence=9))
    result = repo.verify_audit_log(audited_run)
    # The forged #3 links correctly; the genuine entry after it (now #4) no longer does.
    assert result.first_bad.sequence == 4
    assert "inserted" in result.first_bad.reason


def test_deleting_the_newest_entries_is_caught_by_the_head(repo, audited_run):
    _tamper(repo, delete(AuditLogEntry).where(AuditLogEntry.run_id == audited_run, AuditLogEntry.sequence >= 7))
    result = repo.verify_audit_log(audited_run)
    assert result.first_bad.sequence == 7 and "newest entries deleted" in result.first_bad.reason


def test_a_truncation_that_also_rewrites_the_head_is_caught_by_a_published_head(repo, audited_run):
    published = repo.audit_head(audited_run)
    seventh = _row(repo, audited_run, 7)
    _tamper(repo, delete(AuditLogEntry).where(_where(audited_run, 8)))
    _tamper(repo, update(AuditHead).where(AuditHead.run_id == audited_run).values(sequence=7, entry_hash=seventh["entry_hash"]))
    assert repo.verify_audit_log(audited_run).ok  # a keyless chain cannot see this on its own ...
    result = repo.verify_audit_log(audited_run, expected_head=published)
    assert not result.ok and "expected" in result.first_bad.reason  # ... a head kept elsewhere can
    with pytest.raises(StorageValueError):
        repo.verify_audit_log(None, expected_head=ChainHead(0, GENESIS_HASH))


def test_an_emptied_log_is_detected(repo, audited_run):
    _tamper(repo, delete(AuditLogEntry).where(AuditLogEntry.run_id == audited_run))
    _tamper(repo, delete(AuditHead).where(AuditHead.run_id == audited_run))
    result = repo.verify_audit_log(audited_run)
    assert result.first_bad.sequence == 0 and "no audit entries" in result.first_bad.reason


def test_verifying_every_run_names_the_run_with_the_bad_entry(repo, audited_run):
    other = repo.create_run({"second": True})
    repo.append_audit(other.id, "operator.note", {"text": "hello"})
    assert verify_audit_log(repo).ok and verify_audit_log(repo).chains_checked == 2
    _tamper(repo, update(AuditLogEntry).where(_where(other.id, 1)).values(payload={"text": "bye"}))
    result = verify_audit_log(repo.database)
    assert not result.ok and result.first_bad.chain == f"run {other.id} audit log" and result.first_bad.sequence == 1
    with repo.database.reading() as session:
        assert verify_audit_log(session, audited_run).ok


def test_the_append_only_triggers_refuse_updates_and_deletes(repo, enrolled_run, make_round):
    repo.commit_round(enrolled_run, make_round(0))
    for statement in (
        update(AuditLogEntry).values(event="x"),
        delete(AuditLogEntry),
        update(LedgerEntry).values(epsilon_after=0.0),
        delete(LedgerEntry),
    ):
        with pytest.raises(exc.DBAPIError, match="append-only"):
            _tamper(repo, statement)
    assert repo.verify_audit_log(enrolled_run).ok


def test_custom_audit_events_are_validated(repo, enrolled_run):
    entry = repo.append_audit(enrolled_run, "unlearning.verified", {"auc": 0.51}, client_id=3, round_index=2)
    assert (entry.event, entry.client_id, entry.round_index, entry.payload) == ("unlearning.verified", 3, 2, {"auc": 0.51})
    with pytest.raises(StorageValueError, match="dotted name"):
        repo.append_audit(enrolled_run, "Not An Event", {})
    with pytest.raises(StorageValueError, match="non-finite"):
        repo.append_audit(enrolled_run, "bad.payload", {"x": float("inf")})


def test_a_tampered_ledger_entry_is_named_with_its_client(repo, enrolled_run, make_round):
    for index in range(3):
        repo.commit_round(enrolled_run, make_round(index))
    repo.append_ledger_entries(enrolled_run, [LedgerEntryWrite(1, 3, "dp-sgd", {"name": "GaussianEvent"}, 2.0, 1e-5)])
    assert repo.verify_ledger(enrolled_run).ok
    _drop_append_only_guards(repo)
    _tamper(
        repo,
        update(LedgerEntry)
        .where(LedgerEntry.run_id == enrolled_run, LedgerEntry.client_id == 1, LedgerEntry.sequence == 2)
        .values(epsilon_after=0.01),
    )
    result = repo.verify_ledger(enrolled_run)
    assert not result.ok
    assert result.first_bad.chain == f"run {enrolled_run} client 1 ledger" and result.first_bad.sequence == 2
    assert repo.verify_ledger(enrolled_run, client_id=0).ok
    _tamper(repo, delete(LedgerEntry).where(LedgerEntry.run_id == enrolled_run, LedgerEntry.client_id == 0, LedgerEntry.sequence == 1))
    assert repo.verify_ledger(enrolled_run, client_id=0).first_bad.sequence == 1
