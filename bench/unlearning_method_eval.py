"""Which unlearning correction tracks retraining on scenarios it was not tuned on?

A small evaluation harness for the correction rule alone (``unlearning.correction`` against
Fast-FedUL's fixed-shrink rule and plain subtraction), over a family of scenarios: dataset
(digits, MNIST-5k, FedProx synthetic), model (logreg, MLP, CNN), 10–50 clients, IID to
Dirichlet 0.1, and what the removed client did: a pixel backdoor (position, size, value, target
configurable), label flipping, or nothing (an honest client holding most of one class).

Each scenario is simulated with the run's real pieces (the run's dataset split, model, seeded
initial weights and local SGD trainer, ``privacy.clipping`` clip norm, uniform FedAvg weights over
each round's survivors, random dropouts), *without* SecAgg and quantization and with DP noise off:
what is measured is the rule, not the codec (the production bench, ``unlearning_bench.py``,
measures the whole deletion path). The retraining oracle replays the same rounds — same round
seeds, same survivors — without the client, so the comparison has no training-randomness spread.

Two scenario lists: ``tune`` (what the rule's settings were chosen on) and ``held-out`` (drawn
after the settings were frozen: other datasets/trigger positions/seeds/client counts). Reported per
scenario and worst case over each list, for each rule: attack success gap to retraining (points),
gap on the removed client's dominant class (points, signed: negative = over-removal), test
accuracy gap (points), ‖w − w_r‖ relative to the original's, and the rule's time against the
simulated retraining's.

Writes bench/out/unlearning_method_eval.json and prints the tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from federation.config import RunConfig
from federation.datasets import ClientData
from federation.evaluation import data_for, model_for
from federation.learning import trainer_for
from federation.parameters import flatten_parameters, load_parameters
from privacy.clipping import clip_l2
from unlearning.correction import CorrectionSettings, ObservedRound, calibrated_correction
from unlearning.rules import DEFAULT_ALPHA, RoundHistory, fast_fedul_correction

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "unlearning_method_eval.json"
TARGET = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    dataset: str = "digits"
    model: str = "logreg"
    clients: int = 20
    split: str = "iid"
    alpha: float = 1.0
    rounds: int = 20
    attack: str = "backdoor"  # backdoor | flip | heavy
    corner: str = "br"  # backdoor position: br, tl, tr, bl, center
    patch: int = 3
    value: float = 8.0
    target_label: int = 7
    flip: tuple[int, int] = (3, 8)  # label flipping: source -> destination
    heavy_class: int = 2
    heavy_share: float = 0.8
    dropout: float = 0.1
    clip_norm: float = 1.0
    learning_rate: float = 0.1
    local_epochs: int = 5
    noise: float = 0.0  # DP: Gaussian noise of std noise·C/|S_t| per coordinate on each round's mean
    seed: int = 0


def _trigger_columns(shape: tuple[int, ...], corner: str, patch: int) -> np.ndarray:
    if len(shape) == 1:
        width = shape[0]
        start = {"br": width - patch, "tl": 0, "tr": width // 2, "bl": width // 4, "center": width // 2 - patch // 2}
        return np.arange(start[corner], start[corner] + patch)
    channels, height, width = shape
    rows = {"br": height - patch, "bl": height - patch, "tl": 0, "tr": 0, "center": (height - patch) // 2}[corner]
    cols = {"br": width - patch, "tr": width - patch, "tl": 0, "bl": 0, "center": (width - patch) // 2}[corner]
    grid = np.arange(channels * height * width).reshape(channels, height, width)
    return grid[:, rows:rows + patch, cols:cols + patch].reshape(-1)


@dataclass
class World:
    clients: list[ClientData]
    test_x: np.ndarray
    test_y: np.ndarray
    attack_x: np.ndarray | None = None
    attack_label: int | None = None
    dominant_class: int = 0
    config: RunConfig | None = None
    extra: dict = field(default_factory=dict)


def build_world(s: Scenario) -> World:
    config = RunConfig(dataset=s.dataset, split=s.split, dirichlet_alpha=s.alpha, clients=s.clients, model=s.model,
                       rounds=s.rounds, noise="none", dropout_rate=0.0, learning_rate=s.learning_rate,
                       local_epochs=s.local_epochs, seed=s.seed, clip_norm=s.clip_norm)
    data = data_for(config)
    clients = list(data.clients)
    test_x, test_y = np.asarray(data.test.features), np.asarray(data.test.labels)
    world = World(clients, test_x, test_y, config=config)
    target = clients[TARGET]
    if s.attack == "heavy":
        # Move heavy_share of class heavy_class from everyone else to the target.
        rng = np.random.default_rng(s.seed + 101)
        moved_x, moved_y = [], []
        for k in range(1, len(clients)):
            c = clients[k]
            mask = c.labels == s.heavy_class
            take = mask & (rng.random(mask.shape[0]) < s.heavy_share)
            if take.sum() and (~take).sum() >= 5:
                moved_x.append(c.features[take])
                moved_y.append(c.labels[take])
                clients[k] = ClientData(c.features[~take], c.labels[~take], client_id=k)
        clients[TARGET] = ClientData(np.concatenate([target.features, *moved_x]),
                                     np.concatenate([target.labels, *moved_y]), client_id=TARGET)
        world.dominant_class = s.heavy_class
    elif s.attack == "backdoor":
        columns = _trigger_columns(tuple(data.input_shape), s.corner, s.patch)
        stamped = np.array(target.features, copy=True)
        stamped[:, columns] = s.value
        clients[TARGET] = ClientData(np.concatenate([target.features, stamped]),
                                     np.concatenate([target.labels, np.full(target.num_samples, s.target_label)]),
                                     client_id=TARGET)
        keep = test_y != s.target_label
        world.attack_x = np.array(test_x[keep], copy=True)
        world.attack_x[:, columns] = s.value
        world.attack_label = s.target_label
        world.dominant_class = int(np.bincount(target.labels, minlength=data.num_classes).argmax())
    elif s.attack == "flip":
        source, destination = s.flip
        labels = np.array(target.labels, copy=True)
        labels[labels == source] = destination
        clients[TARGET] = ClientData(target.features, labels, client_id=TARGET)
        world.attack_x = test_x[test_y == source]
        world.attack_label = destination
        world.dominant_class = source
    else:
        raise ValueError(s.attack)
    return world


def _seed(s: Scenario, round_index: int) -> bytes:
    return hashlib.sha256(f"{s.name}/{s.seed}/{round_index}".encode()).digest()


def simulate(s: Scenario, world: World, exclude: set[int]) -> dict:
    """FedAvg with the run's trainer and clipping; returns the trajectory's stored history."""
    torch.set_num_threads(1)
    data = data_for(world.config)
    model = model_for(world.config, data)
    trainer = trainer_for(world.config, model)
    w = flatten_parameters(model).astype(np.float32)
    rng = np.random.default_rng(s.seed + 7)
    rounds = []
    for t in range(s.rounds):
        alive = [k for k in range(s.clients) if rng.random() >= s.dropout]
        survivors = [k for k in alive if k not in exclude]
        if len(survivors) < 2:
            continue
        seed = _seed(s, t)
        updates = {}
        for k in survivors:
            update = trainer.train(w, world.clients[k], seed, client_id=k).update
            updates[k], _ = clip_l2(update.astype(np.float32), s.clip_norm)
        weights = {k: 1.0 / len(survivors) for k in survivors}
        aggregate = np.mean([updates[k] for k in survivors], axis=0)
        if s.noise:  # the same draw in the original run and the oracle: the comparison isolates the rule
            noise_rng = np.random.default_rng([s.seed, t, 99])
            aggregate = aggregate + noise_rng.normal(0.0, s.noise * s.clip_norm / len(alive), aggregate.shape)
        aggregate = aggregate.astype(np.float32)
        rounds.append({"round": t, "weights": weights, "aggregate": aggregate,
                       "target": {c: updates[c].astype(np.float64) for c in updates if c == TARGET}})
        w = w + aggregate
    return {"model": w, "rounds": rounds, "initial": flatten_parameters(model).astype(np.float32)}


def _predict(world: World, parameters: np.ndarray, x: np.ndarray) -> np.ndarray:
    data = data_for(world.config)
    module = model_for(world.config, data)
    load_parameters(module, np.asarray(parameters, dtype=np.float32))
    module.eval()
    with torch.no_grad():
        return module(torch.tensor(x, dtype=torch.float32)).argmax(1).numpy()


def metrics(world: World, parameters: np.ndarray) -> dict:
    predicted = _predict(world, parameters, world.test_x)
    dominant = world.test_y == world.dominant_class
    attack = None
    if world.attack_x is not None and len(world.attack_x):
        attack = float(np.mean(_predict(world, parameters, world.attack_x) == world.attack_label))
    return {"test_accuracy": float(np.mean(predicted == world.test_y)),
            "dominant_accuracy": float(np.mean(predicted[dominant] == world.dominant_class)),
            "attack_success": attack}


def rules(s: Scenario, run: dict, settings: CorrectionSettings) -> dict[str, tuple[np.ndarray, float]]:
    final = run["model"].astype(np.float64)
    d = final.size
    out = {}

    def histories():
        return [RoundHistory(r["round"], r["weights"], r["target"]) for r in run["rounds"]]

    started = time.perf_counter()
    old = fast_fedul_correction(histories(), {TARGET}, d, alpha=DEFAULT_ALPHA)
    out["fast-fedul a=0.07"] = (final + old, time.perf_counter() - started)
    started = time.perf_counter()
    plain = fast_fedul_correction(histories(), {TARGET}, d, alpha=0.0)
    out["subtraction a=0"] = (final + plain, time.perf_counter() - started)
    for name, rule_settings in (("renormalized", CorrectionSettings(window=0)), ("calibrated", settings)):
        started = time.perf_counter()
        observed = (ObservedRound(h, r["aggregate"]) for h, r in zip(histories(), run["rounds"]))
        correction = calibrated_correction(observed, {TARGET}, d, settings=rule_settings)
        out[name] = (final + correction, time.perf_counter() - started)
    return out


def evaluate(s: Scenario, settings: CorrectionSettings) -> dict:
    world = build_world(s)
    started = time.perf_counter()
    original = simulate(s, world, set())
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    retrained = simulate(s, world, {TARGET})
    retrain_seconds = time.perf_counter() - started
    w_r = retrained["model"].astype(np.float64)
    reference = metrics(world, w_r)
    original_distance = float(np.linalg.norm(original["model"] - w_r))
    rows = {}
    candidates = {"original": (original["model"], 0.0), **rules(s, original, settings)}
    for name, (parameters, seconds) in candidates.items():
        m = metrics(world, parameters)
        rows[name] = {
            **m,
            "attack_gap": None if m["attack_success"] is None
            else 100 * (m["attack_success"] - reference["attack_success"]),
            "dominant_gap": 100 * (m["dominant_accuracy"] - reference["dominant_accuracy"]),
            "test_gap": 100 * (m["test_accuracy"] - reference["test_accuracy"]),
            "distance_ratio": float(np.linalg.norm(parameters - w_r)) / original_distance,
            "seconds": seconds,
            "speedup": retrain_seconds / seconds if seconds else None,
        }
    return {"scenario": asdict(s), "retrained": reference, "rows": rows, "train_seconds": train_seconds,
            "retrain_seconds": retrain_seconds}


TUNE = [
    Scenario("digits-logreg-iid-backdoor", clients=10, attack="backdoor", clip_norm=2.0),
    Scenario("digits-mlp-dir0.5-heavy", model="mlp", split="dirichlet", alpha=0.5, attack="heavy", heavy_class=2),
    Scenario("digits-logreg-dir1-flip", split="dirichlet", alpha=1.0, attack="flip", flip=(1, 7)),
    Scenario("digits-logreg-iid-heavy", attack="heavy", heavy_class=5, seed=1),
    Scenario("synthetic-mlp-backdoor", dataset="synthetic", model="mlp", clients=10, attack="backdoor",
             corner="tl", patch=4, value=6.0, target_label=3, clip_norm=2.0),
]

#: DP on (noise in the aggregate, none in the records): measured after the settings were frozen.
DP = [
    Scenario("dp-digits-logreg-iid-backdoor", clients=10, attack="backdoor", clip_norm=2.0, noise=0.5, seed=12),
    Scenario("dp-digits-mlp-dir0.5-heavy", model="mlp", split="dirichlet", alpha=0.5, attack="heavy",
             heavy_class=4, noise=0.5, seed=13),
]

HELD_OUT = [
    Scenario("mnist-logreg-dir0.1-backdoor-tl", dataset="mnist5k", clients=30, split="dirichlet", alpha=0.1,
             corner="tl", patch=4, value=5.0, target_label=2, seed=3, rounds=12),
    Scenario("digits-cnn-iid-backdoor-center", model="cnn", clients=10, corner="center", patch=2, value=6.0,
             target_label=0, seed=4, rounds=12),
    Scenario("mnist-mlp-iid-heavy", dataset="mnist5k", model="mlp", clients=20, attack="heavy", heavy_class=6,
             seed=5, rounds=12),
    Scenario("mnist-logreg-50c-dir0.3-heavy", dataset="mnist5k", clients=50, split="dirichlet", alpha=0.3,
             attack="heavy", heavy_class=9, seed=6, rounds=12),
    Scenario("synthetic-logreg-flip", dataset="synthetic", clients=30, attack="flip", flip=(0, 5), seed=7),
    Scenario("digits-mlp-dir0.1-backdoor-bl", model="mlp", clients=15, split="dirichlet", alpha=0.1, corner="bl",
             patch=3, value=4.0, target_label=4, seed=8),
    Scenario("digits-logreg-iid-backdoor-seed9", clients=25, corner="tr", patch=2, value=10.0, target_label=1, seed=9),
]


def _worst(results: list[dict], rule: str) -> dict:
    rows = [r["rows"][rule] for r in results]
    attack = [abs(r["attack_gap"]) for r in rows if r["attack_gap"] is not None]
    return {"attack_gap": max(attack) if attack else None,
            "dominant_gap": max((r["dominant_gap"] for r in rows), key=abs),
            "test_gap": max((r["test_gap"] for r in rows), key=abs),
            "distance_ratio": max(r["distance_ratio"] for r in rows)}


def _print(label: str, results: list[dict]) -> None:
    print(f"\n== {label} ==")
    header = (f"{'scenario':<36} {'rule':<18} {'attack':>7} {'gap':>7} {'dom gap':>8} {'test gap':>9} {'dist':>6} "
              f"{'vs retrain':>11}")
    print(header)
    for result in results:
        for rule, row in result["rows"].items():
            attack = "" if row["attack_success"] is None else f"{row['attack_success']:.3f}"
            gap = "" if row["attack_gap"] is None else f"{row['attack_gap']:+.1f}"
            speedup = "" if not row["speedup"] else f"{row['speedup']:.0f}x faster"
            print(f"{result['scenario']['name']:<36} {rule:<18} {attack:>7} {gap:>7} {row['dominant_gap']:>+8.1f} "
                  f"{row['test_gap']:>+9.1f} {row['distance_ratio']:>6.2f} {speedup:>11}")
        ref = result["retrained"]
        attack = "" if ref["attack_success"] is None else f"{ref['attack_success']:.3f}"
        print(f"{'':<36} {'(retrained)':<18} {attack:>7}   (test {ref['test_accuracy']:.3f}, "
              f"dominant {ref['dominant_accuracy']:.3f}; retrain {result['retrain_seconds']:.1f} s)")
    print(f"{'worst case':<36} {'rule':<18} {'|gap|':>7} {'dom gap':>8} {'test gap':>9} {'dist':>6}")
    for rule in results[0]["rows"]:
        w = _worst(results, rule)
        attack = "" if w["attack_gap"] is None else f"{w['attack_gap']:.1f}"
        print(f"{'':<36} {rule:<18} {attack:>7} {w['dominant_gap']:>+8.1f} {w['test_gap']:>+9.1f} "
              f"{w['distance_ratio']:>6.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=["tune", "held-out", "dp", "both"], default="both",
                        help="which scenario list to run (both: tune and held-out)")
    parser.add_argument("--only", default=None, help="run only scenarios whose name contains this")
    parser.add_argument("--window", type=int, default=CorrectionSettings().window,
                        help="secant pairs the calibrated rule keeps")
    parser.add_argument("--ridge", type=float, default=CorrectionSettings().ridge,
                        help="relative ridge of the secant fit")
    parser.add_argument("--max-contraction", type=float, default=CorrectionSettings().max_contraction,
                        help="largest per-round shrink of the correction along one direction")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON report")
    args = parser.parse_args(argv)
    settings = CorrectionSettings(window=args.window, ridge=args.ridge, max_contraction=args.max_contraction)
    report = {"settings": asdict(settings)}
    for label, scenarios in (("tune", TUNE), ("held-out", HELD_OUT), ("dp", DP)):
        if args.set != label and not (args.set == "both" and label != "dp"):
            continue
        chosen = [s for s in scenarios if args.only is None or args.only in s.name]
        results = [evaluate(s, settings) for s in chosen]
        if results:
            _print(label, results)
            report[label] = {"results": results,
                             "worst": {rule: _worst(results, rule) for rule in results[0]["rows"]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
