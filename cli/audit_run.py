"""`fedvault audit-run`: an empirical privacy audit of a real run, with canary clients."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import click

from cli.options import json_option
from cli.run import config_options, config_values

#: Exit code of a flagged run (its lower bound exceeds its accounted ε); errors exit 2.
FLAGGED_EXIT_CODE = 1


@click.command("audit-run")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with any of the run settings below (as for `fedvault run`); flags override it.")
@config_options
@click.option("--canaries", type=click.IntRange(min=2), default=80, show_default=True,
              help="Canary clients added to --clients. Each is included with probability 1/2 (a coin from the OS "
                   "CSPRNG the auditor keeps) and then uploads a crafted update along its own model coordinate; "
                   "more canaries give a tighter bound and a longer run. Canaries are clients of the run, so the "
                   "data split covers them too (a Dirichlet split needs 10 samples per client: use --split iid "
                   "for many canaries on small data).")
@click.option("--canary-norm", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Norm of a canary's crafted update before the client clips it (default: twice --clip).")
@click.option("--confidence", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Confidence of the lower bound ε_lb.")
@click.option("--db", "db", metavar="PATH|URL", default=None,
              help="Database to store the audited run in (default: a temporary SQLite file, removed afterwards).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the clients' key files (default: a temporary folder, removed afterwards).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar over the rounds on stderr.")
@json_option
def audit_run(config_file, canaries, canary_norm, confidence, db, out_dir, progress, as_json, **flags):
    """Audit a run empirically: insert canary clients, train for real, bound ε from below.

    The run is a real `fedvault run` with the given settings plus --canaries canary clients:
    every upload, a canary's too, is clipped, rotated, lattice-coded, noised with the client's
    exact integer noise share and masked by SecAgg+. From the decoded sums the run released,
    the auditor guesses which canaries were included; the one-run audit (Steinke, Nasr,
    Jagielski 2023) turns its score into a lower bound ε_lb that a correct run exceeds with
    probability at most 1 - confidence. It prints ε_lb beside the ε the ledger accounted for
    the canaries and exits 1 with a FLAG line when ε_lb is above it. The bound is loose: no
    flag does not prove the claim, a flag disproves it.
    """
    from tqdm import tqdm

    from federation.canary_audit import audit_run as run_audit
    from federation.canary_audit import canary_config
    from federation.config import RunConfig
    from storage.repositories import Repository

    config = RunConfig.from_dict(config_values(config_file, flags))
    canary_config(config, canaries)  # fail on bad settings before anything is created
    scratch = Path(tempfile.mkdtemp(prefix="fedvault-audit-run-"))
    try:
        database = db if db is not None else str(scratch / "audit.db")
        keys = Path(out_dir) / "keys" if out_dir is not None else scratch / "keys"
        bar = tqdm(total=config.rounds, desc="audited rounds", unit="round", leave=False,
                   disable=not progress or as_json or not sys.stderr.isatty())
        with Repository.open(database) as repository:
            try:
                report = run_audit(config, canaries, repository, key_directory=keys, confidence=confidence,
                                   magnitude=canary_norm, on_round=lambda _: bar.update(1))
            finally:
                bar.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = report.as_json()
    if db is None:
        result["run_id"] = None  # the run lived in a temporary database
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        click.echo(render(result))
    sys.exit(FLAGGED_EXIT_CODE if report.flagged else 0)


def render(result: dict) -> str:
    lines = [
        f"empirical audit: {result['canaries']} canaries ({result['canaries_included']} included), "
        f"{result['completed_rounds']} completed rounds, final accuracy {result['final_accuracy']:.4f}",
        f"guesses {result['guesses']}, correct {result['correct']}  "
        f"(mean score in {_number(result['mean_score_in'])}, out {_number(result['mean_score_out'])})",
        f"ε_lb = {result['epsilon_lower_bound']:.4f} at {result['confidence']:.0%} confidence   "
        f"accounted ε = {result['accounted_epsilon']:.4f} (δ = {result['delta']:g})",
    ]
    if result["flagged"]:
        lines.append(f"FLAG: the empirical lower bound {result['epsilon_lower_bound']:.4f} exceeds the accounted "
                     f"ε {result['accounted_epsilon']:.4f}: the run's noise or its accounting is wrong")
    else:
        lines.append("OK: the lower bound stays below the accounted ε (a one-run bound is loose: this does not "
                     "prove the claim)")
    return "\n".join(lines)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
