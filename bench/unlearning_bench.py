"""Unlearning benchmark: remove a backdoored client from a real fedvault run, three ways side by side.

One run of the real system (coordinator, SecAgg+, lattice codec, SQLite) on sklearn's bundled
digits: ``--clients`` clients (IID), client 0 plants a backdoor (a 3×3 corner trigger of value
``--trigger`` = 8 standard deviations, relabelled to class 7, ``federation.backdoor``), every
survivor uploads a sealed MEDU history record each round at R = ``--bits`` (0.5) bits per
parameter. Then client 0 is removed by:

1. **fedvault (MEDU records)**: ``unlearning.deletion.unlearn_client`` end to end: authenticate
   the signed request, open the client's sealed records from SQLite, stream the Fast-FedUL
   correction over the stored rounds, store the new model version, shred, audit. Also with 2
   healing rounds of the remaining clients.
2. **the same rule on an uncompressed fp32 history**: the client's exact per-round terms in the
   secure sum (recomputed offline: the stored round seeds replay its training bit for bit; the
   recomputation is checked against its opened records), fed to the same correction in float32.
   Such a history needs every client's fp32 update of every round: T·U·m·32 bits.
3. **retraining** without the client (the exact oracle, ``federation.retraining``), through the real
   coordinator from the initial model.

Reported per model: backdoor success on the triggered test set, test accuracy, loss-threshold MIA
AUC on the forgotten client's data vs the test set, ‖w − w_retrain‖/‖w_retrain‖, stored history
bytes, and time. A sweep over R (and over the user-sparsification policy: all survivors, or a
seeded random 5 per round with Horvitz–Thompson reweighting) rebuilds the client's records
offline from its exact terms with ``unlearning.records.build_record`` and plots memory against
removal quality.

Writes bench/out/unlearning_bench.json, bench/results/unlearning.png and prints the tables.
``--quick`` runs 10 rounds of logistic regression instead of 30 rounds of the MLP.
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
import torch

from federation.backdoor import learner_for
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.evaluation import GlobalModel
from federation.keystore import load_keys
from privacy.clipping import clip_l2
from secagg.codec import CodecConfig, LatticeCodec
from storage import Repository
from unlearning.deletion import current_model, medu_correction, record_config_for_run, unlearn_client
from unlearning.history_policy import HistoryPolicy
from unlearning.records import RecordChain, build_record, open_history
from unlearning.requests import sign_deletion_request
from federation.oracle_verification import verify_against_oracle
from federation.retraining import CoordinatorTrainer
from unlearning.rules import RoundHistory, fast_fedul_correction
from unlearning.run_records import run_record_config
from unlearning.secrets import generate_history_secret

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "unlearning_bench.json"
PLOT = ROOT / "results" / "unlearning.png"
TARGET = 0
SWEEP_BITS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SPARSE_RECORDS = 5


def _config(args) -> RunConfig:
    return RunConfig(dataset="digits", split="iid", clients=args.clients, rounds=args.rounds, model=args.model,
                     noise="none", dropout_rate=0.0, learning_rate=args.lr, local_epochs=1, workers=args.workers,
                     history_bits_per_entry=args.bits, checkpoint_every=5, seed=args.seed,
                     extra={"backdoor_client": TARGET, "backdoor_target": 7, "backdoor_value": args.trigger})


def _exact_terms(repository: Repository, run_id: int, config: RunConfig) -> dict[int, np.ndarray]:
    """Client TARGET's exact term in each round's secure sum, (d,) float64 by round: its training
    replayed from the stored round seeds and models (same code, one torch thread as in its worker),
    clipped, lattice-encoded and decoded as the codec of that round did."""
    learner = learner_for(config, TARGET)
    model = GlobalModel.for_config(config).flat()
    rate = np.float32(config.server_learning_rate)
    terms = {}
    for info in repository.list_rounds(run_id):
        p = info.parameters
        if TARGET in info.survivors:
            seed = bytes.fromhex(p["round_seed"])
            update = learner.train(model, seed).update.astype(np.float64)
            clipped, _ = clip_l2(update, p["clip_norm"])
            codec = LatticeCodec(CodecConfig(lattice=p["lattice"], step=p["step"], bits=p["bits"], rotate=True,
                                             clip_norm=p["clip_norm"]))
            terms[info.round_index] = codec.decode(codec.encode(clipped, seed, TARGET), seed, TARGET, model.size)
        if info.status == "completed":
            mean = repository.load_aggregates(run_id, info.round_index)["mean_update"].values
            model = model + rate * np.asarray(mean, dtype=np.float32)
    return terms


def _round_histories(rounds, updates: dict[int, np.ndarray], probability: dict[int, float]):
    for info in rounds:
        chosen = {TARGET: updates[info.round_index]} if info.round_index in updates else {}
        yield RoundHistory(info.round_index, info.client_weights, chosen, probability.get(info.round_index, 1.0))


def _unlearned(final: np.ndarray, rounds, updates, probability, rate: float) -> np.ndarray:
    correction = fast_fedul_correction(_round_histories(rounds, updates, probability), {TARGET}, final.size,
                                       server_learning_rate=rate)
    return (final.astype(np.float64) + correction).astype(np.float32)


def _metrics(repository, run_id, parameters, oracle) -> dict:
    report = verify_against_oracle(repository, run_id, TARGET, parameters, oracle)
    return {"backdoor_success": report.unlearned.backdoor_success, "test_accuracy": report.unlearned.test_accuracy,
            "forgotten_accuracy": report.unlearned.forgotten_accuracy,
            "membership_auc": report.unlearned.membership_auc, "relative_distance": report.relative_distance}


def _sweep(repository, run_id, config, rounds, terms, final, oracle, first_round) -> list[dict]:
    """Rebuild the target's records offline at each R and policy; correct with the decoded records."""
    rows = []
    p = first_round.parameters
    for max_records in (None, SPARSE_RECORDS):
        policy = HistoryPolicy(max_records)
        kept = {info.round_index: policy.select(info.cohort, bytes.fromhex(info.parameters["round_seed"]),
                                                info.round_index) for info in rounds if info.cohort}
        probability = {t: policy.inclusion_probability(len(info.cohort)) for info in rounds
                       for t in [info.round_index] if info.cohort}
        stored_records = sum(len(kept[info.round_index] & set(info.survivors)) for info in rounds if info.cohort)
        for bits in SWEEP_BITS:
            record_config = run_record_config(dimension=final.size, clip_norm=p["clip_norm"], bits_per_entry=bits,
                                              lattice="Z", codec_lattice=p["lattice"], step=p["step"],
                                              noise_mode="none", noise_mechanism="skellam", noise_parameter=0.0)
            secret, chain, decoded = generate_history_secret(), RecordChain(), {}
            for t in sorted(terms):
                if TARGET not in kept[t]:
                    continue
                built = build_record(terms[t], history_secret=secret, run_id=run_id, client_id=TARGET,
                                     round_index=t, config=record_config, chain=chain)
                chain, decoded[t] = built.chain, built.record.update
            parameters = _unlearned(final, rounds, decoded, probability, config.server_learning_rate)
            rows.append({"bits_per_entry": bits, "max_records": max_records,
                         "history_bytes": stored_records * record_config.sealed_bytes,
                         "record_bytes": record_config.sealed_bytes,
                         **_metrics(repository, run_id, parameters, oracle)})
    return rows


def _plot(rows, fp32, medu, original, retrained, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for max_records, marker in ((None, "o"), (SPARSE_RECORDS, "s")):
        series = [r for r in rows if r["max_records"] == max_records]
        label = "MEDU records, all survivors" if max_records is None else f"MEDU records, {max_records} per round"
        x = [r["history_bytes"] for r in series]
        for axis, key in zip(axes, ("backdoor_success", "relative_distance")):
            axis.plot(x, [r[key] for r in series], marker=marker, label=label)
            if key == "relative_distance":  # the backdoor panel's points sit on top of each other
                for r in series:
                    axis.annotate(f"R={r['bits_per_entry']:g}", (r["history_bytes"], r[key]), fontsize=7,
                                  textcoords="offset points", xytext=(3, 3))
    for axis, key in zip(axes, ("backdoor_success", "relative_distance")):
        axis.scatter([fp32["history_bytes"]], [fp32[key]], marker="*", s=120, color="black",
                     label="same rule, fp32 history")
        axis.scatter([medu["history_bytes"]], [medu[key]], marker="D", s=50, color="tab:red",
                     label="fedvault run (stored records)")
        axis.set_xscale("log")
        axis.set_xlabel("stored history (bytes, all clients)")
        axis.grid(alpha=0.3)
    axes[0].axhline(retrained["backdoor_success"], color="tab:green", linestyle="--", label="retrained")
    axes[0].axhline(original["backdoor_success"], color="tab:gray", linestyle=":", label="before unlearning")
    axes[0].set_ylabel("backdoor success")
    axes[1].set_ylabel("‖w − w_retrain‖ / ‖w_retrain‖")
    axes[1].axhline(original["relative_distance"], color="tab:gray", linestyle=":", label="before unlearning")
    axes[0].legend(fontsize=7)
    figure.suptitle("Removing a backdoored client: history memory vs removal quality")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds of logistic regression")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--model", default=None, choices=["logreg", "mlp"])
    parser.add_argument("--bits", type=float, default=0.5, help="R of the run's records (bits per parameter)")
    parser.add_argument("--trigger", type=float, default=8.0, help="trigger value, in feature standard deviations")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (10 if args.quick else 30)
    args.model = args.model or ("logreg" if args.quick else "mlp")
    torch.set_num_threads(1)  # as in the workers: the replayed training is then bit-identical
    config = _config(args)

    with tempfile.TemporaryDirectory(prefix="fedvault-unlearning-bench-") as directory:
        keys = Path(directory) / "keys"
        repository = Repository.open(str(Path(directory) / "run.db"))
        started = time.perf_counter()
        run_id = Coordinator(config, repository, key_directory=keys).run().run_id
        train_seconds = time.perf_counter() - started
        rounds = repository.list_rounds(run_id)
        final, _ = current_model(repository, run_id)
        dimension = final.size
        survivors_total = sum(len(info.survivors) for info in rounds)
        stored_history = sum(r.record_size for c in range(config.clients)
                             for r in repository.iter_sealed_records(run_id, c))
        fp32_history = survivors_total * dimension * 4
        secret = load_keys(keys / f"client-{TARGET}.key").history_secret

        # The exact terms, checked against what the client really sealed.
        terms = _exact_terms(repository, run_id, config)
        record_config = record_config_for_run(repository.get_run(run_id).config, rounds)
        stored = [(r.round_index, r.ciphertext) for r in repository.iter_sealed_records(run_id, TARGET)]
        opened = list(open_history(stored, history_secret=secret,
                                   commitment=repository.get_client(run_id, TARGET).history_commitment,
                                   run_id=run_id, client_id=TARGET, config=record_config))
        assert [o.round_index for o in opened] == sorted(terms), "records and participation disagree"
        worst = max(float(np.max(np.abs(o.update - terms[o.round_index]))) / o.error_bound for o in opened)
        assert worst <= 1.0 + 1e-6, f"replayed terms differ from the sealed records ({worst:.3f} × bound)"
        medu_relative_error = float(np.mean([np.linalg.norm(o.update - terms[o.round_index])
                                             / np.linalg.norm(terms[o.round_index]) for o in opened]))

        # 3. The oracle first (it only reads the run), then 2, then 1 (which shreds the records).
        trainer = CoordinatorTrainer(keys, workers=args.workers)
        started = time.perf_counter()
        oracle = trainer.oracle(repository, run_id, {TARGET})
        retrain_seconds = time.perf_counter() - started

        started = time.perf_counter()
        fp32_terms = {t: term.astype(np.float32) for t, term in terms.items()}
        fp32_model = _unlearned(final, rounds, fp32_terms, {}, config.server_learning_rate)
        fp32_seconds = time.perf_counter() - started

        sweep = _sweep(repository, run_id, config, rounds, terms, final, oracle,
                       next(r for r in rounds if r.status == "completed"))

        started = time.perf_counter()
        correction_only = medu_correction(repository, run_id, TARGET, secret)
        correction_seconds = time.perf_counter() - started
        client_keys = load_keys(keys / f"client-{TARGET}.key")
        request = sign_deletion_request(client_keys.identity, client_keys.history_secret, run_id, TARGET)
        started = time.perf_counter()
        outcome = unlearn_client(repository, request)
        medu_seconds = time.perf_counter() - started
        medu_model = np.asarray(repository.load_checkpoint(run_id).tensors["flat"], dtype=np.float32)
        assert np.array_equal(medu_model, correction_only.parameters)
        started = time.perf_counter()
        healed_model = trainer.heal(repository, run_id, medu_model, 2, {TARGET})
        heal_seconds = time.perf_counter() - started

        results = {
            "before unlearning": {**_metrics(repository, run_id, final, oracle), "history_bytes": stored_history,
                                  "seconds": train_seconds},
            "fedvault (MEDU records)": {**_metrics(repository, run_id, medu_model, oracle),
                                        "history_bytes": stored_history, "seconds": medu_seconds},
            "fedvault + 2 healing rounds": {**_metrics(repository, run_id, healed_model, oracle),
                                            "history_bytes": stored_history, "seconds": medu_seconds + heal_seconds},
            "same rule, fp32 history": {**_metrics(repository, run_id, fp32_model, oracle),
                                        "history_bytes": fp32_history, "seconds": fp32_seconds},
            "retraining (oracle)": {**_metrics(repository, run_id, oracle.parameters, oracle), "history_bytes": 0,
                                    "seconds": retrain_seconds},
        }
        repository.close()

    retrained = results["retraining (oracle)"]
    medu = results["fedvault (MEDU records)"]
    summary = {
        "history_ratio_vs_fp32": fp32_history / stored_history,
        "backdoor_gap_points": 100 * (medu["backdoor_success"] - retrained["backdoor_success"]),
        "test_accuracy_gap_points": 100 * (medu["test_accuracy"] - retrained["test_accuracy"]),
        "speedup_vs_retraining": retrain_seconds / medu_seconds,
        "correction_only_seconds": correction_seconds,
        "records_opened": outcome.records_opened,
        "record_relative_error": medu_relative_error,
        "replay_check_worst_fraction_of_bound": worst,
    }
    report = {"config": {**config.to_dict(), "dimension": dimension, "rounds_committed": len(rounds),
                         "survivor_updates": survivors_total},
              "results": results, "summary": summary, "sweep": sweep,
              "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                          "torch_threads": torch.get_num_threads()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    _plot(sweep, results["same rule, fp32 history"], medu, results["before unlearning"], retrained, args.plot)

    print(f"digits, {config.clients} clients, {config.model} (d = {dimension}), {len(rounds)} rounds, "
          f"client {TARGET} planted the backdoor; records at R = {args.bits:g}")
    header = f"{'method':<30} {'backdoor':>9} {'test acc':>9} {'MIA AUC':>8} {'rel dist':>9} {'history':>12} {'time s':>8}"
    print(header)
    for name, row in results.items():
        print(f"{name:<30} {row['backdoor_success']:>9.4f} {row['test_accuracy']:>9.4f} {row['membership_auc']:>8.4f} "
              f"{row['relative_distance']:>9.4f} {row['history_bytes']:>12,} {row['seconds']:>8.2f}")
    print(f"history: {summary['history_ratio_vs_fp32']:.1f}x smaller than fp32 (target >= 50x); backdoor gap to "
          f"retrain {summary['backdoor_gap_points']:+.2f} points (target within 5); test accuracy gap "
          f"{summary['test_accuracy_gap_points']:+.2f} points (target within 2); unlearning "
          f"{summary['speedup_vs_retraining']:.0f}x faster than retraining (target >= 100x)")
    print("\nsweep (client's records rebuilt offline from its exact terms):")
    print(f"{'policy':<14} {'R':>5} {'history':>12} {'vs fp32':>8} {'backdoor':>9} {'test acc':>9} {'rel dist':>9}")
    for row in sweep:
        policy = "all" if row["max_records"] is None else f"{row['max_records']}/round"
        print(f"{policy:<14} {row['bits_per_entry']:>5g} {row['history_bytes']:>12,} "
              f"{fp32_history / row['history_bytes']:>7.1f}x {row['backdoor_success']:>9.4f} "
              f"{row['test_accuracy']:>9.4f} {row['relative_distance']:>9.4f}")
    print(f"\nwrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
