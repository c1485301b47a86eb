"""Unlearning benchmark: delete a client from real fedvault runs over a seeded scenario family and
compare with retraining, DP off and on.

The family (``bench/unlearning_scenarios.py``) spans datasets (digits, MNIST-5k, FedProx
Synthetic), models (logreg, MLP, CNN), 10–50 clients, IID to Dirichlet(0.1) label skew, and three
kinds of removed client: a pixel-pattern backdoor (drawn position, size, value, target), a label
flipper holding much of its source class, and an honest client holding most of one class; each
kind runs with several seeds. ``--seed`` and ``--scenarios`` fix the draw.

Each scenario runs the production paths (``bench/unlearning_measure.py``): the run trained by the
coordinator without and with sealed history records (the recording overhead, same process), the
project's oracle (``federation.retraining.CoordinatorTrainer.oracle``; twice with DP on), and
``fedvault unlearn`` itself. Reported per scenario and as median / worst over the family
(``bench/unlearning_report.py``): attack success gap to retraining, accuracy gap on the removed
client's dominant classes (above and below), test-accuracy gap, distance to the oracle relative to
the original's, class-matched membership-inference AUC, deletion vs retraining time, history bytes
vs fp32 and the recording overhead, with pass/fail against issue 11's targets (DP off) and, with
DP on, the two retrainings' spread beside each gap.

Writes the JSON (``--json``, default bench/out/unlearning_bench.json), a plot of the gaps per
scenario kind next to it (same name, .png), and prints the tables. ``--replot`` redraws the plot
and reprints the tables from an existing JSON without running anything. ``--quick``: two small
kinds, one seed each, four rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.unlearning_report import plot, scenario_table, summarize, summary_table  # noqa: E402
from bench.unlearning_scenarios import QUICK_FAMILY, ScenarioFamily, draw_scenarios  # noqa: E402

OUT = ROOT / "bench" / "out" / "unlearning_bench.json"


def _commit() -> dict:
    """The code measured: git commit and whether the tree had local changes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _report(rows: list[dict], args_text: dict, family: dict, started: float, path: Path) -> dict:
    report = {"arguments": args_text, "family": family, "code": _commit(), "rows": rows,
              "summary": summarize(rows), "seconds": time.time() - started,
              "machine": {"python": sys.version.split()[0], "platform": platform.platform()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
    return report


def _print(report: dict, plot_path: Path) -> None:
    print(scenario_table(report["rows"]))
    print(summary_table(report["summary"]))
    code = report.get("code", {})
    print(f"\nmeasured on {code.get('branch', '?')} at {code.get('commit', '?')[:12]}"
          f"{' (with local changes)' if code.get('dirty') else ''}; plot: {plot_path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small scenario kinds, one seed each, 4 rounds")
    parser.add_argument("--scenarios", type=int, default=None,
                        help="scenario kinds to draw (each runs with --seeds-per-kind seeds) [default: 6; quick: 2]")
    parser.add_argument("--seeds-per-kind", type=int, default=None,
                        help="seeds per scenario kind [default: 2; quick: 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenario draw")
    parser.add_argument("--dp", choices=["off", "on", "both"], default="both",
                        help="run each scenario without DP noise, with distributed Skellam noise, or both")
    parser.add_argument("--no-overhead", action="store_true",
                        help="skip the training run without history records (no recording overhead measured); "
                             "with --dp both it is measured on the DP-off runs only")
    parser.add_argument("--no-fallback-oracle", action="store_true",
                        help="when the project's oracle fails, record the failure only (default: also retrain "
                             "by the bench, labelled 'bench fallback' in the rows)")
    parser.add_argument("--workers", type=int, default=2, help="client worker processes per run")
    parser.add_argument("--json", type=Path, default=OUT, help="where to write the JSON (the plot goes next to it)")
    parser.add_argument("--replot", action="store_true",
                        help="redraw the plot and reprint the tables from --json; run nothing")
    args = parser.parse_args(argv)
    plot_path = args.json.with_suffix(".png")

    if args.replot:
        if not args.json.is_file():
            parser.error(f"--replot needs an existing JSON: {args.json} not found")
        report = json.loads(args.json.read_text())
        plot(report["rows"], plot_path)
        _print(report, plot_path)
        return 0

    base = QUICK_FAMILY if args.quick else ScenarioFamily()
    family = dataclasses.replace(base, workers=args.workers,
                                 seeds_per_kind=args.seeds_per_kind or base.seeds_per_kind)
    kinds = args.scenarios or (2 if args.quick else 6)
    if kinds < 1:
        parser.error("--scenarios must be at least 1")
    scenarios = draw_scenarios(family, kinds, args.seed)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.dp]
    import torch

    from bench.unlearning_measure import measure

    torch.set_num_threads(1)
    started = time.time()
    rows: list[dict] = []
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    for number, scenario in enumerate(scenarios, 1):
        for dp in modes:
            print(f"[{number}/{len(scenarios)}] {scenario.label} seed {scenario.seed} DP {'on' if dp else 'off'} "
                  f"(removing client {scenario.removed_client}) ...", flush=True)
            overhead = not args.no_overhead and not (dp and args.dp == "both")
            row = measure(scenario, family, dp=dp, overhead=overhead, fallback_oracle=not args.no_fallback_oracle)
            rows.append(row)
            for step, error in row["errors"].items():
                print(f"    {step} failed: {error}", flush=True)
            # Written after every scenario, so an interrupted family still leaves its results.
            report = _report(rows, arguments, family.describe(), started, args.json)
    plot(rows, plot_path)
    _print(report, plot_path)
    print(f"wrote {args.json} and {plot_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
