"""LoCoDL against DIANA and local-training baselines: suboptimality f(x) − f* against uplink bits.

Problem (docs/ALGORITHMS.md §5.1, §7): FedProx Synthetic(1, 1) with 100 clients, 60 features and 10
classes (lognormal sample sizes, client-specific models and feature means), standardized; L2-
regularized multinomial logistic regression, d = 10·61 = 610 parameters. For LoCoDL the L2 weight
λ is split evenly between the clients' f_i and the server's g; the baselines minimize the same
F = (1/n)Σ(f_i + g). λ is set so that κ = L/μ of LoCoDL's f_i is ``--kappa`` (L: largest
client smoothness constant). x* is solved by Newton-CG to ‖∇F‖ <= 1e-12.

Methods, each with its theory parameters (no tuning), side by side in one run:

- LoCoDL + E8 lattice (common scale, own dither, through ``secagg.codec``: SecAgg-summable),
  without and with the randomized Hadamard rotation (which pads 610 to 1024 coordinates);
- LoCoDL + shared-seed rand-k (SecAgg-summable; ω_av = ω);
- DIANA + independent rand-k (indices sent; not SecAgg-summable) and DIANA + the E8 lattice;
- Scaffnew (ProxSkip) with full-precision uploads, p = 1/√κ;
- FedAvg-style local GD (K = ⌈√κ⌉ local steps per round, full-precision uploads).

Bits are per client, cumulative, uplink only: 32 per real number, b per lattice coordinate
(b from ``secagg.codec.plan_bits`` at overflow probability 1e-6) plus 32 for the common scale.

    python bench/locodl_bench.py            # full size (100 clients; a few minutes on 2 shared cores)
    python bench/locodl_bench.py --quick    # 30 clients, smaller κ (well under a minute)

Writes bench/out/locodl_bench.json, bench/results/locodl.md and bench/results/locodl.png.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from federation.baselines import run_diana, run_local_gd, run_scaffnew
from federation.compressors import Compressor, LatticeCompressor, RandK
from federation.convex import SoftmaxRegression, softmax_regression
from federation.datasets import make_fedprox_synthetic
from federation.locodl import locodl_parameters, run_locodl
from federation.traces import Trace

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1e-6
EXACT = 1e-10
STOP = 1e-11


@dataclass(frozen=True)
class Outcome:
    name: str
    family: str
    secagg_summable: bool
    bits_per_upload: float
    omega: float | None
    omega_average: float | None
    probability: float | None
    trace: Trace
    seconds: float

    def summary(self) -> dict:
        trace = self.trace
        return {
            "method": self.name,
            "family": self.family,
            "secagg_summable": self.secagg_summable,
            "bits_per_upload": self.bits_per_upload,
            "omega": self.omega,
            "omega_average": self.omega_average,
            "communication_probability": self.probability,
            "iterations": int(trace.iterations[-1]),
            "communications": int(trace.communications[-1]),
            "final_suboptimality": trace.final_suboptimality,
            "min_suboptimality": float(np.nanmin(trace.suboptimality)),
            "reached_exact_1e-10": bool(np.nanmin(trace.suboptimality) <= EXACT),
            "bits_to_1e-6": trace.bits_to_reach(TARGET),
            "communications_to_1e-6": _communications_to(trace, TARGET),
            "iterations_to_1e-6": trace.iterations_to_reach(TARGET),
            "bits_to_1e-10": trace.bits_to_reach(EXACT),
            "wall_seconds": self.seconds,
        }


def _communications_to(trace: Trace, threshold: float) -> int | None:
    reached = np.flatnonzero(trace.suboptimality <= threshold)
    return int(trace.communications[reached[0]]) if reached.size else None


def build_problem(clients: int, kappa: float, seed: int) -> tuple[SoftmaxRegression, dict]:
    data = make_fedprox_synthetic(1.0, 1.0, num_clients=clients, dimension=60, num_classes=10, seed=seed)
    # With s = 1/2, f_i = data_i + (λ/4)‖x‖² is μ = λ/2 strongly convex and L_data + λ/2 smooth:
    # κ = 2·L_data/λ + 1, so λ = 2·L_data/(κ − 1).
    probe = softmax_regression(data.clients, 10, l2=1.0, shared_fraction=0.5)
    data_smoothness = float(probe.client_smoothness.max()) - probe.client_l2
    l2 = 2.0 * data_smoothness / (kappa - 1.0)
    problem = softmax_regression(data.clients, 10, l2=l2, shared_fraction=0.5)
    sizes = [c.num_samples for c in data.clients]
    info = {
        "dataset": "FedProx Synthetic(1,1), standardized",
        "clients": clients,
        "features": 60,
        "classes": 10,
        "dimension": problem.dimension,
        "samples": int(sum(sizes)),
        "samples_per_client_min_median_max": [int(min(sizes)), int(np.median(sizes)), int(max(sizes))],
        "l2": l2,
        "shared_fraction": 0.5,
        "smoothness_L": problem.smoothness,
        "strong_convexity_mu": problem.strong_convexity,
        "kappa": problem.smoothness / problem.strong_convexity,
        # The baselines see φ_i = f_i + g: smoothness max L_i + λ/2, strong convexity λ.
        "baseline_smoothness": float(problem.client_smoothness.max() + problem.shared_l2),
        "baseline_kappa": float(problem.client_smoothness.max() + problem.shared_l2) / l2,
        "seed": seed,
    }
    return problem, info


def run_all(problem: SoftmaxRegression, max_iterations: int, seed: int, log) -> list[Outcome]:
    n, d = problem.num_clients, problem.dimension
    t0 = time.perf_counter()
    optimum = problem.solve(tolerance=1e-12)
    optimal_value = problem.objective(optimum)
    log(f"x* solved (‖∇F(x*)‖ = {np.linalg.norm(problem.gradient(optimum)):.1e}) in {time.perf_counter() - t0:.1f} s")
    common = dict(optimum=optimum, optimal_value=optimal_value, stop_below=STOP)
    smoothness, mu = problem.smoothness, problem.strong_convexity
    # The baselines see φ_i = f_i + g: smoothness max L_i + λs, strong convexity λ.
    phi_smoothness = float(problem.client_smoothness.max() + problem.shared_l2)
    phi_kappa = phi_smoothness / problem.l2
    k = max(1, d // 10)
    outcomes: list[Outcome] = []

    def timed(fn):
        start = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - start

    locodl_compressors: list[tuple[str, Compressor, bool]] = [
        ("LoCoDL + E8 lattice", LatticeCompressor("E8", resolution=2.0, rotate=False), True),
        ("LoCoDL + E8 lattice (rotated)", LatticeCompressor("E8", resolution=2.0, rotate=True), True),
        (f"LoCoDL + shared rand-{k}", RandK(k, shared=True), True),
    ]
    for name, compressor, summable in locodl_compressors:
        omega, omega_average = compressor.omega(d), compressor.omega_average(d, n)
        parameters = locodl_parameters(smoothness, mu, omega, omega_average)
        (trace, _), seconds = timed(lambda: run_locodl(
            problem, compressor, parameters, max_iterations, seed=seed, record_every=10**9, name=name, **common
        ))
        outcomes.append(Outcome(name, "LoCoDL", summable, compressor.uplink_bits(d, n), omega, omega_average,
                                parameters.probability, trace, seconds))
        log(f"  {name}: {trace.iterations[-1]} iterations, {trace.communications[-1]} uploads, {seconds:.1f} s")

    diana_compressors: list[tuple[str, Compressor, bool]] = [
        (f"DIANA + rand-{k} (independent)", RandK(k, shared=False), False),
        ("DIANA + E8 lattice", LatticeCompressor("E8", resolution=2.0, rotate=False), True),
    ]
    for name, compressor, summable in diana_compressors:
        trace, seconds = timed(lambda: run_diana(problem, compressor, phi_smoothness, max_iterations, seed=seed,
                                                  name=name, **common))
        outcomes.append(Outcome(name, "DIANA", summable, compressor.uplink_bits(d, n), compressor.omega(d),
                                compressor.omega_average(d, n), 1.0, trace, seconds))
        log(f"  {name}: {trace.iterations[-1]} iterations, {seconds:.1f} s")

    probability = 1.0 / math.sqrt(phi_kappa)
    trace, seconds = timed(lambda: run_scaffnew(problem, 1.0 / phi_smoothness, probability, max_iterations,
                                                 seed=seed, record_every=10**9, name="Scaffnew (float32)", **common))
    outcomes.append(Outcome("Scaffnew (float32)", "local training", True, 32.0 * d, 0.0, 0.0, probability, trace, seconds))
    log(f"  Scaffnew: {trace.iterations[-1]} iterations, {trace.communications[-1]} uploads, {seconds:.1f} s")

    local_steps = math.ceil(math.sqrt(phi_kappa))
    rounds = max(1, max_iterations // (4 * local_steps))
    name = f"FedAvg local GD (K={local_steps}, float32)"
    trace, seconds = timed(lambda: run_local_gd(problem, 1.0 / phi_smoothness, local_steps, rounds, name=name, **common))
    outcomes.append(Outcome(name, "local training", True, 32.0 * d, None, None, 1.0 / local_steps, trace, seconds))
    log(f"  FedAvg: {trace.communications[-1]} rounds, {seconds:.1f} s")
    return outcomes


def _format_bits(bits: float | None) -> str:
    return "not reached" if bits is None else f"{bits / 1e6:.3f} Mbit"


def table(outcomes: list[Outcome], best: Outcome) -> list[str]:
    reference = best.summary()["bits_to_1e-6"]
    header = ("| method | SecAgg-summable | bits/upload | ω | p | uploads to 1e-6 | bits to 1e-6 | "
              "× best LoCoDL | min f − f* | iterations | time |")
    lines = [header, "|" + "---|" * 11]
    for outcome in outcomes:
        s = outcome.summary()
        bits = s["bits_to_1e-6"]
        ratio = "—" if bits is None else f"{bits / reference:.2f}"
        omega = "—" if s["omega"] is None else f"{s['omega']:.3g}"
        probability = "—" if s["communication_probability"] is None else f"{s['communication_probability']:.3f}"
        uploads = "—" if s["communications_to_1e-6"] is None else str(s["communications_to_1e-6"])
        lines.append(
            f"| {s['method']} | {'yes' if s['secagg_summable'] else 'no'} | {s['bits_per_upload']:.0f} | {omega} | "
            f"{probability} | {uploads} | {_format_bits(bits)} | {ratio} | {s['min_suboptimality']:.1e} | "
            f"{s['iterations']} | {s['wall_seconds']:.0f} s |"
        )
    return lines


def plot(outcomes: list[Outcome], path: Path, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_bits, by_uploads) = plt.subplots(1, 2, figsize=(13, 5))
    for outcome in outcomes:
        trace = outcome.trace
        gap = np.maximum(trace.suboptimality, 1e-16)
        style = "-" if outcome.family == "LoCoDL" else ("--" if outcome.family == "DIANA" else ":")
        by_bits.semilogy(trace.uplink_bits / 1e6, gap, style, label=outcome.name, linewidth=1.6)
        by_uploads.semilogy(trace.communications, gap, style, label=outcome.name, linewidth=1.6)
    for axis, label in ((by_bits, "uplink bits per client (Mbit)"), (by_uploads, "uploads (communication rounds)")):
        axis.axhline(TARGET, color="grey", linewidth=0.8)
        axis.axhline(EXACT, color="grey", linewidth=0.8, linestyle="--")
        axis.set_xlabel(label)
        axis.set_ylabel("f(x) − f*")
        axis.set_ylim(1e-13, 10)
        axis.grid(True, which="major", alpha=0.3)
    best_bits = max(o.summary()["bits_to_1e-6"] or 0 for o in outcomes if o.family == "LoCoDL")
    by_bits.set_xlim(0, 4 * best_bits / 1e6)
    most_uploads = max(o.summary()["communications_to_1e-6"] or 0 for o in outcomes)
    by_uploads.set_xlim(0, 2.2 * most_uploads)
    by_bits.legend(fontsize=8, loc="upper right")
    figure.suptitle(f"FedProx Synthetic(1,1), {info['clients']} clients, d = {info['dimension']}, "
                    f"L2 logistic regression, κ = {info['kappa']:.0f}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 clients and κ = 40: a fast smoke run")
    parser.add_argument("--clients", type=int, default=None, help="number of clients (default 100; 30 with --quick)")
    parser.add_argument("--kappa", type=float, default=None, help="condition number L/μ of LoCoDL's f_i (default 100; 40 with --quick)")
    parser.add_argument("--max-iterations", type=int, default=6000, help="iteration cap per method")
    parser.add_argument("--seed", type=int, default=0, help="data and algorithm seed")
    parser.add_argument("--json", type=Path, default=None,
                        help="JSON output (default bench/out/locodl_bench.json; _quick with --quick)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="table + notes (default bench/results/locodl.md; bench/out/ with --quick)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG plot (default bench/results/locodl.png; bench/out/ with --quick)")
    args = parser.parse_args(argv)
    # A quick run never overwrites the recorded full-size results.
    out, results = ROOT / "bench" / "out", ROOT / "bench" / "results"
    args.json = args.json or (out / ("locodl_bench_quick.json" if args.quick else "locodl_bench.json"))
    args.markdown = args.markdown or (out / "locodl_quick.md" if args.quick else results / "locodl.md")
    args.plot = args.plot or (out / "locodl_quick.png" if args.quick else results / "locodl.png")
    clients = args.clients or (30 if args.quick else 100)
    kappa = args.kappa or (40.0 if args.quick else 100.0)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # small products: one thread beats two
        problem, info = build_problem(clients, kappa, args.seed)
        log(f"problem: {clients} clients, d = {problem.dimension}, {info['samples']} samples, "
            f"λ = {info['l2']:.4g}, κ = {info['kappa']:.1f}")
        outcomes = run_all(problem, args.max_iterations, args.seed, log)
    elapsed = time.perf_counter() - started

    locodl = [o for o in outcomes if o.family == "LoCoDL" and o.summary()["bits_to_1e-6"] is not None]
    best = min(locodl, key=lambda o: o.summary()["bits_to_1e-6"])
    others = [o for o in outcomes if o.family != "LoCoDL"]
    best_other_bits = min((o.summary()["bits_to_1e-6"] for o in others if o.summary()["bits_to_1e-6"] is not None),
                          default=None)
    verdict = {
        "best_locodl": best.name,
        "best_locodl_bits_to_1e-6": best.summary()["bits_to_1e-6"],
        "best_other": min((o for o in others if o.summary()["bits_to_1e-6"] is not None),
                          key=lambda o: o.summary()["bits_to_1e-6"]).name if best_other_bits else None,
        "best_other_bits_to_1e-6": best_other_bits,
        "ratio_best_other_over_best_locodl": None if best_other_bits is None else best_other_bits / best.summary()["bits_to_1e-6"],
        "every_locodl_reached_1e-10": all(o.summary()["reached_exact_1e-10"] for o in outcomes if o.family == "LoCoDL"),
        "best_locodl_needs_fewest_bits": best_other_bits is None or best.summary()["bits_to_1e-6"] < best_other_bits,
    }
    lines = table(outcomes, best)
    print("\n".join(lines))
    print(f"\nbest LoCoDL: {best.name}; best other: {verdict['best_other']}; "
          f"ratio {verdict['ratio_best_other_over_best_locodl']:.2f}x; total {elapsed:.0f} s")

    command = "python bench/locodl_bench.py" + (" --quick" if args.quick else "")
    record = {
        "benchmark": "locodl_bench",
        "command": command,
        "problem": info,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "numpy": np.__version__, "blas_threads": 1},
        "thresholds": {"target": TARGET, "exact": EXACT, "stop": STOP},
        "verdict": verdict,
        "methods": [o.summary() for o in outcomes],
        "traces": [_downsample(o.trace.to_json()) for o in outcomes],
        "total_seconds": elapsed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    plot(outcomes, args.plot, info)
    write_markdown(args.markdown, args.plot, command, info, lines, verdict, elapsed, outcomes)
    log(f"wrote {args.json}, {args.markdown}, {args.plot}")
    return 0


def _downsample(trace: dict, points: int = 400) -> dict:
    length = len(trace["iterations"])
    if length <= points:
        return trace
    keep = sorted(set(np.linspace(0, length - 1, points).astype(int).tolist()))
    return {key: ([value[i] for i in keep] if isinstance(value, list) else value) for key, value in trace.items()}


def write_markdown(path: Path, plot_path: Path, command: str, info: dict, lines: list[str], verdict: dict,
                   elapsed: float, outcomes: list[Outcome]) -> None:
    ratio = verdict["ratio_best_other_over_best_locodl"]
    lattice = LatticeCompressor("E8", resolution=2.0, rotate=False)
    lattice_bits = lattice.bits_per_coordinate(info["dimension"], info["clients"])
    by_name = {o.name: o.summary() for o in outcomes}
    scaffnew_uploads = by_name["Scaffnew (float32)"]["communications_to_1e-6"]
    lattice_uploads = by_name["LoCoDL + E8 lattice"]["communications_to_1e-6"]
    text = f"""# LoCoDL: suboptimality against uplink bits

Command: `{command}` (one process, one BLAS thread; total {elapsed:.0f} s on this machine).
JSON: `bench/out/locodl_bench.json`. Plot: `{plot_path.relative_to(ROOT) if plot_path.is_relative_to(ROOT) else plot_path}`.

Problem: {info['dataset']}, {info['clients']} clients, {info['features']} features, {info['classes']}
classes, d = {info['dimension']}, {info['samples']} samples (per client min/median/max
{info['samples_per_client_min_median_max']}); L2-regularized logistic regression with
λ = {info['l2']:.4g} split evenly between the f_i and g; L = {info['smoothness_L']:.2f},
μ = {info['strong_convexity_mu']:.4g}, κ = {info['kappa']:.1f} for LoCoDL's f_i. The baselines minimize the
same F as the mean of φ_i = f_i + g (L_φ = {info['baseline_smoothness']:.2f}, κ_φ = L_φ/λ =
{info['baseline_kappa']:.1f}). f* from Newton-CG at ‖∇F‖ <= 1e-12. All methods use their theory
parameters, no tuning (LoCoDL: γ = 1/L, χ = ρ = 1/(1 + ω_av), p = min(1, √((1 + 2ω)(1 + ω_av)/κ));
DIANA: γ = 1/((1 + 6ω_av)L_φ), shifts start at 0; Scaffnew: γ = 1/L_φ, p = 1/√κ_φ; FedAvg: K = ⌈√κ_φ⌉
local GD steps of 1/L_φ, column p shows 1/K). Bits per client, uplink only: 32 per real number
(float32); lattice: b bits per coordinate from `secagg.codec.plan_bits` (overflow probability
1e-6) + 32 for the common scale (ω of the lattice is relative to the largest client norm).
"SecAgg-summable": the server needs only the sum of same-index, common-scale values (the float32
methods after the usual fixed-point conversion); independent rand-k sends per-client indices.
Computation is float64 throughout; only the bit accounting assumes float32 on the wire.

{chr(10).join(lines)}

**Verdict.** Fewest bits to f − f* <= 1e-6: {verdict['best_locodl']}
({verdict['best_locodl_bits_to_1e-6'] / 1e6:.3f} Mbit); best non-LoCoDL method: {verdict['best_other']}
({(verdict['best_other_bits_to_1e-6'] or float('nan')) / 1e6:.3f} Mbit), i.e. {ratio:.2f}x more.
Every LoCoDL variant reached f − f* <= 1e-10 (linear convergence to the exact optimum):
{verdict['every_locodl_reached_1e-10']}. FedAvg-style local GD stalls at a biased point (client drift).

Reading the table:
- The lattice compressor is cheap ({lattice_bits} bits per coordinate instead of 32 for the sum of
  {info['clients']} clients) AND its errors are independent across clients (own dither), so
  ω_av = ω/n and LoCoDL needs {lattice_uploads} uploads to 1e-6 against Scaffnew's {scaffnew_uploads}.
  Rotation costs here: {info['dimension']} coordinates pad to the next power of two.
- Shared-seed rand-k is SecAgg-summable but its errors are fully correlated (ω_av = ω), so
  LoCoDL must communicate more often; in bits it does not beat full-precision Scaffnew on this
  problem, as the theory's √((1 + 2ω)(1 + ω)) factor predicts.
- LoCoDL takes about twice Scaffnew's iterations for the same κ: the server's pair (y, v)
  counts as half of the average (d̄ = (1/(2n))Σd_j).
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
