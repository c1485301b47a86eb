"""`fedvault audit` against a ledger cut or rewritten by someone with write access to the
database: every tamper is reported with the client, the round and what is missing, for the
right reason, and a signed head saved earlier catches even a consistent rewrite."""

from __future__ import annotations

import json
import os
import stat

from sqlalchemy import delete, select

from privacy.accounting import RunningRdp
from privacy.events import event_from_json
from storage import Repository
from storage.audit import audit_content, ledger_anchor, ledger_content
from storage.canonical import GENESIS_HASH, chain_hash
from storage.schema import AuditHead, AuditLogEntry, LedgerEntry
from tests.cli.test_audit import DELTA, SKELLAM, _invoke, _round, _tamper, ledgers  # noqa: F401 (fixture)


def _report(path: str, *args: str) -> tuple[int, dict]:
    result = _invoke("--db", path, "--run", "1", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def _rehash_ledger(session, client_id: int) -> None:
    """Re-chain one client's ledger rows (hashes and each stored epsilon_after) as a forger
    would after editing them, so the chain and the ε replay both verify again."""
    rows = session.execute(select(LedgerEntry).where(LedgerEntry.run_id == 1, LedgerEntry.client_id == client_id)
                           .order_by(LedgerEntry.sequence)).scalars().all()
    previous, running = GENESIS_HASH, RunningRdp()
    for sequence, row in enumerate(rows):
        running.add(event_from_json(row.event))
        row.sequence, row.prev_hash, row.epsilon_after = sequence, previous, running.epsilon(row.delta)
        row.entry_hash = chain_hash(ledger_content(row), previous)
        previous = row.entry_hash
    session.flush()


def test_an_untouched_ledger_agrees_with_the_audit_log(ledgers):
    path, _, _ = ledgers
    code, report = _report(path)
    assert code == 0
    cross = report["verification"]["ledger_vs_audit_log"]
    assert cross == {"ok": True, "audit_entries_checked": 3, "rounds_checked": 3, "ledger_rows": 12, "findings": []}


def test_dropping_a_clients_last_entry_names_the_client_the_round_and_the_entry(ledgers):
    path, _, _ = ledgers
    _tamper(path, lambda s: s.execute(delete(LedgerEntry).where(
        LedgerEntry.run_id == 1, LedgerEntry.client_id == 1, LedgerEntry.sequence == 4)))
    code, report = _report(path)
    assert code == 1
    # The client's own chain is still a valid (shorter) chain: only the audit log shows the cut.
    assert report["verification"]["ledger"]["ok"] is True
    findings = report["verification"]["ledger_vs_audit_log"]["findings"]
    assert findings[0]["client_id"] == 1 and findings[0]["round_index"] == 2
    assert "ledger entries #4 are missing; the audit log anchors its chain at #4" in findings[0]["problem"]
    assert any(f.startswith("ledger against the audit log: client 1, round 2") for f in report["failures"])


def test_dropping_all_of_a_clients_entries_is_caught(ledgers):
    path, _, _ = ledgers
    _tamper(path, lambda s: s.execute(delete(LedgerEntry).where(LedgerEntry.run_id == 1, LedgerEntry.client_id == 2)))
    code, report = _report(path)
    assert code == 1
    assert report["verification"]["ledger"]["ok"] is True  # no chain left to break
    client_2 = [f for f in report["verification"]["ledger_vs_audit_log"]["findings"] if f["client_id"] == 2]
    assert {f["round_index"] for f in client_2} == {0, 1, 2}
    assert "all of its ledger entries are missing (#0..#0)" in client_2[0]["problem"]
    # and the survivors of the completed rounds have no charge
    assert any("survived this round" in f["problem"] and f["round_index"] == 2 for f in client_2)
    client = next(c for c in report["clients"] if c["client_id"] == 2)
    assert client["epsilon"] == 0.0  # what the tamper achieved, and why it must not pass


def test_rewriting_a_noise_parameter_and_rehashing_the_chain_is_caught_by_the_anchor(ledgers):
    path, _, _ = ledgers

    def edit(session):
        row = session.execute(select(LedgerEntry).where(
            LedgerEntry.run_id == 1, LedgerEntry.client_id == 3, LedgerEntry.sequence == 1)).scalar_one()
        row.event = {**row.event, "mu_share": row.event["mu_share"] * 100}  # 100x the noise: a smaller ε
        _rehash_ledger(session, 3)

    _tamper(path, edit)
    code, report = _report(path)
    assert code == 1
    # the forgery is self-consistent: the chain verifies and every stored ε replays
    assert report["verification"]["ledger"]["ok"] is True
    assert not next(c for c in report["clients"] if c["client_id"] == 3)["problems"]
    findings = report["verification"]["ledger_vs_audit_log"]["findings"]
    assert [(f["client_id"], f["round_index"]) for f in findings if f["client_id"] is not None] == [(3, 2)]
    assert "differs from the hash the audit log anchors" in findings[0]["problem"]
    assert any("with a different digest" in f["problem"] for f in findings)


def _rewrite_everything(session) -> None:
    """Drop client 2 from run 1 and rebuild the ledger, the audit log's anchors, the audit chain
    and its head consistently: no check inside the database can tell."""
    session.execute(delete(LedgerEntry).where(LedgerEntry.run_id == 1, LedgerEntry.client_id == 2))
    for client in (1, 3, 4):
        _rehash_ledger(session, client)
    audits = session.execute(select(AuditLogEntry).where(AuditLogEntry.run_id == 1)
                             .order_by(AuditLogEntry.sequence)).scalars().all()
    previous = GENESIS_HASH
    for audit in audits:
        if audit.event == "round.committed":
            rows = session.execute(select(LedgerEntry).where(
                LedgerEntry.run_id == 1, LedgerEntry.round_index == audit.round_index).order_by(LedgerEntry.id)).scalars().all()
            payload = dict(audit.payload)
            payload["cohort"] = [c for c in payload["cohort"] if c != 2]
            payload["survivors"] = [c for c in payload["survivors"] if c != 2]
            payload["ledger_entries"] = ledger_anchor(rows)
            audit.payload = payload
        audit.prev_hash = previous
        audit.entry_hash = chain_hash(audit_content(audit), previous)
        previous = audit.entry_hash
    head = session.get(AuditHead, 1)
    head.sequence, head.entry_hash = audits[-1].sequence, previous
    session.flush()


def test_a_consistent_rewrite_passes_every_inner_check_but_not_a_saved_signed_head(ledgers, tmp_path):
    path, _, _ = ledgers
    head_file = str(tmp_path / "head.json")
    result = _invoke("--db", path, "--run", "1", "--export-head", head_file)
    assert result.exit_code == 0, result.output
    key_file = path + ".audit-key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    _tamper(path, _rewrite_everything)
    code, report = _report(path)
    assert code == 0 and report["ok"]  # the rewrite is invisible from inside the database
    assert 2 not in {c["client_id"] for c in report["clients"] if c["entries"]}
    code, report = _report(path, "--check-head", head_file)
    assert code == 1
    assert report["verification"]["saved_head"]["ok"] is False
    assert "no longer has the saved head's hash" in report["verification"]["saved_head"]["problem"]
    assert "the log up to it was rewritten" in report["failures"][-1]


def test_a_cut_audit_log_fails_a_saved_head(ledgers, tmp_path):
    path, _, _ = ledgers
    head_file = str(tmp_path / "head.json")
    assert _invoke("--db", path, "--run", "1", "--export-head", head_file).exit_code == 0

    def cut(session):  # drop the newest audit entry and move the head back onto its predecessor
        newest = session.get(AuditHead, 1)
        session.execute(delete(AuditLogEntry).where(AuditLogEntry.run_id == 1, AuditLogEntry.sequence == newest.sequence))
        before = session.execute(select(AuditLogEntry).where(
            AuditLogEntry.run_id == 1, AuditLogEntry.sequence == newest.sequence - 1)).scalar_one()
        newest.sequence, newest.entry_hash = before.sequence, before.entry_hash

    _tamper(path, cut)
    code, report = _report(path, "--check-head", head_file)
    assert code == 1
    assert "were cut" in report["verification"]["saved_head"]["problem"]


def test_an_honest_append_after_a_saved_head_still_verifies(ledgers, tmp_path):
    path, mixed, _ = ledgers
    head_file = str(tmp_path / "head.json")
    assert _invoke("--db", path, "--run", "1", "--export-head", head_file).exit_code == 0
    saved = json.loads(open(head_file).read())
    with Repository.open(path, create=False) as repository:
        entries = [mixed.charge(c, 3, "distributed", SKELLAM) for c in (1, 3)]
        repository.commit_round(1, _round(3, [1, 3], [1, 3], entries))
        repository.append_audit(1, "operator.note", {"text": "after the export"})
        assert repository.audit_head(1).sequence > saved["sequence"]
    code, report = _report(path, "--check-head", head_file)
    assert code == 0, report["failures"]
    assert report["verification"]["saved_head"] == {"file": head_file, "ok": True, "problem": None,
                                                    "sequence": saved["sequence"], "signer_checked": True}


def test_an_edited_head_file_fails_its_signature(ledgers, tmp_path):
    path, _, _ = ledgers
    head_file = tmp_path / "head.json"
    assert _invoke("--db", path, "--run", "1", "--export-head", str(head_file)).exit_code == 0
    data = json.loads(head_file.read_text())
    data["sequence"] -= 1
    head_file.write_text(json.dumps(data))
    code, report = _report(path, "--check-head", str(head_file))
    assert code == 1
    assert "signature does not verify" in report["verification"]["saved_head"]["problem"]


def test_a_key_readable_by_others_is_refused(ledgers, tmp_path):
    path, _, _ = ledgers
    key_file = tmp_path / "server.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o644)
    result = _invoke("--db", path, "--run", "1", "--export-head", str(tmp_path / "h.json"), "--server-key", str(key_file))
    assert result.exit_code != 0
    assert "must be readable by its owner only" in result.output
    assert not (tmp_path / "h.json").exists()


def test_an_unanchored_ledger_row_is_reported(ledgers):
    """A row slipped into the ledger table without an audit entry (chain extended correctly)."""
    path, _, _ = ledgers

    def slip(session):
        last = session.execute(select(LedgerEntry).where(LedgerEntry.run_id == 1, LedgerEntry.client_id == 5)
                               ).scalars().all()
        assert last == []
        from datetime import datetime
        row = LedgerEntry(run_id=1, client_id=5, sequence=0, round_index=2, stream="distributed",
                          event={"type": "skellam", "mu": 1.0, "l2_sensitivity": 1.0, "l1_sensitivity": 1.0},
                          epsilon_after=1.0, delta=DELTA, created_at=datetime(2025, 3, 1), prev_hash=GENESIS_HASH)
        row.entry_hash = chain_hash(ledger_content(row), GENESIS_HASH)
        session.add(row)

    _tamper(path, slip)
    code, report = _report(path)
    assert code == 1
    assert any("client 5, round 2: ledger entry #0 is anchored by no audit-log entry" in f for f in report["failures"])


def test_the_text_report_names_the_cross_check(ledgers):
    path, _, _ = ledgers
    result = _invoke("--db", path, "--run", "1")
    assert result.exit_code == 0
    assert "ledger against the audit log: ok (12 ledger entries, 3 audit entries, 3 rounds" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("client"))
    assert all(name in header for name in ("relation", "units", "central ε", "local ε", "record ε"))
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("1 "))
    assert "zero-out" in row and "client,record" in row
    report = json.loads(_invoke("--db", path, "--run", "1", "--json").stdout)
    one = next(c for c in report["clients"] if c["client_id"] == 1)
    assert f"{one['central_epsilon']:.4f}" in row and f"{one['local_epsilon']:.4f}" in row


def test_a_legacy_log_without_heads_is_checked_by_count_and_digest(ledgers):
    """Logs written before heads were anchored record only count and digest: the rows are
    matched in write order, and a dropped row still fails the digest of its round."""
    path, _, _ = ledgers

    def strip_heads_then_drop(session):
        audits = session.execute(select(AuditLogEntry).where(AuditLogEntry.run_id == 1)
                                 .order_by(AuditLogEntry.sequence)).scalars().all()
        previous = GENESIS_HASH
        for audit in audits:
            if audit.event == "round.committed":
                payload = dict(audit.payload)
                payload["ledger_entries"] = {k: v for k, v in payload["ledger_entries"].items() if k != "heads"}
                audit.payload = payload
            audit.prev_hash, audit.entry_hash = previous, chain_hash(audit_content(audit), previous)
            previous = audit.entry_hash
        head = session.get(AuditHead, 1)
        head.entry_hash = previous
        session.flush()

    _tamper(path, strip_heads_then_drop)
    code, report = _report(path)
    assert code == 0, report["failures"]
    _tamper(path, lambda s: s.execute(delete(LedgerEntry).where(
        LedgerEntry.run_id == 1, LedgerEntry.client_id == 1, LedgerEntry.sequence == 4)))
    code, report = _report(path)
    assert code == 1
    findings = report["verification"]["ledger_vs_audit_log"]["findings"]
    assert findings[0]["round_index"] == 2 and "records 5 ledger entries" in findings[0]["problem"] and "holds 4 of them" in findings[0]["problem"]


def test_a_legacy_log_continued_by_anchored_writes_verifies(ledgers):
    """A database upgraded mid-run: early rounds recorded count and digest only, later ones heads."""
    path, mixed, _ = ledgers

    def strip_first_round_heads(session):
        audits = session.execute(select(AuditLogEntry).where(AuditLogEntry.run_id == 1)
                                 .order_by(AuditLogEntry.sequence)).scalars().all()
        previous = GENESIS_HASH
        for audit in audits:
            if audit.event == "round.committed" and audit.round_index == 0:
                payload = dict(audit.payload)
                payload["ledger_entries"] = {k: v for k, v in payload["ledger_entries"].items() if k != "heads"}
                audit.payload = payload
            audit.prev_hash, audit.entry_hash = previous, chain_hash(audit_content(audit), previous)
            previous = audit.entry_hash
        session.get(AuditHead, 1).entry_hash = previous
        session.flush()

    _tamper(path, strip_first_round_heads)
    code, report = _report(path)
    assert code == 0, report["failures"]
    _tamper(path, lambda s: s.execute(delete(LedgerEntry).where(
        LedgerEntry.run_id == 1, LedgerEntry.client_id == 3, LedgerEntry.sequence == 2)))
    code, report = _report(path)
    assert code == 1
    assert any(f["client_id"] == 3 and "#2 are missing" in f["problem"]
               for f in report["verification"]["ledger_vs_audit_log"]["findings"])
