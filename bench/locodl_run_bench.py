"""LoCoDL through the real run (`fedvault run --trainer locodl`) against LoCoDL in the clear.

Side by side in one run, on digits (Dirichlet(0.5) label skew) with L2-regularised multinomial
logistic regression (λ = ``--l2``, half in the f_i, half in g; d = 650):

- **peer**: :func:`federation.locodl.run_locodl` in float64 with no compression, no clipping, no
  secure aggregation and no dropouts (uploads counted as float32: 32 bits per coordinate);
- **fedvault**: real runs through the ``Coordinator`` (worker processes, SecAgg+ over serialized
  messages, SQLite commits), noise-free with a fine lattice, the same with 10% dropouts, and with
  distributed Skellam noise at ε = 8 (δ = 1e-5) per client.

The peer replays each fedvault run's own schedule: the number K of local iterations of every
round comes from that round's stored public seed, so both sides take exactly the same gradient
steps between communications. Reported per arm: F(y) − F* after each round (F* by Newton-CG to
1e-12), uplink bytes per client per round (the masked vector alone and all four SecAgg+ stages),
and seconds per round.

    python bench/locodl_run_bench.py            # 10 clients, 25 rounds per arm
    python bench/locodl_run_bench.py --quick    # 6 clients, 8 rounds

Writes bench/out/locodl_run_bench.json, bench/results/locodl_run.md and bench/results/locodl_run.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from federation.compressors import Identity  # noqa: E402
from federation.config import RunConfig  # noqa: E402
from federation.convex import SoftmaxRegression  # noqa: E402
from federation.coordinator import Coordinator  # noqa: E402
from federation.evaluation import data_for  # noqa: E402
from federation.locodl import run_locodl  # noqa: E402
from federation.locodl_run import SHARED_FRACTION, locodl_setup  # noqa: E402
from storage.repositories import Repository  # noqa: E402

ARMS = (
    ("fedvault, no noise, step 1e-4", dict(noise="none", step=1e-4, dropout_rate=0.0)),
    ("fedvault, no noise, step 1e-4, 10% dropouts", dict(noise="none", step=1e-4, dropout_rate=0.1)),
    ("fedvault, Skellam ε=8, clip 0.5, 10% dropouts", dict(noise="distributed", clip_norm=0.5, dropout_rate=0.1)),
)


def _fedvault_arm(config: RunConfig, objective: SoftmaxRegression, optimum: float, directory: Path) -> dict:
    gaps, seconds, upload, vector, statuses = [], [], [], [], []
    with Repository.open(str(directory / "run.db")) as repository:
        coordinator = Coordinator(config, repository, key_directory=directory / "keys")
        start = coordinator.model.flat().astype(np.float64)

        def on_round(summary) -> None:
            gaps.append(objective.objective(coordinator.locodl.model) - optimum)
            seconds.append(summary.seconds)
            statuses.append(summary.status)
            upload.append(summary.upload_bytes_per_client)
            vector.append(summary.masked_input_bytes_per_client)

        coordinator.run(on_round)
        seeds = [bytes.fromhex(r.parameters["round_seed"]) for r in repository.list_rounds(coordinator.run_id)]
        bits = coordinator.bits
    setup = locodl_setup(config)
    steps = [setup.steps(seed) for seed in seeds]
    completed = [i for i, s in enumerate(statuses) if s == "completed"]
    return {"gaps": gaps, "steps": steps, "start": start, "statuses": statuses, "bits": bits,
            "seconds_per_round": float(np.mean(seconds)),
            "upload_bytes_per_client": float(np.mean([upload[i] for i in completed])),
            "masked_vector_bytes_per_client": float(np.mean([vector[i] for i in completed]))}


def _peer(objective: SoftmaxRegression, optimum: float, config: RunConfig, steps: list[int],
          start: np.ndarray) -> list[float]:
    """Float64 LoCoDL without compression over the same K per round; F − F* after each round."""
    coins = np.zeros(sum(steps), dtype=bool)
    coins[np.cumsum(steps) - 1] = True
    trace, _ = run_locodl(objective, Identity(), locodl_setup(config).parameters, len(coins), coins=coins,
                          optimal_value=optimum, start=start, record_every=1)
    by_iteration = dict(zip(trace.iterations.tolist(), trace.suboptimality.tolist()))
    return [by_iteration[int(t)] for t in np.cumsum(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 clients, 8 rounds")
    parser.add_argument("--l2", type=float, default=0.3, help="λ of the L2 term")
    args = parser.parse_args()
    clients, rounds = (6, 8) if args.quick else (10, 25)
    base = RunConfig(trainer="locodl", clients=clients, rounds=rounds, split="dirichlet", dirichlet_alpha=0.5,
                     locodl_l2=args.l2, clip_norm=5.0, history=False, seed=0)
    data = data_for(base)
    objective = SoftmaxRegression(data.clients, data.num_classes, args.l2, SHARED_FRACTION)
    optimum = objective.objective(objective.solve())
    dimension = objective.dimension
    results = []
    for name, changes in ARMS:
        config = base.replace(**changes)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fedvault-locodl-bench-") as directory:
            arm = _fedvault_arm(config, objective, optimum, Path(directory))
        peer = _peer(objective, optimum, config, arm["steps"], arm["start"])
        results.append({
            "arm": name, "settings": changes, "bits_per_coordinate": arm["bits"],
            "rounds_completed": arm["statuses"].count("completed"), "rounds": rounds,
            "local_iterations": sum(arm["steps"]),
            "gap_per_round": arm["gaps"], "peer_gap_per_round": peer,
            "final_gap": arm["gaps"][-1], "peer_final_gap": peer[-1],
            "gap_ratio": arm["gaps"][-1] / peer[-1] if peer[-1] > 0 else float("inf"),
            "masked_vector_bytes_per_client": arm["masked_vector_bytes_per_client"],
            "upload_bytes_per_client": arm["upload_bytes_per_client"],
            "peer_bytes_per_client": 4 * dimension,
            "vector_bytes_ratio": 4 * dimension / arm["masked_vector_bytes_per_client"],
            "seconds_per_round": arm["seconds_per_round"], "wall_seconds": time.perf_counter() - started,
        })
    report = {"benchmark": "locodl_run", "quick": args.quick, "clients": clients, "rounds": rounds,
              "l2": args.l2, "dimension": dimension, "optimum": optimum,
              "smoothness": locodl_setup(base).parameters.gamma ** -1,
              "probability": locodl_setup(base).parameters.probability,
              "machine": {"python": platform.python_version(), "platform": platform.platform()},
              "results": results}
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "locodl_run_bench.json").write_text(json.dumps(report, indent=2))
    table = _table(report)
    print(table)
    if not args.quick:
        _write_results(report, table)


def _table(report: dict) -> str:
    lines = ["| arm | bits | rounds done | F − F* (fedvault) | F − F* (peer, clear) | ratio | "
             "vector B/client/round (peer float32) | all stages B/client/round | s/round |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['arm']} | {r['bits_per_coordinate']} | {r['rounds_completed']}/{r['rounds']} | "
                     f"{r['final_gap']:.2e} | {r['peer_final_gap']:.2e} | {r['gap_ratio']:.2f} | "
                     f"{r['masked_vector_bytes_per_client']:.0f} ({r['peer_bytes_per_client']}, "
                     f"{r['vector_bytes_ratio']:.2f}x) | {r['upload_bytes_per_client']:.0f} | "
                     f"{r['seconds_per_round']:.2f} |")
    return "\n".join(lines)


def _write_results(report: dict, table: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for index, r in enumerate(report["results"]):
        rounds = np.arange(1, len(r["gap_per_round"]) + 1)
        line, = axis.semilogy(rounds, np.maximum(r["gap_per_round"], 1e-16), label=r["arm"])
        axis.semilogy(rounds, np.maximum(r["peer_gap_per_round"], 1e-16), linestyle=":", color=line.get_color(),
                      label="peer (clear, float64), same K" if index == 0 else None)
    axis.set_xlabel("round")
    axis.set_ylabel("F(y) − F*")
    axis.set_title(f"LoCoDL in fedvault run: digits, {report['clients']} clients, λ = {report['l2']}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(results_dir / "locodl_run.png", dpi=120)
    plt.close(figure)
    (results_dir / "locodl_run.md").write_text(
        f"# LoCoDL through the real run\n\n`python bench/locodl_run_bench.py` — digits, {report['clients']} clients "
        f"(Dirichlet 0.5), λ = {report['l2']}, d = {report['dimension']}, {report['rounds']} rounds per arm, "
        f"p = {report['probability']:.3f} (K ≈ {1 / report['probability']:.1f} local iterations per round). "
        "The peer is float64 LoCoDL in the clear over the same K per round (each arm's stored round seeds).\n\n"
        f"{table}\n\n![F − F* per round](locodl_run.png)\n")


if __name__ == "__main__":
    main()
