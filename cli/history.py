"""``fedvault history``: what the database holds: runs, their rounds, participants, dropouts per
protocol stage, upload bytes, and the storage each table uses (bytes and bits per parameter).

Everything is read through ``storage.Repository``; nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from cli.options import database_option, json_option
from cli.tables import Column, format_bytes, format_number, format_time, render_pairs, render_table
from secagg.stages import STAGES
from storage import Repository, RoundInfo, RunInfo, StorageUsage
from storage.errors import RunNotFoundError

ACCURACY_KEY = "accuracy"


@click.command("history")
@database_option
@click.option("--run", "run_id", type=click.IntRange(min=1), default=None, metavar="ID",
              help="Show one run in detail: its configuration, one line per round, and the storage it uses. "
                   "Without it, list every run.")
@click.option("--rounds", "show_rounds", is_flag=True, default=False,
              help="Show the per-round detail of the latest run (what --run ID shows for run ID).")
@json_option
def history(db: str, run_id: int | None, show_rounds: bool, as_json: bool) -> None:
    """Show the runs stored in the database and what each round did.

    Without --run: one line per run (id, name, status, creation time, rounds completed and
    aborted, enrolled clients, final accuracy when the rounds recorded it). With --run ID (or
    --rounds for the latest run): the run's configuration, one line per round (status, cohort,
    survivors, dropouts at each SecAgg+ stage, bytes uploaded, duration, accuracy) and the storage
    used per table (rows, payload bytes, bits per model parameter). Read-only.
    """
    with Repository.open(db, create=False) as repository:
        if run_id is None and not show_rounds:
            report = runs_report(repository)
            click.echo(json.dumps(report, indent=2) if as_json else render_runs(report))
            return
        if run_id is None:
            run_id = latest_run_id(repository)
        report = run_report(repository, run_id)
    click.echo(json.dumps(report, indent=2) if as_json else render_run(report))


# --- reports (plain JSON-ready dicts with stable keys) ----------------------------------------------


def latest_run_id(repository: Repository) -> int:
    """The id of the newest run; RunNotFoundError when the database holds none."""
    runs = repository.list_runs()
    if not runs:
        raise RunNotFoundError("the database holds no runs yet; start one with `fedvault run`")
    return runs[-1].id


def runs_report(repository: Repository) -> dict[str, Any]:
    """``{"runs": [...]}``: one summary per run, oldest first (see :func:`run_summary`)."""
    return {"runs": [run_summary(repository, run) for run in repository.list_runs()]}


def run_summary(repository: Repository, run: RunInfo) -> dict[str, Any]:
    """id, name, status, created (ISO 8601 UTC), rounds completed/aborted, clients enrolled
    (active/deleted) and the accuracy of the newest completed round that recorded one."""
    rounds = repository.list_rounds(run.id)
    clients = repository.list_clients(run.id)
    accuracies = round_accuracies(repository, run.id, rounds)
    completed = [r.round_index for r in rounds if r.status == "completed"]
    final = next((accuracies[i] for i in reversed(completed) if i in accuracies), None)
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "created": run.created_at.isoformat(),
        "rounds_completed": len(completed),
        "rounds_aborted": sum(1 for r in rounds if r.status == "aborted"),
        "clients": len(clients),
        "clients_deleted": sum(1 for c in clients if c.status == "deleted"),
        "final_accuracy": final,
    }


def run_report(repository: Repository, run_id: int) -> dict[str, Any]:
    """One run in detail: ``run`` (its summary), ``config``, ``totals``, ``stages`` (the dropout
    stages in protocol order), ``rounds`` (one dict per round) and ``storage``."""
    run = repository.get_run(run_id)
    rounds = repository.list_rounds(run_id)
    accuracies = round_accuracies(repository, run_id, rounds)
    stages = dropout_stages(rounds)
    round_rows = [round_line(r, stages, accuracies.get(r.round_index)) for r in rounds]
    participants = sorted({client for r in rounds for client in r.survivors})
    totals = {
        "rounds": len(rounds),
        "rounds_completed": sum(1 for r in rounds if r.status == "completed"),
        "rounds_aborted": sum(1 for r in rounds if r.status == "aborted"),
        "distinct_participants": len(participants),
        "dropouts": {stage: sum(row["dropouts"][stage] for row in round_rows) for stage in stages},
        "bytes_uploaded": sum(r.bytes_uploaded for r in rounds),
        "duration_seconds": sum(row["duration_seconds"] for row in round_rows),
    }
    return {
        "run": run_summary(repository, run),
        "config": dict(run.config),
        "totals": totals,
        "stages": list(stages),
        "rounds": round_rows,
        "storage": storage_report(repository.storage_usage(run_id)),
    }


def round_accuracies(repository: Repository, run_id: int, rounds: Sequence[RoundInfo]) -> dict[int, float]:
    """Round index -> accuracy, from the round's public parameters or else from the details of
    its ``round.committed`` audit entry (where the coordinator records it)."""
    found: dict[int, float] = {}
    for entry in repository.audit_entries(run_id, event="round.committed"):
        details = entry.payload.get("details")
        if entry.round_index is not None and isinstance(details, Mapping):
            value = _number(details.get(ACCURACY_KEY))
            if value is not None:
                found[entry.round_index] = value
    for round_info in rounds:
        value = _number(round_info.parameters.get(ACCURACY_KEY))
        if value is not None:
            found[round_info.round_index] = value
    return found


def dropout_stages(rounds: Sequence[RoundInfo]) -> tuple[str, ...]:
    """Every stage at which some round lost clients: SecAgg+ stages in protocol order, then any
    other stage names (e.g. recorded by another transport) alphabetically."""
    seen = {stage for r in rounds for stage in r.dropouts}
    return tuple(stage for stage in STAGES if stage in seen) + tuple(sorted(seen - set(STAGES)))


def round_line(round_info: RoundInfo, stages: Sequence[str], accuracy: float | None) -> dict[str, Any]:
    """One round: index, status, stage reached, cohort size, survivors, dropouts per stage,
    bytes uploaded, duration in seconds, accuracy (None when not recorded)."""
    duration = (round_info.finished_at - round_info.started_at).total_seconds()
    return {
        "index": round_info.round_index,
        "status": round_info.status,
        "stage": round_info.stage,
        "cohort": len(round_info.cohort),
        "survivors": len(round_info.survivors),
        "dropouts": {stage: len(round_info.dropouts.get(stage, ())) for stage in stages},
        "bytes_uploaded": round_info.bytes_uploaded,
        "duration_seconds": duration,
        "accuracy": accuracy,
        "started": round_info.started_at.isoformat(),
    }


def storage_report(usage: StorageUsage) -> dict[str, Any]:
    """Per table: rows, payload bytes, parameters covered and bits per parameter (None for tables
    that hold no model-sized arrays); plus the run's payload total and the database file size."""
    return {
        "tables": [
            {
                "table": table.table,
                "rows": table.rows,
                "payload_bytes": table.payload_bytes,
                "parameters": table.parameters,
                "bits_per_parameter": table.bits_per_parameter,
            }
            for table in usage.tables
        ],
        "payload_bytes": usage.payload_bytes,
        "database_bytes": usage.database_bytes,
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# --- rendering -------------------------------------------------------------------------------------


def render_runs(report: Mapping[str, Any]) -> str:
    runs = report["runs"]
    if not runs:
        return "no runs yet; start one with `fedvault run`"
    columns = [Column("run", "right"), Column("name"), Column("status"), Column("created (UTC)"),
               Column("completed", "right"), Column("aborted", "right"), Column("clients", "right"),
               Column("accuracy", "right")]
    rows = [
        [run["id"], run["name"], run["status"], _time(run["created"]), run["rounds_completed"],
         run["rounds_aborted"], _clients(run), format_number(run["final_accuracy"])]
        for run in runs
    ]
    return render_table(columns, rows)


def render_run(report: Mapping[str, Any]) -> str:
    run, totals, stages = report["run"], report["totals"], report["stages"]
    title = f"run {run['id']}" + (f" ({run['name']})" if run["name"] else "")
    sections = [
        f"{title}: {run['status']}, created {_time(run['created'])} UTC, clients: {_clients(run)}",
        "configuration\n" + (render_pairs(flatten_config(report["config"]), indent=2) or "  (empty)"),
        "rounds\n" + render_pairs(_totals_pairs(totals, run), indent=2),
    ]
    if report["rounds"]:
        columns = [Column("round", "right"), Column("status"), Column("cohort", "right"), Column("survivors", "right")]
        columns += [Column(f"drop@{stage}", "right") for stage in stages]
        columns += [Column("uploaded", "right"), Column("seconds", "right"), Column("accuracy", "right")]
        rows = [
            [line["index"], line["status"], line["cohort"], line["survivors"],
             *(line["dropouts"][stage] for stage in stages),
             format_bytes(line["bytes_uploaded"]), format_number(line["duration_seconds"], 2),
             format_number(line["accuracy"])]
            for line in report["rounds"]
        ]
        sections.append(render_table(columns, rows, indent=2))
    sections.append("storage\n" + render_storage(report["storage"]))
    return "\n\n".join(sections)


def render_storage(storage: Mapping[str, Any]) -> str:
    columns = [Column("table"), Column("rows", "right"), Column("bytes", "right"), Column("payload", "right"),
               Column("parameters", "right"), Column("bits/param", "right")]
    rows = [
        [t["table"], t["rows"], t["payload_bytes"], format_bytes(t["payload_bytes"]), t["parameters"],
         format_number(t["bits_per_parameter"], 3)]
        for t in storage["tables"]
    ]
    rows.append(["total", None, storage["payload_bytes"], format_bytes(storage["payload_bytes"]), None, None])
    text = render_table(columns, rows, indent=2)
    if storage["database_bytes"] is not None:
        text += f"\n  database on disk (all runs): {format_bytes(storage['database_bytes'])}"
    return text


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested config mappings as dotted ``key: value`` pairs, in key order; lists stay values."""
    pairs: list[tuple[str, Any]] = []
    for key in sorted(config, key=str):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            pairs.extend(flatten_config(value, f"{name}."))
        else:
            pairs.append((name, json.dumps(value) if isinstance(value, (Mapping, list)) else value))
    return pairs


def _totals_pairs(totals: Mapping[str, Any], run: Mapping[str, Any]) -> list[tuple[str, Any]]:
    dropped = ", ".join(f"{stage} {count}" for stage, count in totals["dropouts"].items()) or "none"
    return [
        ("committed", f"{totals['rounds']} ({totals['rounds_completed']} completed, {totals['rounds_aborted']} aborted)"),
        ("participants", f"{totals['distinct_participants']} distinct clients in at least one sum"),
        ("dropouts", dropped),
        ("uploaded", f"{format_bytes(totals['bytes_uploaded'])} ({totals['bytes_uploaded']} B)"),
        ("round time", f"{totals['duration_seconds']:.2f} s"),
        ("final accuracy", format_number(run["final_accuracy"])),
    ]


def _clients(run: Mapping[str, Any]) -> str:
    deleted = run["clients_deleted"]
    return f"{run['clients']}" + (f" ({deleted} deleted)" if deleted else "")


def _time(iso: str) -> str:
    return format_time(datetime.fromisoformat(iso))
