"""`execute_run`: what `fedvault run` does, as a Python API (progress, per-round lines, plots, report)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from federation.config import RunConfig
from federation.coordinator import Coordinator, RoundSummary, RunSummary
from federation.workload import Workload
from federation.plots import plot_accuracy_and_epsilon, plot_upload_bytes
from storage.repositories import Repository


def format_round(summary: RoundSummary, total_rounds: int) -> str:
    width = len(str(total_rounds))
    head = f"round {summary.round_index + 1:>{width}}/{total_rounds}"
    if summary.status != "completed":
        return f"{head}  ABORTED ({summary.abort_reason})  ε={summary.epsilon_spent:.3f}"
    return (f"{head}  acc={summary.accuracy:.4f}  loss={summary.loss:.4f}  ε={summary.epsilon_spent:.3f}  "
            f"clients={summary.survivors}/{summary.cohort}  dropped={summary.dropouts}  "
            f"up={summary.upload_bytes_per_client / 1024:.1f} KiB/client "
            f"(vector {summary.masked_input_bytes_per_client / 1024:.1f})  {summary.seconds:.2f}s")


def execute_run(config: RunConfig, *, db: str | None, out_dir: Path, resume_run: int | None = None,
                baseline: bool = False, plots: bool = True, progress: bool = True,
                echo: Callable[[str], None] | None = print, workload: Workload | None = None) -> dict[str, Any]:
    """Run (or resume) a federated run and return its report (what `--json` prints); ``workload``
    trains a user's own model and per-client data (:mod:`federation.workload`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Repository.open(db) as repository:
        coordinator = Coordinator(config, repository, key_directory=out_dir / "keys",
                                  run_id=resume_run, workload=workload)
        config = coordinator.config
        remaining = config.rounds - coordinator.start_round
        if echo is not None:
            verb = f"resuming run {coordinator.run_id} at round {coordinator.start_round + 1}" if resume_run \
                else f"run {coordinator.run_id}"
            what = f"{config.dataset}, {config.clients} clients, {config.model}" if workload is None \
                else f"workload {config.extra['workload']!r}, {config.clients} clients"
            echo(f"fedvault {verb}: {what} "
                 f"({coordinator.dimension} parameters), {config.lattice} lattice at {coordinator.bits} bits, "
                 f"noise={config.noise}/{config.mechanism} ε≤{config.target_epsilon:g} δ={config.delta:g}")
            if config.trainer == "locodl" and config.noise != "none":
                echo("warning: LoCoDL's control variates accumulate DP noise round after round; with few "
                     "clients the run can diverge (bench/RESULTS.md); without noise it converges linearly to the optimum.")
        bar = tqdm(total=remaining, desc="rounds", unit="round", leave=False,
                   disable=not progress or not sys.stderr.isatty())

        def on_round(summary: RoundSummary) -> None:
            bar.update(1)
            if echo is not None:
                bar.write(format_round(summary, config.rounds)) if progress else echo(format_round(summary, config.rounds))

        try:
            summary = coordinator.run(on_round)
        finally:
            bar.close()
        history = [r for r in repository.list_rounds(coordinator.run_id)]
    baseline_accuracy = None
    if baseline:
        from federation.baseline import run_float32_fedavg

        baseline_accuracy = run_float32_fedavg(config, workload)[-1]
    report = _report(summary, history, baseline_accuracy, time.perf_counter() - started)
    if plots:
        report["plots"] = _plots(report, out_dir, config, baseline_accuracy)
    if echo is not None:
        echo(render_summary(report))
    return report


def _report(summary: RunSummary, history, baseline_accuracy, seconds) -> dict[str, Any]:
    rounds = [r.__dict__ for r in summary.rounds]
    completed = [r for r in summary.rounds if r.status == "completed"]
    upload = [r.upload_bytes_per_client for r in completed]
    vector = [r.masked_input_bytes_per_client for r in completed]
    return {
        "run_id": summary.run_id,
        "config": summary.config.to_dict(),
        "parameters": summary.parameters,
        "lattice": summary.lattice,
        "bits": summary.bits,
        "rounds_committed": len(history),
        "rounds_completed": sum(1 for r in history if r.status == "completed"),
        "rounds_aborted": sum(1 for r in history if r.status == "aborted"),
        "final_accuracy": summary.final_accuracy,
        "baseline_accuracy": baseline_accuracy,
        "epsilon_spent_max": max((r.epsilon_spent for r in summary.rounds), default=0.0),
        "upload_bytes_per_client_per_round": sum(upload) / len(upload) if upload else 0.0,
        "masked_input_bytes_per_client_per_round": sum(vector) / len(vector) if vector else 0.0,
        "float32_update_bytes": summary.float32_update_bytes,
        "seconds": seconds,
        "rounds": rounds,
    }


def _plots(report, out_dir: Path, config: RunConfig, baseline_accuracy) -> dict[str, str]:
    rounds = [r for r in report["rounds"] if r["status"] == "completed"]
    if not rounds:
        return {}
    indices = [r["round_index"] + 1 for r in rounds]
    accuracy_plot = plot_accuracy_and_epsilon(
        indices, [r["accuracy"] for r in rounds], [r["epsilon_spent"] for r in rounds],
        out_dir / f"run-{report['run_id']}-accuracy-epsilon.png",
        baseline_accuracy=baseline_accuracy, budget=config.client_budget if config.noise != "none" else None)
    upload_plot = plot_upload_bytes(indices, [r["upload_bytes_per_client"] for r in rounds],
                                    report["float32_update_bytes"], out_dir / f"run-{report['run_id']}-upload.png")
    return {"accuracy_epsilon": str(accuracy_plot), "upload": str(upload_plot)}


def render_summary(report: dict[str, Any]) -> str:
    """The final summary table."""
    def fmt(value, spec):
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    vector = report["masked_input_bytes_per_client_per_round"]
    ratio = report["float32_update_bytes"] / vector if vector else float("nan")
    rows = [
        ("run", str(report["run_id"])),
        ("rounds completed / aborted", f"{report['rounds_completed']} / {report['rounds_aborted']}"),
        ("final test accuracy (fedvault)", fmt(report["final_accuracy"], ".4f")),
        ("final test accuracy (float32 FedAvg)", fmt(report["baseline_accuracy"], ".4f")),
        ("ε spent (max over clients)", fmt(report["epsilon_spent_max"], ".3f")),
        ("model parameters", str(report["parameters"])),
        ("secure-sum width", f"{report['bits']} bits/coordinate ({report['lattice']} lattice)"),
        ("masked vector per client per round", f"{vector / 1024:.2f} KiB (float32 update: "
                                               f"{report['float32_update_bytes'] / 1024:.2f} KiB, {fmt(ratio, '.2f')}x smaller)"),
        ("upload per client per round, all stages", f"{report['upload_bytes_per_client_per_round'] / 1024:.1f} KiB "
                                                     "(keys and Shamir shares grow with the neighbours k)"),
        ("wall time", f"{report['seconds']:.1f} s"),
    ]
    for name, path in report.get("plots", {}).items():
        rows.append((f"plot ({name})", path))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
