"""LDP-FedP3 against the whole-model run: upload bytes per client per round, in one script.

Each setting runs twice through ``federation.runner.execute_run`` (what ``fedvault run``
executes: worker processes, real SecAgg+, real noise and ledger, a temporary SQLite file): once
with trainer ``sgd`` (one secure sum of the whole model per round) and once with trainer
``fedp3`` (one secure sum per layer group; each client sends its owned body groups and the head),
same data split, model, schedule, noise and seed. Bytes are the point: at 10 clients and ε = 8 the
noise dominates the update (``federation.config``), so accuracy stays near chance. Reported per run: uplink bytes per client per
round over all four SecAgg+ stages (the coordinator's count of every accepted reply: key
advertisements, encrypted Shamir shares, masked vectors, unmask shares), the masked vectors alone
per surviving client, the widest secure-sum bit width, final test accuracy and wall time (worker
start-up included).

    python bench/fedp3_run_bench.py           # 3 settings x 2 trainers (~3 minutes on 2 shared cores)
    python bench/fedp3_run_bench.py --quick   # the first setting only

Writes bench/out/fedp3_run_bench.json and bench/results/fedp3_run.md (--quick: bench/out only).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from federation.config import RunConfig
from federation.runner import execute_run

ROOT = Path(__file__).resolve().parent.parent
COMMON = dict(split="iid", clients=10, rounds=3, local_epochs=2, history=False, noise="distributed", target_epsilon=8.0,
              dropout_rate=0.1, workers=2, seed=0)
SETTINGS = [
    ("digits, mlp, LowerB", dict(dataset="digits", model="mlp", fedp3_policy="LowerB")),
    ("digits, cnn, OPU2", dict(dataset="digits", model="cnn", fedp3_policy="OPU2")),
    ("mnist5k, cnn, OPU2", dict(dataset="mnist5k", model="cnn", fedp3_policy="OPU2")),
]


def one_run(config: RunConfig) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = execute_run(config, db=str(Path(folder) / "bench.db"), out_dir=Path(folder), plots=False,
                             progress=False, echo=None)
        seconds = time.perf_counter() - started
    return {"trainer": config.trainer, "parameters": report["parameters"], "bits": report["bits"],
            "rounds_completed": report["rounds_completed"], "final_accuracy": report["final_accuracy"],
            "upload_bytes_per_client_per_round": report["upload_bytes_per_client_per_round"],
            "masked_input_bytes_per_client_per_round": report["masked_input_bytes_per_client_per_round"],
            "float32_update_bytes": report["float32_update_bytes"], "seconds": seconds,
            "abort_reasons": [r["abort_reason"] for r in report["rounds"] if r["status"] != "completed"]}


def render(results: list[dict]) -> str:
    lines = ["| setting | trainer | d | bits (max) | upload B/client/round | masked vectors B | × sgd upload | "
             "accuracy | rounds | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for setting in results:
        baseline = setting["runs"][0]["upload_bytes_per_client_per_round"]
        for run in setting["runs"]:
            lines.append(
                f"| {setting['name']} | {run['trainer']} | {run['parameters']:,} | {run['bits']} | "
                f"{run['upload_bytes_per_client_per_round']:,.0f} | {run['masked_input_bytes_per_client_per_round']:,.0f} | "
                f"{run['upload_bytes_per_client_per_round'] / baseline:.2f} | {run['final_accuracy']:.3f} | "
                f"{run['rounds_completed']} | {run['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the first setting")
    arguments = parser.parse_args()
    settings = SETTINGS[:1] if arguments.quick else SETTINGS
    results = []
    for name, changes in settings:
        runs = [one_run(RunConfig(**{**COMMON, **changes, "trainer": trainer})) for trainer in ("sgd", "fedp3")]
        results.append({"name": name, "settings": {**COMMON, **changes}, "runs": runs})
        print(render(results[-1:]).split("\n", 2)[-1], flush=True)
    table = render(results)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    name = "fedp3_run_bench_quick.json" if arguments.quick else "fedp3_run_bench.json"
    (out / name).write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=2))
    print(table)
    if not arguments.quick:
        (ROOT / "bench" / "results" / "fedp3_run.md").write_text(
            "# LDP-FedP3 runs against whole-model runs — `bench/fedp3_run_bench.py`\n\n"
            f"Common settings: {json.dumps(COMMON)}; each row pair shares data split, model, schedule "
            "and seed.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
