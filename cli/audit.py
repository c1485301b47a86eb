"""``fedvault audit``: each client's privacy budget, recomputed from the ledger's stored events.

The ledger stores every release as a dp-accounting-style event description (``privacy.events``)
next to the ε the ledger computed when it charged it (``epsilon_after``). The audit trusts
neither the stored ε nor the code that wrote it: it rebuilds every client's events from their
JSON, composes all of a client's streams (update LDP, DP-SGD, distributed noise) with the named
accountant, and checks that

- replaying the ledger's own accountant (running RDP) over the entries reproduces each stored
  ``epsilon_after`` to 1e-6 relative,
- no client spent more than its budget,
- every client's hash-chained ledger and the run's audit log verify,
- the ledger matches what the audit log recorded of every write (count, SHA-256, each client's
  chain head) and each completed round's cohort and survivors (``storage.audit.cross_check_ledger``),
- with ``--check-head``, a signed head saved earlier is still a prefix of the log.

Every ε names its relation and unit: central and local client-level ε, and record-level ε
(``docs/PRIVACY.md``).

Any failure is reported by name and the command exits 1 (an error such as an unknown run
exits 2 with one line, as every fedvault command does).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from cli.history import latest_run_id
from cli.options import database_option, json_option
from cli.tables import Column, format_number, render_table
from privacy.accounting import ACCOUNTANTS, RunningRdp, recompute_epsilon
from privacy.errors import PrivacyError, UnsupportedEventError
from privacy.local_privacy import local_epsilon
from privacy.relations import RELATIONS, relations_of, with_relation
from privacy.units import CLIENT, RECORD, record_level_event, unit_of_stream
from privacy.events import (
    ComposedEvent,
    Event,
    PoissonSampledEvent,
    SelfComposedEvent,
    event_from_json,
    event_to_json,
)
from storage import ChainVerification, ClientInfo, LedgerEntryRead, Repository
from storage.signed_head import (
    SignedHeadError,
    check_signed_head,
    default_key_path,
    load_or_create_key,
    public_key_hex,
    read_head_file,
    sign_head,
    write_head_file,
)

#: How the report names each accountant of ``privacy.accounting.recompute_epsilon``.
ACCOUNTANT_NAMES = {
    "rdp": "RDP accountant (fedvault's RDP curves on integer and Opacus orders; the ledger's own)",
    "opacus-rdp": "Opacus RDPAccountant",
    "prv": "Opacus PRVAccountant (privacy random variables)",
    "pld": "dp-accounting PLDAccountant (privacy loss distributions)",
    "dp-accounting-rdp": "dp-accounting RdpAccountant",
}
#: The relative tolerance between a stored ``epsilon_after`` and its recomputation.
EPSILON_RELATIVE_TOLERANCE = 1e-6
#: ε values below this are equal to zero for the tolerance test (no release at all).
_EPSILON_FLOOR = 1e-12
EXIT_AUDIT_FAILED = 1
CSV_COLUMNS = ("client_id", "status", "rounds_charged", "entries", "epsilon", "delta", "ledger_epsilon",
               "ledger_delta", "budget", "budget_left", "mechanisms", "streams", "accountant", "relation", "units",
               "central_epsilon", "local_epsilon", "record_epsilon")


@dataclass(frozen=True)
class ClientBudget:
    """One client's audited budget. ``epsilon`` is recomputed by the named accountant at
    ``delta`` (None when the client's events could not be read); ``ledger_epsilon`` and
    ``ledger_delta`` are the ledger's stored values after its last entry (None without entries);
    ``budget_left`` is the budget minus the named accountant's ε at the client's own δ (the δ the
    budget is stated at, whatever δ the report uses) of the unit that spent most (each unit,
    client- and record-level, has its own budget of that size); ``problems`` lists what failed for this
    client (empty when it passed)."""

    client_id: int
    status: str
    rounds_charged: int
    entries: int
    epsilon: float | None
    delta: float
    ledger_epsilon: float | None
    ledger_delta: float | None
    budget: float
    budget_left: float | None
    mechanisms: tuple[str, ...]
    streams: tuple[str, ...]
    problems: tuple[str, ...]
    relation: str | None = None
    units: tuple[str, ...] = ()
    central_epsilon: float | None = None
    local_epsilon: float | None = None
    record_epsilon: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "status": self.status,
            "rounds_charged": self.rounds_charged,
            "entries": self.entries,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "ledger_epsilon": self.ledger_epsilon,
            "ledger_delta": self.ledger_delta,
            "budget": self.budget,
            "budget_left": self.budget_left,
            "mechanisms": list(self.mechanisms),
            "streams": list(self.streams),
            "relation": self.relation,
            "units": list(self.units),
            "central_epsilon": self.central_epsilon,
            "local_epsilon": self.local_epsilon,
            "record_epsilon": self.record_epsilon,
            "ok": not self.problems,
            "problems": list(self.problems),
        }


@click.command("audit")
@database_option
@click.option("--run", "run_id", type=click.IntRange(min=1), default=None, metavar="ID",
              help="Run to audit (default: the newest run).")
@click.option("--client", "client_id", type=int, default=None, metavar="ID",
              help="Audit only this client (default: every enrolled client).")
@click.option("--accountant", type=click.Choice(ACCOUNTANTS), default="rdp", show_default=True,
              help="Accountant that recomputes ε from the stored events: rdp (Rényi DP, the ledger's own; every "
                   "mechanism), prv (Opacus privacy random variables; tighter, Gaussian-type events only), "
                   "opacus-rdp, pld or dp-accounting-rdp (cross-checks).")
@click.option("--delta", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Report ε at this δ instead of each client's enrolled δ.")
@json_option
@click.option("--csv", "as_csv", is_flag=True, default=False,
              help="Print the per-client table as CSV (verification results go to stderr).")
@click.option("--relation", type=click.Choice(["as-charged", *RELATIONS]), default="as-charged", show_default=True,
              help="Neighbouring relation to report the central ε under: as-charged (each event's own; runs charge "
                   "zero-out by default: a client's data replaced by nothing, its noise share still in the sum, since "
                   "participation is visible to the server), zero-out, or add-remove (the client and its noise share "
                   "leave the sum; accounted exactly with the variance change, distributed Skellam only).")
@click.option("--export-head", "export_head", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="When the audit passes, write the run's audit-log head signed with the server's "
                                   "Ed25519 key to FILE; keep it outside the database and check it later with "
                                   "--check-head.")
@click.option("--check-head", "check_head", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Verify a head saved earlier by --export-head: its signature, and that the "
                                   "audit log still extends it (a cut or rewritten log fails the audit).")
@click.option("--server-key", "server_key", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="The server's Ed25519 signing key (raw, mode 0600; created by --export-head when absent). "
                   "Default: the SQLite database file's name plus '.audit-key', beside it; required for a "
                   "database URL.")
def audit(db: str, run_id: int | None, client_id: int | None, accountant: str, delta: float | None,
          as_json: bool, as_csv: bool, relation: str, export_head: str | None, check_head: str | None,
          server_key: str | None) -> None:
    """Audit the privacy budgets of a run from its ledger.

    For each client: status (active or deleted), rounds charged, ε spent at δ recomputed from the
    stored events of all its ledger entries (all noise streams composed) by the named accountant,
    the ε the ledger stored for comparison, budget, budget left, mechanisms and streams. Then the
    hash chains of the ledger and the audit log are verified.

    Every ε names its unit and relation. Per client: the relation its central ε is under; the
    units its streams are in (client: the update noise; record: DP-SGD inside the client);
    central ε (client-level: the released sums, all rounds, under the relation); local ε
    (client-level: the client's own noise share alone against a server colluding with every
    other client, any two of its updates neighbours); record ε (record-level: the smaller of
    DP-SGD's ε and what the update noise implies for one record, the update's sensitivity doubled).

    The ledger is also checked against the audit log, which records for every write the count,
    the SHA-256 and each client's chain head of the ledger rows written: a deleted, truncated or
    rewritten ledger is named by client, round and what is missing, as is a survivor of a
    committed round without a charge. A head saved with --export-head pins the whole chain
    (--check-head), so even a consistent rewrite of log and ledger is caught.

    Exit status: 0 when everything verifies; 1 when the audit fails (a stored ε that the ledger's
    accountant does not reproduce to 1e-6 relative, a client over budget, an unreadable event,
    a broken hash chain, a ledger that disagrees with the audit log, or a saved head the log no
    longer extends), each failure named; 2 for an error (unknown run or client, no database).
    """
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    if server_key is None:
        default = default_key_path(db)
        if default is None and export_head:
            raise click.UsageError("--server-key FILE is required with a database URL")
        server_key = None if default is None else str(default)
    with Repository.open(db, create=False) as repository:
        report = audit_run(repository, run_id=run_id, client_id=client_id, accountant=accountant, delta=delta,
                           check_head=check_head, server_key=server_key,
                           relation=None if relation == "as-charged" else relation)
        if export_head is not None:
            if not report["ok"]:
                report["failures"].append(f"head not exported to {export_head}: the audit failed")
            else:
                try:
                    key = load_or_create_key(server_key)
                except (SignedHeadError, OSError) as error:
                    raise click.ClickException(f"server signing key: {_one_line(error)}") from None
                signed = sign_head(key, report["run_id"], repository.audit_head(report["run_id"]))
                write_head_file(export_head, signed)
                report["exported_head"] = {"file": export_head, **signed.as_json()}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif as_csv:
        click.echo(render_csv(report), nl=False)
        for line in verdict_lines(report):
            click.echo(line, err=True)
    else:
        click.echo(render_report(report))
    if not report["ok"]:
        sys.exit(EXIT_AUDIT_FAILED)


# --- the audit -------------------------------------------------------------------------------------


def audit_run(repository: Repository, *, run_id: int | None = None, client_id: int | None = None,
              accountant: str = "rdp", delta: float | None = None, check_head: str | None = None,
              server_key: str | None = None, relation: str | None = None) -> dict[str, Any]:
    """Audit one run (the newest when ``run_id`` is None), or one client of it.

    Returns a JSON-ready report with the stable keys ``run_id``, ``run_name``, ``accountant``,
    ``delta`` (the override, or None for each client's own), ``clients`` (one
    :meth:`ClientBudget.as_json` each), ``verification`` (``ledger`` and ``audit_log``: ok,
    chains, entries, problem; ``ledger_vs_audit_log``: the ledger cross-checked against the
    counts, digests, chain heads, cohorts and survivors the audit log records; ``saved_head``:
    the ``check_head`` file's verdict, None without one), ``failures`` (every problem, one line
    each) and ``ok``. ``check_head`` is a head file written by ``--export-head``: it must be
    signed (by ``server_key``'s key when that file exists) and still be a prefix of the log.
    Raises RunNotFoundError / ClientNotFoundError (storage errors) for unknown ids.
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    run = repository.get_run(latest_run_id(repository) if run_id is None else run_id)
    if client_id is None:
        clients = repository.list_clients(run.id)
    else:
        clients = [repository.get_client(run.id, client_id)]
    entries = repository.ledger_entries(run.id, client_id)
    by_client: dict[int, list[LedgerEntryRead]] = {client.client_id: [] for client in clients}
    for entry in entries:  # the schema's foreign key ties every entry to an enrolled client
        by_client[entry.client_id].append(entry)
    coordinates: list[int | None] = []

    def dimension() -> int | None:  # computed once, and only for stored events that lack it
        if not coordinates:
            coordinates.append(run_coordinates(run.config))
        return coordinates[0]

    budgets = [audit_client(client, by_client[client.client_id], accountant=accountant, delta=delta,
                            relation=relation, dimension=dimension)
               for client in clients]
    ledger = repository.verify_ledger(run.id, client_id)
    audit_log = repository.verify_audit_log(run.id)
    cross = repository.cross_check_ledger(run.id)
    failures = [f"client {budget.client_id}: {problem}" for budget in budgets for problem in budget.problems]
    for name, verification in (("ledger", ledger), ("audit log", audit_log)):
        if not verification.ok:
            failures.append(f"{name} hash chain broken at {verification.first_bad}")
    failures.extend(f"ledger against the audit log: {finding}" for finding in cross.findings
                    if client_id is None or finding.client_id in (None, client_id))
    head = None
    if check_head is not None:
        head = {"file": str(check_head), "ok": True, "problem": None}
        try:
            signed = read_head_file(check_head)
            if signed.run_id != run.id:
                raise SignedHeadError(f"the head file is for run {signed.run_id}, not run {run.id}")
            trusted = public_key_hex(load_or_create_key(server_key, create=False)) \
                if server_key is not None and Path(server_key).exists() else None
            check_signed_head(repository, signed, trusted)
            head.update(sequence=signed.head.sequence, signer_checked=trusted is not None)
        except SignedHeadError as error:
            head.update(ok=False, problem=_one_line(error))
            failures.append(f"saved head {check_head}: {_one_line(error)}")
    return {
        "run_id": run.id,
        "run_name": run.name,
        "accountant": accountant,
        "delta": delta,
        "relation": relation or "as-charged",
        "clients": [budget.as_json() for budget in budgets],
        "verification": {"ledger": _chain_json(ledger), "audit_log": _chain_json(audit_log),
                         "ledger_vs_audit_log": cross.as_json(), "saved_head": head},
        "failures": failures,
        "ok": not failures,
    }


def audit_client(client: ClientInfo, entries: Sequence[LedgerEntryRead], *, accountant: str,
                 delta: float | None, relation: str | None = None,
                 dimension: Callable[[], int | None] | None = None) -> ClientBudget:
    """Recompute one client's ε from its ledger entries (in ledger order) and check them.

    UnsupportedEventError (a PrivacyError) propagates when the named accountant cannot interpret
    the client's events (e.g. PRV on Skellam noise): that is a wrong choice of accountant, not a
    finding about the ledger.
    """
    report_delta = client.delta if delta is None else delta
    problems: list[str] = []
    events: list[Event] = []
    for entry in entries:
        try:
            events.append(event_from_json(entry.event_json))
        except PrivacyError as error:
            problems.append(f"ledger entry #{entry.sequence} (round {entry.round_index}): event does not parse: "
                            f"{_one_line(error)}")
    epsilon = budget_left = central = local = record = None
    reported = events
    if relation is not None and not problems:
        reported = [_with_relation(event, relation, dimension) for event in events]
    if not problems:
        try:
            epsilon = _recompute(reported, report_delta, accountant)
            client_level = [e for entry, e in zip(entries, reported, strict=True)
                            if unit_of_stream(entry.stream) == CLIENT]
            record_level = [e for entry, e in zip(entries, reported, strict=True)
                            if unit_of_stream(entry.stream) == RECORD]
            # Each unit has its own budget (the same number): what is left is the tighter one's.
            budget_left = client.epsilon_budget - max(
                (_recompute(unit_events, client.delta, accountant) for unit_events in (client_level, record_level)
                 if unit_events), default=0.0)
            central = _recompute(client_level, report_delta, accountant) if client_level else None
            local = local_epsilon(client_level, report_delta) if client_level else None
            # Record level: DP-SGD's own guarantee holds for the whole release (the update is
            # post-processing of DP-SGD's output), and so does the update noise's record-level
            # image; both are valid bounds, the smaller one is reported.
            bounds = [_recompute(record_level, report_delta, "rdp")] if record_level else []
            if client_level:
                bounds.append(_recompute([record_level_event(e) for e in client_level], report_delta, "rdp"))
            record = min(bounds) if bounds else None
        except UnsupportedEventError as error:
            raise UnsupportedEventError(f"client {client.client_id}: {_one_line(error)}") from None
        except PrivacyError as error:
            problems.append(f"epsilon cannot be recomputed: {_one_line(error)}")
    if events and len(events) == len(entries):  # the ledger's stored values and budget, by its own accountant
        mismatches, running = ledger_mismatches(entries, events)
        problems.extend(mismatches)
        problems.extend(_budget_problems(client, running))
    last = entries[-1] if entries else None
    return ClientBudget(
        client_id=client.client_id,
        status=client.status,
        rounds_charged=len({entry.round_index for entry in entries}),
        entries=len(entries),
        epsilon=epsilon,
        delta=report_delta,
        ledger_epsilon=None if last is None else last.epsilon_after,
        ledger_delta=None if last is None else last.delta,
        budget=client.epsilon_budget,
        budget_left=budget_left,
        mechanisms=tuple(sorted({name for event in events for name in mechanism_names(event)})),
        streams=tuple(sorted({entry.stream for entry in entries})),
        problems=tuple(problems),
        relation=", ".join(sorted(set().union(*(relations_of(e) for e in reported)))) or None,
        units=tuple(sorted({unit_of_stream(entry.stream) for entry in entries})),
        central_epsilon=central,
        local_epsilon=local,
        record_epsilon=record,
    )


def _with_relation(event: Event, relation: str, dimension: Callable[[], int | None] | None) -> Event:
    """``event`` accounted under ``relation``; a stored distributed-Skellam event without its
    dimension (written before events recorded it) gets the run's, computed only when needed."""
    converted = with_relation(event, relation)
    if relation == "add-remove" and dimension is not None and _lacks_dimension(converted):
        converted = with_relation(event, relation, dimension())
    return converted


def _lacks_dimension(event: Event) -> bool:
    from privacy.events import DistributedSkellamEvent

    if isinstance(event, DistributedSkellamEvent):
        return event.dimension is None
    if isinstance(event, ComposedEvent):
        return any(_lacks_dimension(inner) for inner in event.events)
    if isinstance(event, (SelfComposedEvent, PoissonSampledEvent)):
        return _lacks_dimension(event.event)
    return False


def run_coordinates(config: Mapping[str, Any]) -> int | None:
    """The number of integer coordinates a run's noise is added to (the model's parameters
    through its lattice codec), as the run's privacy planner computed it; None when the stored
    configuration does not describe a built-in model."""
    try:
        from federation.config import RunConfig
        from federation.coordinator import lattice_step
        from federation.evaluation import GlobalModel
        from secagg.codec import CodecConfig, LatticeCodec

        run_config = RunConfig.from_dict(dict(config))
        dimension = GlobalModel.for_config(run_config).parameter_count
        step = lattice_step(run_config, dimension)
        codec = LatticeCodec(CodecConfig(lattice=run_config.lattice, step=step, bits=32, clip_norm=run_config.clip_norm))
        return int(codec.coordinates(dimension))
    except Exception:  # noqa: BLE001 - a custom or foreign configuration: the caller reports the gap
        return None


def ledger_mismatches(entries: Sequence[LedgerEntryRead],
                      events: Sequence[Event]) -> tuple[list[str], dict[str, RunningRdp]]:
    """Replay the ledger's accountant (``privacy.ledger.BudgetLedger``'s own: one running RDP
    vector per unit, over the client's streams of that unit) entry by entry, and name every entry
    whose stored ``epsilon_after`` differs from the replay at that entry's δ by more than 1e-6
    relative. Ledgers written before units were kept apart stored the total over all streams; that
    total is accepted too (it bounds the unit's). Returns (problems, the replayed accountants by unit)."""
    units: dict[str, RunningRdp] = {}
    combined = RunningRdp()
    problems = []
    for entry, event in zip(entries, events, strict=True):
        running = units.setdefault(unit_of_stream(entry.stream), RunningRdp())
        running.add(event)
        combined.add(event)
        try:
            replayed = _epsilon_of(running, entry.delta)
            legacy = _epsilon_of(combined, entry.delta)
        except PrivacyError as error:
            problems.append(f"ledger entry #{entry.sequence} (round {entry.round_index}) cannot be accounted at "
                            f"its delta={entry.delta:g}: {_one_line(error)}")
            continue
        if not (epsilons_match(entry.epsilon_after, replayed) or epsilons_match(entry.epsilon_after, legacy)):
            problems.append(
                f"ledger entry #{entry.sequence} (round {entry.round_index}, {entry.stream}) stores "
                f"epsilon_after={entry.epsilon_after:.9g} but its events give {replayed:.9g} at delta={entry.delta:g}"
            )
    return problems, units


def epsilons_match(stored: float, recomputed: float) -> bool:
    """Equal to ``EPSILON_RELATIVE_TOLERANCE`` relative (both ~0 also match)."""
    return math.isclose(stored, recomputed, rel_tol=EPSILON_RELATIVE_TOLERANCE, abs_tol=_EPSILON_FLOOR)


def mechanism_names(event: Event) -> list[str]:
    """The noise mechanisms inside an event tree, by their stored type names (``skellam``,
    ``distributed_skellam``, ``gaussian``, ...), each prefixed ``poisson-sampled`` when sampling
    amplifies it; composition wrappers are looked through."""
    if isinstance(event, ComposedEvent):
        return [name for inner in event.events for name in mechanism_names(inner)]
    if isinstance(event, SelfComposedEvent):
        return mechanism_names(event.event)
    if isinstance(event, PoissonSampledEvent):
        return [f"poisson-sampled {name}" for name in mechanism_names(event.event)]
    return [event_to_json(event)["type"]]


def _budget_problems(client: ClientInfo, units: Mapping[str, RunningRdp]) -> list[str]:
    """The ledger refuses a charge that would take a unit's ε past its budget, so a client over
    budget at its own δ, by the ledger's accountant, means a charge got past it. Each unit is
    held to the enrolled budget (the ledger's default record budget is the same number)."""
    problems = []
    for unit, running in sorted(units.items()):
        try:
            spent = _epsilon_of(running, client.delta)
        except PrivacyError as error:
            problems.append(f"its budget cannot be checked at its delta={client.delta:g}: {_one_line(error)}")
            continue
        if spent > client.epsilon_budget * (1 + EPSILON_RELATIVE_TOLERANCE):
            problems.append(f"spent {unit}-level epsilon={spent:.9g} at delta={client.delta:g}, over its budget of "
                            f"{client.epsilon_budget:g}")
    return problems


def _recompute(events: Sequence[Event], delta: float, accountant: str) -> float:
    return float(recompute_epsilon(events, delta, accountant=accountant)) if events else 0.0


def _epsilon_of(running: RunningRdp, delta: float) -> float:
    return float(running.epsilon(delta))


def _chain_json(verification: ChainVerification) -> dict[str, Any]:
    return {
        "ok": verification.ok,
        "chains": verification.chains_checked,
        "entries": verification.entries_checked,
        "problem": None if verification.first_bad is None else str(verification.first_bad),
    }


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# --- rendering -------------------------------------------------------------------------------------


def render_report(report: Mapping[str, Any]) -> str:
    """The table, the verification lines and the verdict."""
    name = f" ({report['run_name']})" if report["run_name"] else ""
    at = f"delta={report['delta']:g}" if report["delta"] is not None else "each client's delta"
    relation = report.get("relation", "as-charged")
    relation_text = ("each event's own relation (runs charge zero-out unless configured otherwise)"
                     if relation == "as-charged" else f"the {relation} relation")
    lines = [f"run {report['run_id']}{name}: privacy budgets from the ledger; epsilon recomputed from the stored "
             f"events by the {ACCOUNTANT_NAMES[report['accountant']]} at {at}, under {relation_text}",
             "central ε: client-level, the released sums under the relation; local ε: client-level, the client's "
             "own noise share alone (server colluding with all other clients); record ε: record-level (the smaller of "
             "DP-SGD's and the update noise's at twice the update's sensitivity, RDP)", ""]
    columns = [Column("client", "right"), Column("status"), Column("rounds", "right"),
               Column(f"ε ({report['accountant']})", "right"), Column("δ", "right"), Column("ledger ε", "right"),
               Column("budget", "right"), Column("left", "right"), Column("relation"), Column("units"),
               Column("central ε", "right"), Column("local ε", "right"), Column("record ε", "right"),
               Column("mechanisms"), Column("streams"), Column("check")]
    rows = [
        [c["client_id"], c["status"], c["rounds_charged"], format_number(c["epsilon"]), f"{c['delta']:g}",
         format_number(c["ledger_epsilon"]), format_number(c["budget"], 2), format_number(c["budget_left"]),
         c["relation"] or "-", c["units"], format_number(c["central_epsilon"]), format_number(c["local_epsilon"]),
         format_number(c["record_epsilon"]), c["mechanisms"], c["streams"], "ok" if c["ok"] else "FAILED"]
        for c in report["clients"]
    ]
    lines.append(render_table(columns, rows) if rows else "(no clients enrolled)")
    lines.append("")
    lines.extend(verdict_lines(report))
    return "\n".join(lines)


def verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per hash chain, then ``audit passed`` or ``audit FAILED`` and each failure."""
    lines = []
    for label, key, unit in (("ledger chains", "ledger", "client chains"), ("audit log", "audit_log", "chain")):
        chain = report["verification"][key]
        state = "ok" if chain["ok"] else f"BROKEN: {chain['problem']}"
        lines.append(f"{label}: {state} ({chain['chains']} {unit}, {chain['entries']} entries verified)")
    cross = report["verification"]["ledger_vs_audit_log"]
    state = "ok" if cross["ok"] else f"{len(cross['findings'])} DISAGREEMENT(S)"
    lines.append(f"ledger against the audit log: {state} ({cross['ledger_rows']} ledger entries, "
                 f"{cross['audit_entries_checked']} audit entries, {cross['rounds_checked']} rounds with their cohorts "
                 "and survivors)")
    head = report["verification"].get("saved_head")
    if head is not None:
        state = (f"ok (audit entry #{head['sequence']} still heads a prefix of the log)" if head["ok"]
                 else f"FAILED: {head['problem']}")
        lines.append(f"saved head {head['file']}: {state}")
    if report.get("exported_head"):
        exported = report["exported_head"]
        lines.append(f"signed head exported to {exported['file']}: audit entry #{exported['sequence']} "
                     f"{exported['entry_hash'][:16]}…, key {exported['public_key'][:16]}…")
    if report["ok"]:
        lines.append("audit passed: every stored epsilon reproduced, every client within budget, hash chains intact")
    else:
        count = len(report["failures"])
        lines.append(f"audit FAILED ({count} problem{'' if count == 1 else 's'}):")
        lines.extend(f"  - {failure}" for failure in report["failures"])
    return lines


def render_csv(report: Mapping[str, Any]) -> str:
    """One CSV row per client (header ``CSV_COLUMNS``); lists joined with ``;``, None empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for client in report["clients"]:
        values = {**client, "accountant": report["accountant"],
                  "mechanisms": ";".join(client["mechanisms"]), "streams": ";".join(client["streams"]),
                  "units": ";".join(client["units"])}
        writer.writerow(["" if values[key] is None else _csv_value(values[key]) for key in CSV_COLUMNS])
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
