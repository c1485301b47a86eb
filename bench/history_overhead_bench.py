"""What recording sealed MEDU history records costs a training run: the same run with and without.

The unlearning bench's run (sklearn digits, ``--clients`` IID clients, client 0 planting the
backdoor, records at R = ``--bits`` bits per parameter, lattice Z, every survivor recording every
round, no DP noise, no dropouts, ``--workers`` worker processes) is trained twice per repeat in
this one process, with ``history = true`` and ``history = false``, same seed (client sampling,
data split, initial model; each round's public seed is fresh from the OS CSPRNG, so the two runs'
local batches differ), same sizes, alternating which goes first; for logistic regression (d = 650) and the MLP (d = 4,810). Every run
is the real system end to end: ``federation.Coordinator``, worker processes, SecAgg+ over
serialized messages, SQLite commits, and with history each client sealing its record, writing its
chain file and uploading the record, and the server storing it with the round.

Reported per model (median over ``--repeats``): the training wall time of the whole run
(``Coordinator.run``: worker start-up, enrolment and every round) with and without records, the
ratio (the overhead is ratio − 1), the same for the rounds alone (the sum of the per-round times,
which leaves out the start-up that dilutes the whole-run ratio), the history bytes stored, and
the chain-file writes per client per recorded round, read from each chain file's write sequence
number (the target: exactly one). The target of the issue: recording costs at most 20% extra
training wall time.

    python bench/history_overhead_bench.py             # logreg 30 rounds, MLP 10 rounds, 3 repeats
    python bench/history_overhead_bench.py --quick     # 5 rounds each, 1 repeat

Writes bench/out/history_overhead_bench.json (``--out``) and prints the table. To measure another
checkout side by side (say the code before this benchmark existed), run this file with that
checkout first on PYTHONPATH and ``--label``; chain-file writes are then reported only where the
checkout's ``unlearning.chain_file`` has ``ChainFile``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from federation.config import RunConfig
from federation.coordinator import Coordinator
from storage import Repository

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "history_overhead_bench.json"
MODELS = ("logreg", "mlp")
DEFAULT_ROUNDS = {"logreg": 30, "mlp": 10}  # the measurement: 13 → 30 s and 14 → 66 s


def _config(args, model: str, rounds: int, history: bool) -> RunConfig:
    """The unlearning bench's run (digits, IID, backdoor client 0, R = --bits, no noise)."""
    return RunConfig(dataset="digits", split="iid", clients=args.clients, rounds=rounds, model=model, noise="none",
                     dropout_rate=0.0, learning_rate=0.1, local_epochs=1, workers=args.workers, history=history,
                     history_bits_per_entry=args.bits, checkpoint_every=5, seed=args.seed,
                     extra={"backdoor_client": 0, "backdoor_target": 7, "backdoor_value": 8.0})


def _chain_writes(keys: Path, run_id: int, run_tag: str, repository: Repository, config: RunConfig,
                  dimension: int):
    """Chain-file writes per recorded round, over all clients (None where not measurable)."""
    try:
        from unlearning.chain_file import ChainFile, chain_path
    except ImportError:  # a checkout from before the two-slot chain file
        return None
    writes = recorded = 0
    for client in range(config.clients):
        writes += ChainFile(chain_path(keys / f"client-{client}.key", run_tag), dimension).sequence
        recorded += repository.count_sealed_records(run_id, client)  # no dropouts: uploaded = stored
    return writes / recorded if recorded else None


def _train(args, model: str, rounds: int, history: bool) -> dict:
    config = _config(args, model, rounds, history)
    with tempfile.TemporaryDirectory(prefix="fedvault-history-bench-") as directory:
        keys = Path(directory) / "keys"
        with Repository.open(str(Path(directory) / "run.db")) as repository:
            started = time.perf_counter()
            coordinator = Coordinator(config, repository, key_directory=keys)
            summary = coordinator.run()
            total = time.perf_counter() - started
            result = {
                "history": history, "total_seconds": total,
                "round_seconds": sum(r.seconds for r in summary.rounds),
                "completed_rounds": sum(r.status == "completed" for r in summary.rounds),
                "final_accuracy": summary.final_accuracy,
                "history_bytes": sum(r.record_size for c in range(config.clients)
                                     for r in repository.iter_sealed_records(summary.run_id, c)),
                "records": repository.count_sealed_records(summary.run_id),
                "dimension": summary.parameters,
            }
            if history:
                result["chain_writes_per_record"] = _chain_writes(keys, summary.run_id, coordinator.run_tag,
                                                                  repository, config, summary.parameters)
    return result


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds per model and 1 repeat (smoke run)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to train")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per run (default: logreg 30, MLP 10, as the issue measured)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per model and setting (default 3)")
    parser.add_argument("--clients", type=int, default=20, help="clients (the unlearning bench's 20)")
    parser.add_argument("--bits", type=float, default=0.5, help="R of the records, bits per parameter (0.5)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes hosting the clients")
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed (the same for both settings)")
    parser.add_argument("--label", default="this checkout", help="names the code measured in the JSON")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON output path")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(1)

    report = {"label": args.label, "machine": platform.platform(), "python": sys.version.split()[0],
              "clients": args.clients, "bits_per_entry": args.bits, "workers": args.workers, "repeats": repeats,
              "models": {}}
    for model in args.models:
        rounds = args.rounds or (5 if args.quick else DEFAULT_ROUNDS[model])
        runs = {True: [], False: []}
        for repeat in range(repeats):
            for history in ((False, True) if repeat % 2 == 0 else (True, False)):
                run = _train(args, model, rounds, history)
                runs[history].append(run)
                print(f"  {model} repeat {repeat + 1}/{repeats} history={'on ' if history else 'off'}: "
                      f"{run['total_seconds']:.1f} s ({run['round_seconds']:.1f} s in rounds)", flush=True)
        on, off = runs[True], runs[False]
        ratios = [a["total_seconds"] / b["total_seconds"] for a, b in zip(on, off)]
        round_ratios = [a["round_seconds"] / b["round_seconds"] for a, b in zip(on, off)]
        writes = [run["chain_writes_per_record"] for run in on if run.get("chain_writes_per_record") is not None]
        report["models"][model] = {
            "rounds": rounds, "dimension": on[0]["dimension"], "runs": on + off,
            "total_seconds_off": _median(off, "total_seconds"), "total_seconds_on": _median(on, "total_seconds"),
            "round_seconds_off": _median(off, "round_seconds"), "round_seconds_on": _median(on, "round_seconds"),
            "ratio_total": _median(on, "total_seconds") / _median(off, "total_seconds"),
            "ratio_rounds": _median(on, "round_seconds") / _median(off, "round_seconds"),
            "ratio_total_per_repeat_median": statistics.median(ratios),
            "ratio_rounds_per_repeat_median": statistics.median(round_ratios),
            "history_bytes": on[0]["history_bytes"], "records": on[0]["records"],
            "chain_writes_per_record": max(writes) if writes else None,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    print(f"\nHistory recording overhead ({args.label}): digits, {args.clients} clients, R = {args.bits:g} "
          f"bits/parameter, {args.workers} workers, median of {repeats}")
    print("| model (d) | rounds | training without records | with records | ratio (target ≤ 1.20) "
          "| rounds alone: without / with | ratio | history stored | chain writes per record |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, row in report["models"].items():
        writes = "n/a" if row["chain_writes_per_record"] is None else f"{row['chain_writes_per_record']:.2f}"
        print(f"| {model} ({row['dimension']:,}) | {row['rounds']} | {row['total_seconds_off']:.1f} s "
              f"| {row['total_seconds_on']:.1f} s | {row['ratio_total']:.2f}× | {row['round_seconds_off']:.1f} s / "
              f"{row['round_seconds_on']:.1f} s | {row['ratio_rounds']:.2f}× | {row['history_bytes']:,} B "
              f"| {writes} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
