"""Privacy benchmark: epsilon accounting at scale, exact sampler throughput, FedP3 upload bytes.

Run:  python bench/privacy_bench.py            (10,000 clients x 100 rounds; ~3 minutes)
      python bench/privacy_bench.py --quick    (1,000 clients x 20 rounds; a smoke run)
Writes bench/out/privacy_bench.json and prints markdown tables (copied to bench/results/privacy.md).

1. Accounting. Every client takes part in every round; round r charges each client a DP-SGD
   segment SelfComposed(PoissonSampled(q = 0.05, Gaussian(sigma_r)), 20 steps) with sigma_r
   varying by round (so a client's history has one distinct segment per round, as with adaptive
   noise or changing participation). fedvault's running RDP vector (``RunningRdp``) is timed for
   all clients x rounds: composition plus the final epsilon, and separately composition with the
   per-charge budget check (projected epsilon at every charge, what the ledger does). Opacus'
   PRVAccountant replays one client's full history per call; it is timed on a SUBSET of clients
   and EXTRAPOLATED linearly to all clients (each client's PRV is independent). The full
   ``BudgetLedger.charge`` path (JSON event + SHA-256 chain) is timed on a subset too.
2. Samplers. Exact discrete Gaussian and Skellam samples/s from the OS CSPRNG, against numpy's
   float Gaussian (``Generator.normal``) and Poisson difference (``Generator.poisson`` x 2), which
   are neither exact nor CSPRNG-driven (reference only). Wall-clock, best of 3, single thread.
3. FedP3 upload bytes per client vs the whole model, if ``privacy.fedp3`` provides
   ``fedp3_upload_bytes`` (H4b's module).
4. Empirical audit of real runs (``federation.canary_audit``, what ``fedvault audit-run`` does):
   the same run (mnist5k, logreg, 20 clients, IID split, 2 rounds, ε = 2, no dropout) plus
   200 canary clients, three times: calibrated (the baseline), with its noise sized for half the
   sensitivity, and for a tenth of it (the hidden ``noise_sensitivity_scale`` knob; the ledger
   claims ε = 2 in all three), each 3 times (a one-run bound from 200 canaries varies from run to
   run). Each row: the 95% lower bound ε_lb, the accounted ε, the flag, and the canaries' measured
   separation μ̂ ((mean IN score − mean OUT score) / std of OUT scores). Then, for the
   half-sensitivity runs, how many canaries the one-run bound would need to flag them: the audit
   replayed on ideal Gaussian scores with their mean μ̂ (Monte Carlo, median of 20 draws), for 200
   to 8,000 canaries. ``--audit-only`` runs just this section (~13 minutes on 2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from privacy.accounting import RunningRdp, rdp_of, recompute_epsilon
from privacy.discrete_gaussian import sample_discrete_gaussian
from privacy.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent
from privacy.ledger import BudgetLedger
from privacy.randomness import SystemRandomSource
from privacy.skellam import sample_skellam

OUT = Path(__file__).resolve().parent / "out" / "privacy_bench.json"
AUDIT_OUT = OUT.with_name("privacy_audit_bench.json")
DELTA = 1e-5
SAMPLE_RATE = 0.05
LOCAL_STEPS = 20


def round_event(round_index: int) -> SelfComposedEvent:
    """The DP-SGD segment every client is charged in ``round_index``."""
    sigma = 1.0 + 0.002 * round_index
    return SelfComposedEvent(PoissonSampledEvent(SAMPLE_RATE, GaussianEvent(sigma)), LOCAL_STEPS)


def bench_accounting(clients: int, rounds: int, prv_clients: int, ledger_clients: int) -> dict:
    events = [round_event(r) for r in range(rounds)]
    start = time.perf_counter()
    for event in events:  # the per-round RDP curves, computed once per distinct event
        rdp_of(event)
    curve_seconds = time.perf_counter() - start

    accountants = [RunningRdp() for _ in range(clients)]
    start = time.perf_counter()
    for event in events:
        for accountant in accountants:
            accountant.add(event)
    epsilons = np.array([accountant.epsilon(DELTA) for accountant in accountants])
    compose_seconds = time.perf_counter() - start

    accountants = [RunningRdp() for _ in range(clients)]
    start = time.perf_counter()
    for event in events:
        for accountant in accountants:
            accountant.projected_epsilon(event, DELTA)
            accountant.add(event)
    checked_seconds = time.perf_counter() - start

    ledger = BudgetLedger(budget_epsilon=1e9, delta=DELTA)
    start = time.perf_counter()
    for round_index, event in enumerate(events):
        for client in range(ledger_clients):
            ledger.charge(client, round_index, "dp-sgd", event)
    ledger_seconds = time.perf_counter() - start
    ledger_extrapolated = ledger_seconds * clients / ledger_clients

    history = list(events)
    prv_times, prv_epsilons = [], []
    for _ in range(prv_clients):
        start = time.perf_counter()
        prv_epsilons.append(recompute_epsilon(history, DELTA, "prv"))
        prv_times.append(time.perf_counter() - start)
    prv_per_client = float(np.mean(prv_times))
    prv_extrapolated = prv_per_client * clients
    rdp_epsilon = float(epsilons[0])
    return {
        "clients": clients,
        "rounds": rounds,
        "charges": clients * rounds,
        "event": "SelfComposed(PoissonSampled(q=0.05, Gaussian(sigma_r)), 20), sigma_r = 1 + 0.002 r",
        "rdp_curve_seconds_all_rounds": curve_seconds,
        "running_rdp_compose_and_final_epsilon_seconds": compose_seconds,
        "running_rdp_with_budget_check_per_charge_seconds": checked_seconds,
        "ledger_charge_seconds_measured": ledger_seconds,
        "ledger_clients_measured": ledger_clients,
        "ledger_charge_seconds_extrapolated": ledger_extrapolated,
        "ledger_charge_microseconds_each": 1e6 * ledger_seconds / (ledger_clients * rounds),
        "prv_clients_measured": prv_clients,
        "prv_seconds_per_client": prv_per_client,
        "prv_seconds_extrapolated_to_all_clients": prv_extrapolated,
        "prv_over_running_rdp_with_budget_check": prv_extrapolated / checked_seconds,
        "epsilon_rdp_per_client": rdp_epsilon,
        "epsilon_prv_per_client": float(prv_epsilons[0]) if prv_epsilons else None,
        "all_clients_same_epsilon": bool(np.all(epsilons == rdp_epsilon)),
    }


def _best_rate(function, size: int, repeats: int = 3) -> float:
    function(min(size, 1000))  # warm up (numba cache load, first refill)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function(size)
        best = min(best, time.perf_counter() - start)
    return size / best


def bench_samplers(size: int) -> list[dict]:
    source = SystemRandomSource()
    rng = np.random.default_rng(0)
    rows = []
    for sigma in (3.0, 100.0, 3000.0):
        exact = _best_rate(lambda n: sample_discrete_gaussian(sigma, n, source), size)
        reference = _best_rate(lambda n: rng.normal(0.0, sigma, n), size)
        rows.append({"sampler": "discrete Gaussian (exact, CSPRNG)", "scale": f"sigma={sigma:g}",
                     "samples_per_second": exact, "reference": "numpy normal (float)",
                     "reference_samples_per_second": reference, "reference_over_exact": reference / exact})
    for mu in (10.0, 1e4, 1e6):
        exact = _best_rate(lambda n: sample_skellam(mu, n, source), size)
        reference = _best_rate(lambda n: rng.poisson(mu / 2, n) - rng.poisson(mu / 2, n), size)
        rows.append({"sampler": "Skellam (exact, CSPRNG)", "scale": f"mu={mu:g}",
                     "samples_per_second": exact, "reference": "numpy poisson - poisson",
                     "reference_samples_per_second": reference, "reference_over_exact": reference / exact})
    return rows


def bench_fedp3() -> dict:
    try:
        from privacy.fedp3 import fedp3_upload_bytes
    except ImportError as error:
        message = f"privacy.fedp3.fedp3_upload_bytes unavailable ({error}); FedP3 bytes skipped"
        print(message, file=sys.stderr)
        return {"skipped": message}
    from torch import nn

    # An MLP on 28x28 inputs with four body layer groups (OPU3 needs at least three): 784-256-256-256-128-10.
    widths = (784, 256, 256, 256, 128, 10)
    layers = []
    for inputs, outputs in zip(widths, widths[1:]):
        layers += [nn.Linear(inputs, outputs), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    rows = []
    for policy in ("LowerB", "OPU2", "OPU3"):
        report = fedp3_upload_bytes(model, policy, clients=10, bits_per_coordinate=16)
        rows.append({key: report[key] for key in (
            "policy", "clients", "bits_per_coordinate", "full_model_bytes", "mean_bytes_per_client",
            "upload_fraction", "saving_fraction", "rotated_full_model_bytes", "rotated_mean_bytes_per_client",
        ) if key in report})
    return {"model": "MLP 784-256-256-256-128-10", "policies": rows}


# 7,850 parameters: the honest clients' own updates spread thin over the canaries' coordinates
AUDIT_DATASET = "mnist5k"
AUDIT_SCALES = (1.0, 0.5, 0.1)  # fraction of the true sensitivity the noise is sized for
IDEAL_CANARIES = (200, 1_000, 4_000, 8_000)


def bench_empirical_audit(canaries: int, rounds: int, repeats: int) -> dict:
    import tempfile

    from federation.canary_audit import audit_run, guess_counts
    from federation.config import RunConfig
    from privacy.audit import canary_audit_over_guesses
    from storage.repositories import Repository

    rows = []
    with tempfile.TemporaryDirectory(prefix="privacy-bench-audit-") as scratch:
        for scale in AUDIT_SCALES:
            extra = {} if scale == 1.0 else {"noise_sensitivity_scale": scale}
            config = RunConfig(dataset=AUDIT_DATASET, model="logreg", split="iid", clients=20, rounds=rounds,
                               target_epsilon=2.0, dropout_rate=0.0, history=False, extra=extra)
            for repeat in range(repeats):
                start = time.perf_counter()
                label = f"{scale}-{repeat}"
                with Repository.open(str(Path(scratch) / f"audit-{label}.db")) as repository:
                    report = audit_run(config, canaries, repository, key_directory=Path(scratch) / f"keys-{label}")
                row = report.as_json()
                row.pop("config")
                row.update(noise_sensitivity_scale=scale, repeat=repeat, seconds=time.perf_counter() - start)
                rows.append(row)
                print(f"audit scale={scale} #{repeat}: eps_lb={row['epsilon_lower_bound']:.3f} accounted="
                      f"{row['accounted_epsilon']:.3f} flagged={row['flagged']} separation={row['separation']:.2f} "
                      f"({row['seconds']:.0f} s)", flush=True)
    summary = []
    for scale in AUDIT_SCALES:
        runs = [row for row in rows if row["noise_sensitivity_scale"] == scale]
        summary.append({"noise_sensitivity_scale": scale, "runs": len(runs),
                        "median_epsilon_lower_bound": float(np.median([r["epsilon_lower_bound"] for r in runs])),
                        "flagged_runs": sum(r["flagged"] for r in runs),
                        "mean_separation": float(np.mean([r["separation"] for r in runs])),
                        "accounted_epsilon": max(r["accounted_epsilon"] for r in runs)})
    baseline = summary[0]["median_epsilon_lower_bound"]
    for entry in summary:
        entry["median_over_calibrated"] = entry["median_epsilon_lower_bound"] / baseline if baseline > 0 else None
    half = next(entry for entry in summary if entry["noise_sensitivity_scale"] == 0.5)
    rng = np.random.default_rng(2023)
    ideal = []
    for m in IDEAL_CANARIES:
        bounds = []
        for _ in range(20):
            included = rng.random(m) < 0.5
            scores = rng.normal(size=m) + half["mean_separation"] * included
            bounds.append(canary_audit_over_guesses(scores, included, guess_counts(m), DELTA, 0.05).epsilon_lower_bound)
        ideal.append({"canaries": m, "median_epsilon_lower_bound": float(np.median(bounds)),
                      "flagged_fraction": float(np.mean(np.array(bounds) > half["accounted_epsilon"]))})
    return {"clients": 20, "canaries": canaries, "rounds": rounds, "dataset": AUDIT_DATASET, "model": "logreg",
            "split": "iid", "target_epsilon": 2.0, "delta": DELTA, "confidence": 0.95, "runs": rows,
            "summary": summary, "ideal_half_sensitivity": {"separation": half["mean_separation"], "by_canaries": ideal}}


def audit_markdown(audit: dict) -> list[str]:
    lines = [
        f"### Empirical audit of real runs ({audit['clients']} clients + {audit['canaries']} canaries, "
        f"{audit['dataset']} {audit['model']}, {audit['split']} split, {audit['rounds']} rounds, claimed ε = "
        f"{audit['target_epsilon']:g}, δ = {audit['delta']:g})",
        "",
        "| noise sized for | run | ε_lb (95%) | accounted ε | ε_lb / accounted | flagged | guesses | correct | "
        "separation μ̂ | accuracy | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in audit["runs"]:
        lines.append(
            f"| {row['noise_sensitivity_scale']:g} × sensitivity | {row['repeat'] + 1} | "
            f"{row['epsilon_lower_bound']:.3f} | {row['accounted_epsilon']:.3f} | "
            f"{row['epsilon_lower_bound'] / row['accounted_epsilon']:.2f} | {'**FLAG**' if row['flagged'] else 'no'} | "
            f"{row['guesses']} | {row['correct']} | {row['separation']:.2f} | {row['final_accuracy']:.3f} | "
            f"{row['seconds']:.0f} |")
    lines += ["", "| noise sized for | runs | median ε_lb | median / calibrated's | flagged runs | mean μ̂ |",
              "|---|---|---|---|---|---|"]
    for entry in audit["summary"]:
        ratio = entry["median_over_calibrated"]
        lines.append(f"| {entry['noise_sensitivity_scale']:g} × sensitivity | {entry['runs']} | "
                     f"{entry['median_epsilon_lower_bound']:.3f} | {'n/a' if ratio is None else f'{ratio:.1f}'} | "
                     f"{entry['flagged_runs']}/{entry['runs']} | {entry['mean_separation']:.2f} |")
    ideal = audit["ideal_half_sensitivity"]
    lines += ["", f"One-run bound on ideal Gaussian scores at the half-sensitivity runs' mean μ̂ = "
              f"{ideal['separation']:.2f} (20 draws each):", "",
              "| canaries | median ε_lb | share of draws flagged |", "|---|---|---|"]
    for row in ideal["by_canaries"]:
        lines.append(f"| {row['canaries']:,} | {row['median_epsilon_lower_bound']:.2f} | "
                     f"{row['flagged_fraction']:.2f} |")
    return lines


def markdown(results: dict) -> str:
    if "accounting" not in results:
        return "\n".join(audit_markdown(results["empirical_audit"]))
    acc = results["accounting"]
    lines = [
        f"### Accounting: {acc['clients']:,} clients x {acc['rounds']} rounds ({acc['charges']:,} charges)",
        "",
        "| accountant | seconds | note |",
        "|---|---|---|",
        f"| running RDP vector: compose + final eps | {acc['running_rdp_compose_and_final_epsilon_seconds']:.2f} | all clients, measured |",
        f"| running RDP vector: + budget check per charge | {acc['running_rdp_with_budget_check_per_charge_seconds']:.2f} | all clients, measured |",
        f"| BudgetLedger.charge (JSON + SHA-256 chain) | {acc['ledger_charge_seconds_extrapolated']:.1f} | measured on {acc['ledger_clients_measured']:,} clients, extrapolated ({acc['ledger_charge_microseconds_each']:.1f} us/charge) |",
        f"| Opacus PRV, one history per client | {acc['prv_seconds_extrapolated_to_all_clients']:,.0f} | {acc['prv_seconds_per_client']:.2f} s/client on {acc['prv_clients_measured']} clients, extrapolated |",
        "",
        f"PRV / running RDP (with budget checks): **{acc['prv_over_running_rdp_with_budget_check']:,.0f}x**. "
        f"Per-client epsilon at delta=1e-5: RDP {acc['epsilon_rdp_per_client']:.4f}, PRV {acc['epsilon_prv_per_client']:.4f}.",
        "",
        "### Sampler throughput (samples/s, one thread)",
        "",
        "| sampler | scale | exact samples/s | numpy reference | reference samples/s | reference / exact |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["samplers"]:
        lines.append(
            f"| {row['sampler']} | {row['scale']} | {row['samples_per_second']:.3g} | {row['reference']} | "
            f"{row['reference_samples_per_second']:.3g} | {row['reference_over_exact']:.1f} |"
        )
    fedp3 = results["fedp3"]
    lines += ["", "### FedP3 upload bytes per client (10 clients, 16 bits/coordinate)", ""]
    if "skipped" in fedp3:
        lines.append(fedp3["skipped"])
    else:
        lines += [f"Model: {fedp3['model']}.", "", "| policy | full model B | mean per client B | upload fraction | saving |",
                  "|---|---|---|---|---|"]
        for row in fedp3["policies"]:
            lines.append(f"| {row['policy']} | {row['full_model_bytes']:,} | {row['mean_bytes_per_client']:,.0f} | "
                         f"{row['upload_fraction']:.3f} | {row['saving_fraction']:.3f} |")
    if "empirical_audit" in results:
        lines += [""] + audit_markdown(results["empirical_audit"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 clients x 20 rounds, smaller sampler runs")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON output path (default {OUT.name}, or {AUDIT_OUT.name} with --audit-only, in bench/out)")
    parser.add_argument("--audit-only", action="store_true", help="only the empirical audit of real runs (section 4)")
    parser.add_argument("--no-audit", action="store_true", help="skip the empirical audit of real runs (section 4)")
    args = parser.parse_args(argv)
    args.out = args.out or (AUDIT_OUT if args.audit_only else OUT)
    machine = {"python": platform.python_version(), "processor": platform.processor() or platform.machine()}
    audit_size = {"canaries": 60, "rounds": 1, "repeats": 1} if args.quick else \
        {"canaries": 200, "rounds": 2, "repeats": 3}
    if args.audit_only:
        results = {"machine": machine, "quick": args.quick, "empirical_audit": bench_empirical_audit(**audit_size)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(markdown(results))
        print(f"\nwrote {args.out}")
        return 0
    if args.quick:
        accounting = bench_accounting(clients=1_000, rounds=20, prv_clients=2, ledger_clients=200)
        sampler_size = 200_000
    else:
        accounting = bench_accounting(clients=10_000, rounds=100, prv_clients=2, ledger_clients=1_000)
        sampler_size = 1_000_000
    results = {
        "machine": machine,
        "quick": args.quick,
        "accounting": accounting,
        "samplers": bench_samplers(sampler_size),
        "fedp3": bench_fedp3(),
    }
    if not args.no_audit:
        results["empirical_audit"] = bench_empirical_audit(**audit_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
