"""`fedvault history` against a real SQLite database written through the Repository API."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner

from cli.history import history
from cli.main import fedvault
from storage import (
    AggregateWrite,
    CheckpointWrite,
    ClientEnrolment,
    Repository,
    RoundWrite,
    SealedRecordWrite,
)

DIMENSION = 96
START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
RUN_KEYS = {"id", "name", "status", "created", "rounds_completed", "rounds_aborted", "clients", "clients_deleted",
            "final_accuracy"}
ROUND_KEYS = {"index", "status", "stage", "cohort", "survivors", "dropouts", "bytes_uploaded", "duration_seconds",
              "accuracy", "started"}


def _enrolment(client_id: int) -> ClientEnrolment:
    return ClientEnrolment(client_id, bytes([client_id]) * 32, bytes([100 + client_id]) * 32, 8.0, 1e-5)


def _completed(index: int, cohort, survivors, dropouts, *, seconds: float, uploaded: int, **extra) -> RoundWrite:
    rng = np.random.default_rng(index)  # simulation data, not secrets
    started = START + timedelta(minutes=index)
    return RoundWrite(
        round_index=index, cohort=cohort, survivors=survivors, started_at=started,
        finished_at=started + timedelta(seconds=seconds), dropouts=dropouts,
        client_weights={c: 1.0 / len(survivors) for c in survivors},
        bytes_uploaded=uploaded,
        aggregates=(AggregateWrite(rng.integers(-500, 500, DIMENSION), kind="lattice_sum"),),
        checkpoint=CheckpointWrite({"flat": rng.standard_normal(DIMENSION).astype(np.float32)}),
        sealed_records=[SealedRecordWrite(c, os.urandom(40 + c), {"round": index}, DIMENSION) for c in survivors],
        **extra,
    )


@pytest.fixture()
def database(tmp_path):
    """Run 1 "alpha": 4 clients, rounds 0 (completed, one masked-input dropout, accuracy in its
    audit details), 1 (aborted at share_keys), 2 (completed, accuracy in its parameters), one
    client deleted. Run 2 "beta": 2 clients, no rounds."""
    path = str(tmp_path / "history.db")
    with Repository.open(path) as repository:
        alpha = repository.create_run({"dataset": "digits", "rounds": 3, "privacy": {"mechanism": "skellam"}},
                                      name="alpha")
        repository.enrol_clients(alpha.id, [_enrolment(c) for c in (1, 2, 3, 4)])
        repository.commit_round(alpha.id, _completed(
            0, [1, 2, 3, 4], [1, 2, 3], {"masked_input": [4]}, seconds=2.5, uploaded=4000,
            audit_details={"accuracy": 0.5}))
        started = START + timedelta(minutes=1)
        repository.commit_round(alpha.id, RoundWrite(
            round_index=1, cohort=[1, 2, 3], survivors=[], started_at=started,
            finished_at=started + timedelta(seconds=1.25), status="aborted", stage="share_keys",
            dropouts={"advertise_keys": [1], "share_keys": [2, 3]}, bytes_uploaded=300,
            audit_details={"reason": "too few survivors"}))
        repository.commit_round(alpha.id, _completed(
            2, [1, 2, 3], [2, 3], {"unmask": [1]}, seconds=4.0, uploaded=3000, parameters={"accuracy": 0.8125}))
        repository.mark_client_deleted(alpha.id, 4)
        beta = repository.create_run({"dataset": "breast_cancer"}, name="beta")
        repository.enrol_clients(beta.id, [_enrolment(c) for c in (7, 8)])
    return path


def _invoke(*args: str):
    return CliRunner().invoke(fedvault, ["history", *args])


def test_lists_every_run_with_round_counts_clients_and_final_accuracy(database):
    result = _invoke("--db", database, "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    assert [run["id"] for run in runs] == [1, 2]
    assert all(set(run) == RUN_KEYS for run in runs)
    alpha, beta = runs
    assert (alpha["name"], alpha["status"], alpha["rounds_completed"], alpha["rounds_aborted"]) == ("alpha", "running", 2, 1)
    assert (alpha["clients"], alpha["clients_deleted"]) == (4, 1)
    assert alpha["final_accuracy"] == 0.8125  # the newest completed round's, from its parameters
    assert (beta["rounds_completed"], beta["rounds_aborted"], beta["clients"], beta["final_accuracy"]) == (0, 0, 2, None)


def test_run_table_has_one_line_per_run(database):
    result = _invoke("--db", database)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["run", "name", "status", "created", "(UTC)", "completed", "aborted", "clients", "accuracy"]
    assert set(lines[1]) == {"-", " "}
    alpha = lines[2].split()
    assert alpha[:3] == ["1", "alpha", "running"]
    assert alpha[5:] == ["2", "1", "4", "(1", "deleted)", "0.8125"]
    assert lines[3].split()[:3] == ["2", "beta", "running"] and lines[3].split()[-1] == "-"
    assert len(lines) == 4


def test_run_detail_reports_each_round_and_its_dropouts_per_stage(database):
    result = _invoke("--db", database, "--run", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {"run", "config", "totals", "stages", "rounds", "storage"}
    assert report["config"] == {"dataset": "digits", "rounds": 3, "privacy": {"mechanism": "skellam"}}
    # stages that lost someone, in SecAgg+ protocol order
    assert report["stages"] == ["advertise_keys", "share_keys", "masked_input", "unmask"]
    rounds = report["rounds"]
    assert all(set(line) == ROUND_KEYS for line in rounds)
    assert [(r["index"], r["status"], r["cohort"], r["survivors"]) for r in rounds] == [
        (0, "completed", 4, 3), (1, "aborted", 3, 0), (2, "completed", 3, 2)]
    assert [r["dropouts"] for r in rounds] == [
        {"advertise_keys": 0, "share_keys": 0, "masked_input": 1, "unmask": 0},
        {"advertise_keys": 1, "share_keys": 2, "masked_input": 0, "unmask": 0},
        {"advertise_keys": 0, "share_keys": 0, "masked_input": 0, "unmask": 1},
    ]
    assert [r["bytes_uploaded"] for r in rounds] == [4000, 300, 3000]
    assert [r["duration_seconds"] for r in rounds] == [2.5, 1.25, 4.0]
    assert [r["accuracy"] for r in rounds] == [0.5, None, 0.8125]
    totals = report["totals"]
    assert totals["bytes_uploaded"] == 7300
    assert totals["dropouts"] == {"advertise_keys": 1, "share_keys": 2, "masked_input": 1, "unmask": 1}
    assert (totals["rounds_completed"], totals["rounds_aborted"], totals["distinct_participants"]) == (2, 1, 3)


def test_storage_section_matches_the_repository_usage_report(database):
    result = _invoke("--db", database, "--run", "1", "--json")
    storage = json.loads(result.output)["storage"]
    with Repository.open(database, create=False) as repository:
        usage = repository.storage_usage(1)
        blob_bytes = sum(a.byte_size for r in (0, 2) for a in repository.load_aggregates(1, r).values())
    by_table = {table["table"]: table for table in storage["tables"]}
    assert set(by_table) == {table.table for table in usage.tables}
    for table in usage.tables:
        assert by_table[table.table]["payload_bytes"] == table.payload_bytes
        assert by_table[table.table]["rows"] == table.rows
    aggregates = by_table["aggregates"]
    assert (aggregates["rows"], aggregates["parameters"], aggregates["payload_bytes"]) == (2, 2 * DIMENSION, blob_bytes)
    assert aggregates["bits_per_parameter"] == pytest.approx(8 * blob_bytes / (2 * DIMENSION), rel=1e-12)
    records = by_table["sealed_records"]
    assert records["payload_bytes"] == sum(40 + c for c in (1, 2, 3)) + sum(40 + c for c in (2, 3))
    assert by_table["rounds"]["parameters"] is None and by_table["rounds"]["bits_per_parameter"] is None
    assert storage["payload_bytes"] == usage.payload_bytes
    assert storage["database_bytes"] == usage.database_bytes > 0


def test_run_detail_text_shows_config_rounds_and_storage(database):
    result = _invoke("--db", database, "--run", "1")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("run 1 (alpha): running")
    assert "privacy.mechanism  skellam" in text  # nested config flattened
    header = next(line for line in text.splitlines() if line.split()[:2] == ["round", "status"])
    assert header.split() == ["round", "status", "cohort", "survivors", "drop@advertise_keys", "drop@share_keys",
                              "drop@masked_input", "drop@unmask", "uploaded", "seconds", "accuracy"]
    round_lines = [line.split() for line in text.splitlines() if line.split()[:2] in (["0", "completed"],
                                                                                       ["1", "aborted"],
                                                                                       ["2", "completed"])]
    assert round_lines == [
        ["0", "completed", "4", "3", "0", "0", "1", "0", "3.91", "KiB", "2.50", "0.5000"],
        ["1", "aborted", "3", "0", "1", "2", "0", "0", "300", "B", "1.25", "-"],
        ["2", "completed", "3", "2", "0", "0", "0", "1", "2.93", "KiB", "4.00", "0.8125"],
    ]
    with Repository.open(database, create=False) as repository:
        aggregates = repository.storage_usage(1).table("aggregates")
    aggregate_line = next(line.split() for line in text.splitlines() if line.split()[:1] == ["aggregates"])
    assert aggregate_line[1:3] == ["2", str(aggregates.payload_bytes)]
    assert aggregate_line[-1] == f"{aggregates.bits_per_parameter:.3f}"
    assert "database on disk (all runs):" in text


def test_rounds_flag_shows_the_latest_run(database):
    latest = _invoke("--db", database, "--rounds", "--json")
    explicit = _invoke("--db", database, "--run", "2", "--json")
    assert latest.exit_code == explicit.exit_code == 0
    assert json.loads(latest.output)["run"]["id"] == 2
    assert json.loads(latest.output)["rounds"] == [] == json.loads(explicit.output)["rounds"]


def test_unknown_run_is_one_line_and_exit_code_2(database):
    result = _invoke("--db", database, "--run", "99")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["fedvault: error: no run with id 99"]


def test_missing_database_file_is_not_created(tmp_path):
    path = tmp_path / "absent.db"
    result = _invoke("--db", str(path))
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and "does not exist" in result.stderr
    assert not path.exists()


def test_empty_database_lists_no_runs_and_rounds_flag_fails_clearly(tmp_path):
    path = str(tmp_path / "empty.db")
    Repository.open(path).close()
    listing = _invoke("--db", path)
    assert listing.exit_code == 0 and "no runs yet" in listing.output
    detail = _invoke("--db", path, "--rounds")
    assert detail.exit_code == 2
    assert detail.stderr.startswith("fedvault: error: the database holds no runs yet")


def test_every_option_has_help_text():
    for parameter in history.params:
        if isinstance(parameter, __import__("click").Option):
            assert parameter.help, parameter.name
    result = CliRunner().invoke(fedvault, ["history", "--help"])
    assert result.exit_code == 0
    for flag in ("--db", "--run", "--rounds", "--json"):
        assert flag in result.output
