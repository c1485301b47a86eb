"""`fedvault audit` against a real SQLite database written through the Repository API, with
ledger entries holding real privacy events; every ε is checked against a fresh accountant."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from datetime import UTC, datetime, timedelta

import click
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from cli.audit import CSV_COLUMNS, audit
from cli.main import fedvault
from storage import AggregateWrite, ClientEnrolment, LedgerEntryWrite, Repository, RoundWrite
from storage.schema import AuditLogEntry, LedgerEntry

events = pytest.importorskip("privacy.events", reason="privacy.events (H4a) is not in the tree yet")
accounting = pytest.importorskip("privacy.accounting", reason="privacy.accounting (H4a) is not in the tree yet")
ledger = pytest.importorskip("privacy.ledger", reason="privacy.ledger (H4a) is not in the tree yet")
errors = pytest.importorskip("privacy.errors")

DELTA = 1e-5
BUDGET = 10.0
START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
REPORT_KEYS = {"run_id", "run_name", "accountant", "delta", "clients", "verification", "failures", "ok"}
CLIENT_KEYS = {"client_id", "status", "rounds_charged", "entries", "epsilon", "delta", "ledger_epsilon", "ledger_delta",
               "budget", "budget_left", "mechanisms", "streams", "ok", "problems"}
CHAIN_KEYS = {"ok", "chains", "entries", "problem"}

# Distributed Skellam: this client's share of noise whose sum over >= 8 clients has variance 8*500.
SKELLAM = events.DistributedSkellamEvent(mu_share=500.0, noise_floor=8, l2_sensitivity=10.0, l1_sensitivity=100.0)
# Sample-level DP-SGD of one round: 20 steps of the Poisson-sampled Gaussian mechanism.
DPSGD = events.SelfComposedEvent(events.PoissonSampledEvent(0.05, events.GaussianEvent(1.1)), 20)
# Local DP on the lattice coordinates (Δ₂ = 2C in integer units).
LDP = events.DiscreteGaussianEvent(sigma=40.0, l2_sensitivity=2.0)


class Ledger:
    """privacy.ledger's BudgetLedger (the coordinator's bookkeeping), keeping each client's events
    so the test can recompute ε independently."""

    def __init__(self) -> None:
        self.budget = ledger.BudgetLedger(BUDGET, DELTA)
        self.events: dict[int, list] = {}

    def charge(self, client_id: int, round_index: int, stream: str, event) -> LedgerEntryWrite:
        entry = self.budget.charge(client_id, round_index, stream, event)
        self.events.setdefault(client_id, []).append(event)
        return LedgerEntryWrite(**dataclasses.asdict(entry))


def _running_epsilon(client_events, delta=DELTA) -> float:
    """What a bare running RDP accountant gives (for entries the BudgetLedger would refuse)."""
    running = accounting.RunningRdp()
    for event in client_events:
        running.add(event)
    return float(running.epsilon(delta))


def _enrolment(client_id: int, budget: float = BUDGET) -> ClientEnrolment:
    return ClientEnrolment(client_id, os.urandom(32), os.urandom(32), budget, DELTA)


def _round(index: int, cohort, survivors, entries, *, status: str = "completed", dropouts=None) -> RoundWrite:
    started = START + timedelta(minutes=index)
    aggregates = (AggregateWrite(np.arange(16) - 8, kind="lattice_sum"),) if status == "completed" else ()
    return RoundWrite(round_index=index, cohort=cohort, survivors=survivors, started_at=started,
                      finished_at=started + timedelta(seconds=3), status=status,
                      stage="completed" if status == "completed" else "masked_input",
                      dropouts=dropouts or {}, aggregates=aggregates, ledger_entries=entries, bytes_uploaded=1000)


@pytest.fixture()
def ledgers(tmp_path):
    """Run 1 "mixed": clients 1-4 charged distributed Skellam every round they reached the
    masked-input stage (round 1 aborted after the charge), client 1 also DP-SGD, client 3 also
    local DP; client 4 deleted afterwards; client 5 never charged. Run 2 "dpsgd": clients 7 and 8,
    DP-SGD only (Gaussian-type events, so PRV applies). Returns (path, ledger of run 1, of run 2)."""
    path = str(tmp_path / "audit.db")
    mixed, dpsgd = Ledger(), Ledger()
    with Repository.open(path) as repository:
        run = repository.create_run({"noise": "distributed", "mechanism": "skellam"}, name="mixed")
        repository.enrol_clients(run.id, [_enrolment(c) for c in (1, 2, 3, 4, 5)])
        entries = [mixed.charge(c, 0, "distributed", SKELLAM) for c in (1, 2, 3, 4)]
        entries.append(mixed.charge(1, 0, "dp-sgd", DPSGD))
        repository.commit_round(run.id, _round(0, [1, 2, 3, 4], [1, 2, 3], entries, dropouts={"masked_input": [4]}))
        entries = [mixed.charge(c, 1, "distributed", SKELLAM) for c in (1, 2)]
        repository.commit_round(run.id, _round(1, [1, 2], [], entries, status="aborted",
                                               dropouts={"masked_input": [2]}))
        entries = [mixed.charge(c, 2, "distributed", SKELLAM) for c in (1, 2, 3)]
        entries += [mixed.charge(1, 2, "dp-sgd", DPSGD), mixed.charge(3, 2, "update-ldp", LDP)]
        repository.commit_round(run.id, _round(2, [1, 2, 3], [1, 2, 3], entries))
        repository.mark_client_deleted(run.id, 4)

        run = repository.create_run({"trainer": "dpsgd"}, name="dpsgd")
        repository.enrol_clients(run.id, [_enrolment(7), _enrolment(8)])
        for index in range(2):
            entries = [dpsgd.charge(c, index, "dp-sgd", DPSGD) for c in (7, 8)]
            repository.commit_round(run.id, _round(index, [7, 8], [7, 8], entries))
    return path, mixed, dpsgd


def _tamper(path: str, edit) -> None:
    """Edit rows behind the repository's back, as someone with write access to the file would:
    first drop the append-only triggers (DDL), then change rows with ``edit(session)``."""
    with Repository.open(path, create=False) as repository:
        with repository.database.transaction() as session:
            for table in ("audit_log", "ledger_entries"):
                for action in ("update", "delete"):
                    session.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only_{action}"))
            edit(session)


def _ledger_row(session, client_id: int, sequence: int) -> LedgerEntry:
    return session.execute(select(LedgerEntry).where(
        LedgerEntry.run_id == 1, LedgerEntry.client_id == client_id, LedgerEntry.sequence == sequence)).scalar_one()


def _invoke(*args: str):
    return CliRunner().invoke(fedvault, ["audit", *args])


def _json(*args: str) -> dict:
    result = _invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _rows(text: str) -> dict[int, list[str]]:
    """Table rows by client id (first cell), split on runs of two or more spaces."""
    import re

    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0].isdigit() and len(cells) >= 10:
            rows[int(cells[0])] = cells
    return rows


def test_table_epsilon_equals_a_fresh_accountant_over_the_stored_events(ledgers):
    path, mixed, _ = ledgers
    result = _invoke("--db", path, "--run", "1")
    assert result.exit_code == 0, result.output
    assert "by the RDP accountant" in result.output  # the accountant is named
    rows = _rows(result.output)
    assert sorted(rows) == [1, 2, 3, 4, 5]
    for client, client_events in mixed.events.items():
        fresh = accounting.recompute_epsilon(client_events, DELTA, accountant="rdp")
        assert rows[client][3] == f"{fresh:.4f}"
        assert rows[client][7] == f"{BUDGET - fresh:.4f}"
    assert rows[5][2:4] == ["0", "0.0000"]  # enrolled, never charged
    assert rows[4][1] == "deleted" and rows[1][1] == "active"
    assert result.output.rstrip().endswith("audit passed: every stored epsilon reproduced, every client within budget, "
                                           "hash chains intact")


def test_json_report_has_the_documented_keys_and_exact_values(ledgers):
    path, mixed, _ = ledgers
    report = _json("--db", path, "--run", "1")
    assert set(report) == REPORT_KEYS
    assert (report["run_id"], report["run_name"], report["accountant"], report["delta"]) == (1, "mixed", "rdp", None)
    assert report["ok"] is True and report["failures"] == []
    assert set(report["verification"]) == {"ledger", "audit_log"}
    assert all(set(chain) == CHAIN_KEYS and chain["ok"] for chain in report["verification"].values())
    assert report["verification"]["ledger"]["chains"] == 4  # clients with entries
    assert report["verification"]["ledger"]["entries"] == 12
    clients = {c["client_id"]: c for c in report["clients"]}
    assert all(set(c) == CLIENT_KEYS for c in clients.values())
    for client, client_events in mixed.events.items():
        fresh = accounting.recompute_epsilon(client_events, DELTA, accountant="rdp")
        assert clients[client]["epsilon"] == pytest.approx(fresh, rel=1e-12)
        assert clients[client]["budget_left"] == pytest.approx(BUDGET - fresh, rel=1e-12)
        assert clients[client]["ledger_epsilon"] == mixed.budget.epsilon(client)
    one = clients[1]
    assert (one["rounds_charged"], one["entries"], one["streams"]) == (3, 5, ["distributed", "dp-sgd"])
    assert one["mechanisms"] == ["distributed_skellam", "poisson-sampled gaussian"]
    assert clients[3]["mechanisms"] == ["discrete_gaussian", "distributed_skellam"]
    assert clients[3]["streams"] == ["distributed", "update-ldp"]
    assert (clients[4]["status"], clients[4]["rounds_charged"]) == ("deleted", 1)
    assert (clients[5]["entries"], clients[5]["epsilon"], clients[5]["ledger_epsilon"]) == (0, 0.0, None)


def test_composing_streams_costs_more_than_either_alone(ledgers):
    path, _, _ = ledgers
    clients = {c["client_id"]: c for c in _json("--db", path, "--run", "1")["clients"]}
    skellam_only = accounting.recompute_epsilon([SKELLAM] * 3, DELTA, accountant="rdp")
    assert skellam_only == pytest.approx(_running_epsilon([SKELLAM] * 3), rel=1e-12)
    assert clients[2]["epsilon"] == pytest.approx(skellam_only, rel=1e-12)  # client 2: Skellam x3 only
    assert clients[1]["epsilon"] > skellam_only  # same Skellam releases plus DP-SGD


def test_csv_parses_and_agrees_with_json(ledgers):
    path, _, _ = ledgers
    result = _invoke("--db", path, "--run", "1", "--csv")
    assert result.exit_code == 0, result.output
    reader = csv.DictReader(io.StringIO(result.stdout))
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    rows = list(reader)
    report = {c["client_id"]: c for c in _json("--db", path, "--run", "1")["clients"]}
    assert [int(row["client_id"]) for row in rows] == sorted(report)
    for row in rows:
        expected = report[int(row["client_id"])]
        assert float(row["epsilon"]) == expected["epsilon"]  # repr round-trips a float exactly
        assert row["mechanisms"].split(";") == (expected["mechanisms"] or [""])
        assert row["accountant"] == "rdp"
    assert rows[-1]["ledger_epsilon"] == ""  # client 5: no entries
    assert "audit passed" in result.stderr  # verification stays out of the CSV


def test_a_tampered_ledger_entry_fails_the_audit_naming_it(ledgers):
    path, _, _ = ledgers

    def understate(session):  # someone halves client 2's recorded spend after round 1
        row = _ledger_row(session, 2, 1)
        row.epsilon_after = row.epsilon_after / 2

    _tamper(path, understate)
    result = _invoke("--db", path, "--run", "1")
    assert result.exit_code == 1
    assert "ledger chains: BROKEN: run 1 client 2 ledger: entry #1" in result.output
    assert "its content does not match its hash (the entry was edited)" in result.output
    assert "client 2: ledger entry #1 (round 1, distributed) stores epsilon_after=" in result.output
    assert "audit FAILED (2 problems):" in result.output
    report = json.loads(_invoke("--db", path, "--run", "1", "--json").stdout)
    assert report["ok"] is False and report["verification"]["ledger"]["ok"] is False
    assert [c["client_id"] for c in report["clients"] if not c["ok"]] == [2]


def test_an_edited_event_is_caught_by_the_chain_and_by_the_recomputation(ledgers):
    path, _, _ = ledgers

    def more_noise(session):  # claims ten times the noise client 3 really got in round 0
        _ledger_row(session, 3, 0).event = events.event_to_json(events.DistributedSkellamEvent(5000.0, 8, 10.0, 100.0))

    _tamper(path, more_noise)
    result = _invoke("--db", path, "--run", "1")
    assert result.exit_code == 1
    assert "run 1 client 3 ledger: entry #0" in result.output
    assert "client 3: ledger entry #0 (round 0, distributed) stores epsilon_after=" in result.output


def test_an_unreadable_event_is_an_audit_failure_not_a_crash(ledgers):
    path, _, _ = ledgers

    def garble(session):
        _ledger_row(session, 2, 0).event = {"type": "no-such-mechanism"}

    _tamper(path, garble)
    result = _invoke("--db", path, "--run", "1", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    two = next(c for c in report["clients"] if c["client_id"] == 2)
    assert two["epsilon"] is None and "event does not parse" in two["problems"][0]
    assert any(f.startswith("client 2: ledger entry #0 (round 0): event does not parse") for f in report["failures"])


def test_a_stored_epsilon_the_accountant_does_not_reproduce_fails_even_with_intact_chains(ledgers):
    path, mixed, _ = ledgers
    assert 5 not in mixed.events  # client 5's first charge
    true_epsilon = _running_epsilon([SKELLAM])
    with Repository.open(path, create=False) as repository:
        # Hash-chained correctly by the repository, but the ε it claims is 0.1% low.
        repository.append_ledger_entries(1, [LedgerEntryWrite(5, 2, "distributed", events.event_to_json(SKELLAM),
                                                              true_epsilon * 0.999, DELTA)])
    report = json.loads(_invoke("--db", path, "--run", "1", "--json").stdout)
    assert report["verification"]["ledger"]["ok"] and report["verification"]["audit_log"]["ok"]
    assert report["ok"] is False
    assert len(report["failures"]) == 1
    assert report["failures"][0].startswith("client 5: ledger entry #0 (round 2, distributed) stores epsilon_after=")


def test_a_mismatch_within_one_millionth_relative_passes(ledgers):
    path, _, _ = ledgers
    with Repository.open(path, create=False) as repository:
        repository.append_ledger_entries(1, [LedgerEntryWrite(5, 2, "distributed", events.event_to_json(SKELLAM),
                                                              _running_epsilon([SKELLAM]) * (1 + 5e-7), DELTA)])
    assert _invoke("--db", path, "--run", "1").exit_code == 0


def test_a_client_over_budget_fails_the_audit(tmp_path):
    path = str(tmp_path / "over.db")
    with Repository.open(path) as repository:
        run = repository.create_run({}, name="over")
        repository.enrol_clients(run.id, [_enrolment(1, budget=0.5)])
        # Charges the BudgetLedger would have refused, written by something that bypassed it.
        for index in range(3):
            entry = LedgerEntryWrite(1, index, "dp-sgd", events.event_to_json(DPSGD),
                                     _running_epsilon([DPSGD] * (index + 1)), DELTA)
            repository.commit_round(run.id, _round(index, [1], [1], [entry]))
    spent = _running_epsilon([DPSGD] * 3)
    assert spent > 0.5
    with pytest.raises(errors.BudgetExceededError):  # the real ledger refuses the third charge
        refusing = ledger.BudgetLedger(0.5, DELTA)
        for index in range(3):
            refusing.charge(1, index, "dp-sgd", DPSGD)
    result = _invoke("--db", path)
    assert result.exit_code == 1
    assert f"client 1: spent epsilon={spent:.9g} at delta=1e-05, over its budget of 0.5" in result.output
    assert "audit FAILED (1 problem):" in result.output  # every stored ε itself reproduces


def test_a_tampered_audit_log_fails_the_audit(ledgers):
    path, _, _ = ledgers

    def raise_budget(session):  # rewrite an enrolment's recorded budget
        row = session.execute(select(AuditLogEntry).where(AuditLogEntry.run_id == 1, AuditLogEntry.sequence == 3)).scalar_one()
        row.payload = {**row.payload, "epsilon_budget": 1000.0}

    _tamper(path, raise_budget)
    result = _invoke("--db", path, "--run", "1")
    assert result.exit_code == 1
    assert "audit log: BROKEN: run 1 audit log: entry #3" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("  - audit log hash chain broken at run 1 audit log: entry #3")


def test_default_run_is_the_newest_and_prv_matches_a_fresh_prv_accountant(ledgers):
    path, _, dpsgd = ledgers
    report = _json("--db", path, "--accountant", "prv")
    assert (report["run_id"], report["accountant"]) == (2, "prv")
    assert report["ok"] is True  # the stored RDP values still verify by the ledger's own accountant
    for client in report["clients"]:
        client_events = dpsgd.events[client["client_id"]]
        prv = accounting.recompute_epsilon(client_events, DELTA, accountant="prv")
        rdp = accounting.recompute_epsilon(client_events, DELTA, accountant="rdp")
        assert client["epsilon"] == pytest.approx(prv, rel=1e-9)
        assert client["epsilon"] < rdp  # PRV is tighter than RDP (docs/ALGORITHMS.md §3.6)
    text = _invoke("--db", path, "--accountant", "prv").output
    skellam = _invoke("--db", path, "--run", "1", "--accountant", "prv")
    assert skellam.exit_code == 2 and skellam.stdout == ""
    assert len(skellam.stderr.splitlines()) == 1
    assert skellam.stderr.startswith("fedvault: error: client 1: Opacus accountants take Gaussian")
    assert "use accountant='rdp'" in skellam.stderr
    assert "Opacus PRVAccountant (privacy random variables)" in text and "ε (prv)" in text


def test_delta_override_reports_epsilon_at_that_delta(ledgers):
    path, mixed, _ = ledgers
    report = _json("--db", path, "--run", "1", "--delta", "1e-7")
    assert report["delta"] == 1e-7 and report["ok"] is True
    for client in report["clients"]:
        if client["client_id"] in mixed.events:
            fresh = accounting.recompute_epsilon(mixed.events[client["client_id"]], 1e-7, accountant="rdp")
            assert client["epsilon"] == pytest.approx(fresh, rel=1e-12)
            assert client["epsilon"] > client["ledger_epsilon"]  # smaller δ, larger ε
            # the budget is stated at the client's δ, so what is left of it is measured there
            assert client["budget_left"] == pytest.approx(BUDGET - client["ledger_epsilon"], rel=1e-12)


def test_client_option_audits_one_client(ledgers):
    path, mixed, _ = ledgers
    report = _json("--db", path, "--run", "1", "--client", "3")
    assert [c["client_id"] for c in report["clients"]] == [3]
    assert report["verification"]["ledger"]["chains"] == 1
    assert report["verification"]["ledger"]["entries"] == len(mixed.events[3])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "99"], "fedvault: error: no run with id 99"),
        (["--run", "1", "--client", "42"], "fedvault: error: client 42 is not enrolled in run 1"),
    ],
)
def test_unknown_run_or_client_is_one_line_and_exit_code_2(ledgers, args, message):
    path, _, _ = ledgers
    result = _invoke("--db", path, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [message]


def test_an_empty_database_has_nothing_to_audit(tmp_path):
    path = str(tmp_path / "empty.db")
    Repository.open(path).close()
    result = _invoke("--db", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["fedvault: error: the database holds no runs yet; start one with `fedvault run`"]


def test_json_and_csv_are_exclusive(ledgers):
    path, _, _ = ledgers
    result = _invoke("--db", path, "--json", "--csv")
    assert result.exit_code == 2
    assert "choose one of --json and --csv" in result.output


def test_every_option_has_help_text():
    options = [p for p in audit.params if isinstance(p, click.Option)]
    assert {o.name for o in options} >= {"db", "run_id", "client_id", "accountant", "delta", "as_json", "as_csv"}
    assert all(o.help for o in options)
    result = CliRunner().invoke(fedvault, ["audit", "--help"])
    assert result.exit_code == 0
    assert "Exit status" in result.output
