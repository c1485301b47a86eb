"""End to end: a real run (real SecAgg+, real storage, real integer noise) through the CLI.

These runs use worker processes, SQLite files and the whole pipeline; they are the slowest tests
of the suite (tens of seconds), and the only ones that show the parts work together.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from cli.main import fedvault
from storage.repositories import Repository

pytestmark = pytest.mark.slow

SMALL_RUN = ["--dataset", "digits", "--split", "iid", "--clients", "6", "--rounds", "4", "--model", "logreg",
             "--lr", "0.5", "--local-epochs", "2", "--workers", "2", "--dropout", "0.1", "--seed", "3"]


def _run(tmp_path, *extra):
    db = tmp_path / "fedvault.db"
    result = CliRunner().invoke(fedvault, ["run", *SMALL_RUN, "--db", str(db), "--out", str(tmp_path / "out"),
                                           "--json", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output), db


@pytest.fixture(scope="module")
def private_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("private-run")
    report, db = _run(tmp_path, "--noise", "distributed", "--mechanism", "skellam", "--epsilon", "50")
    return report, db


def test_private_run_learns_well_above_chance(private_run):
    report, _ = private_run
    assert report["rounds_completed"] >= 3
    assert report["final_accuracy"] > 0.5  # 10 classes: chance is 0.1


def test_database_holds_every_round_with_its_aggregate(private_run):
    report, db = private_run
    with Repository.open(str(db)) as repository:
        rounds = repository.list_rounds(report["run_id"])
        assert [r.round_index for r in rounds] == list(range(4))
        for info in rounds:
            if info.status == "completed":
                aggregates = repository.load_aggregates(report["run_id"], info.round_index)
                assert {"update", "mean_update"} <= set(aggregates)
        assert repository.verify_audit_log(report["run_id"]).ok
        assert repository.verify_ledger(report["run_id"]).ok


def test_ledger_epsilon_equals_a_fresh_accountant_on_the_stored_events(private_run):
    from privacy.accounting import recompute_epsilon
    from privacy.events import event_from_json

    report, db = private_run
    with Repository.open(str(db)) as repository:
        entries = repository.ledger_entries(report["run_id"])
    assert entries, "a private run charges the ledger"
    by_client = {}
    for entry in entries:
        by_client.setdefault(entry.client_id, []).append(entry)
    for client_entries in by_client.values():
        events = [event_from_json(e.event_json) for e in client_entries]
        fresh = recompute_epsilon(events, client_entries[-1].delta, accountant="rdp")
        assert client_entries[-1].epsilon_after == pytest.approx(fresh, rel=1e-9)
        assert fresh <= 50.0


def test_audit_and_history_report_what_the_run_did(private_run):
    report, db = private_run
    runner = CliRunner()
    audit = runner.invoke(fedvault, ["audit", "--db", str(db), "--run", str(report["run_id"]), "--json"])
    assert audit.exit_code == 0, audit.output
    audited = json.loads(audit.output)
    assert audited["clients"] and all(c["epsilon"] <= 50.0 for c in audited["clients"])
    history = runner.invoke(fedvault, ["history", "--db", str(db), "--run", str(report["run_id"])])
    assert history.exit_code == 0, history.output
    assert f"run {report['run_id']}" in history.output.lower()


def test_run_without_noise_never_touches_the_ledger(tmp_path):
    report, db = _run(tmp_path, "--noise", "none", "--rounds", "2")
    with Repository.open(str(db)) as repository:
        assert repository.ledger_entries(report["run_id"]) == []
    assert report["epsilon_spent_max"] == 0.0


def test_killed_run_resumes_to_the_same_final_round_count(tmp_path):
    db = tmp_path / "fedvault.db"
    rounds = 6
    command = [sys.executable, "-m", "cli.main", "run", *SMALL_RUN, "--rounds", str(rounds), "--noise", "none",
               "--db", str(db), "--out", str(tmp_path / "out"), "--no-plots"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    committed = 0
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with Repository.open(str(db)) as repository:
                    runs = repository.list_runs()
                    committed = len(repository.list_rounds(runs[0].id)) if runs else 0
            except Exception:  # noqa: BLE001 - schema still being created
                continue
            if committed >= 2:
                break
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()!r}"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    with Repository.open(str(db)) as repository:
        run_id = repository.list_runs()[0].id
        interrupted_at = len(repository.list_rounds(run_id))
    assert 2 <= interrupted_at < rounds
    result = CliRunner().invoke(fedvault, ["run", "--resume", str(run_id), "--db", str(db),
                                           "--out", str(tmp_path / "out"), "--json", "--no-plots"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with Repository.open(str(db)) as repository:
        resumed = repository.list_rounds(run_id)
        assert [r.round_index for r in resumed] == list(range(rounds))
        assert repository.get_run(run_id).status == "completed"


def test_bad_settings_fail_with_one_line_and_nothing_written(tmp_path):
    db = tmp_path / "fedvault.db"
    result = CliRunner().invoke(fedvault, ["run", "--clients", "1", "--db", str(db)])
    assert result.exit_code == 2
    assert "clients must be an integer >= 2" in result.output
    assert not db.exists()


def test_dp_sgd_run_charges_both_streams_and_refusals_are_explained(tmp_path):
    report, db = _run(tmp_path, "--trainer", "dpsgd", "--rounds", "2", "--budget", "200", "--epsilon", "50")
    with Repository.open(str(db)) as repository:
        streams = {entry.stream for entry in repository.ledger_entries(report["run_id"])}
    assert streams == {"distributed", "dp-sgd"}
    # Record- and client-level ε have their own budgets: the default DP-SGD noise is calibrated to the
    # record budget, so a budget equal to the target no longer refuses anyone ...
    fits, _ = _run(tmp_path / "fits", "--trainer", "dpsgd", "--rounds", "1", "--epsilon", "50")
    assert fits["rounds_aborted"] == 0
    # ... while fixed DP-SGD noise over a tight record budget is declined by the clients themselves.
    refused, _ = _run(tmp_path / "tight", "--trainer", "dpsgd", "--rounds", "1", "--epsilon", "50",
                      "--dpsgd-noise", "0.5", "--record-budget", "1")
    assert refused["rounds_aborted"] == 1
    assert "declines round 0" in refused["rounds"][0]["abort_reason"]
    assert "record-level epsilon" in refused["rounds"][0]["abort_reason"]


def test_an_explicit_bit_width_that_cannot_hold_the_sum_is_refused(tmp_path):
    result = CliRunner().invoke(fedvault, ["run", *SMALL_RUN, "--bits", "4", "--db", str(tmp_path / "x.db"),
                                           "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "increase --bits to at least" in result.output
    with Repository.open(str(tmp_path / "x.db")) as repository:
        assert repository.list_runs() == []  # nothing was stored for a refused configuration
