"""The one typed configuration of a federated run, shared by the CLI, the Python API and the tests.

Defaults give a complete private run that finishes in about a minute on two cores: digits,
50 clients with Dirichlet(1.0) label skew, logistic regression, 15 rounds of 5 local epochs, Z
lattice, distributed Skellam noise at ε = 8 (δ = 1e-5) per client over the whole run.

Why these and not 20 clients and an MLP: the noise a sum carries for user-level DP grows with
√d while the signal of a mean grows with the client count, so its norm relative to the mean
update is about noise-multiplier·√d/n. At n = 20 and d' = 8192 (MLP) that is ~10: accuracy
stalls near 0.5 at ε = 8. Logistic regression (d' = 1024), 50 clients, a clip near the typical
update norm (0.5) and fewer, longer rounds (fewer compositions) give ~0.85 against ~0.91 without
noise. `bench/utility_bench.py` measures the trade-off.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from federation.errors import ConfigError
from privacy.fedp3_aggregation import CLIPPINGS as FEDP3_CLIPPINGS, WEIGHTINGS as FEDP3_WEIGHTINGS
from privacy.fedp3_groups import POLICIES as FEDP3_POLICIES
from privacy.events import RELATIONS

DATASETS = ("digits", "breast_cancer", "mnist5k", "synthetic")
CUSTOM = "custom"  # dataset and model of a run on a user's federation.workload.Workload
SPLITS = ("iid", "dirichlet", "shards")
MODELS = ("logreg", "mlp", "cnn")
TRAINERS = ("sgd", "dpsgd", "locodl", "fedp3")
# trainers whose client uploads are not one FedAvg update: no MEDU records
NO_HISTORY_TRAINERS = ("locodl", "fedp3")
LATTICES = ("Z", "A2", "D4", "E8")
NOISE_MODES = ("distributed", "local", "none")
MECHANISMS = ("skellam", "discrete_gaussian")
#: LDP-FedP3's default local ε per round and upload (``RunConfig.local_epsilon_floor``).
FEDP3_LOCAL_EPSILON = 8.0
HISTORY_LATTICES = ("Z", "D4", "E8")  # unlearning.records.RECORD_LATTICES


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run. Units: epsilon/delta per client over the whole run."""

    # data and model
    dataset: str = "digits"
    split: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    clients: int = 50
    model: str = "logreg"
    # federated schedule
    rounds: int = 15
    sample_rate: float = 1.0
    local_epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 0.1
    server_learning_rate: float = 1.0
    trainer: str = "sgd"
    # compression and secure aggregation
    lattice: str = "Z"  # with DP noise Z is best: noise on D4/E8 coordinates pays ‖G⁻¹‖² (round_plan.py)
    clip_norm: float = 0.5
    step: float | None = None  # lattice step; None = derived from clip norm and dimension
    bits: int | None = None  # modulus 2**bits; None = smallest safe width
    neighbours: int | None = None  # Harary degree k; None = default table
    threshold: int | None = None  # Shamir threshold t; None = default table
    dropout_rate: float = 0.1  # simulated dropout probability per client per stage boundary
    # privacy
    noise: str = "distributed"
    mechanism: str = "skellam"
    target_epsilon: float = 8.0
    delta: float = 1e-5
    budget_epsilon: float | None = None  # per-client budget; None = target_epsilon
    relation: str = "zero-out"  # neighbouring relation of the central guarantee (privacy.relations)
    local_epsilon: float | None = None  # per-round local-ε floor of every upload (privacy.local_privacy)
    dpsgd_noise_multiplier: float | None = None  # None: calibrated per client to the record budget over the run
    record_budget_epsilon: float | None = None  # per-client record-level budget (DP-SGD); None = the client budget
    # LoCoDL (trainer "locodl", docs/ALGORITHMS.md §5.1): min (1/n)Σ f_i + g over logistic regression
    locodl_l2: float = 0.01  # λ of the L2 term (strong convexity), half in the f_i, half in g
    locodl_smoothness: float | None = None  # public bound L; None = Böhning's bound on the run's data
    # LDP-FedP3 (trainer "fedp3", docs/ALGORITHMS.md §4): one secure sum per layer group
    fedp3_policy: str = "OPU2"  # which body groups each client owns: LowerB, OPU2, OPU3, OPR2
    fedp3_weighting: str = "mean"  # per-group average over senders: "mean" or FedP3's "layers"
    fedp3_clipping: str = "joint"  # the client's uploaded groups clipped to C together or per group
    fedp3_capacity: float = 1.0  # fraction of the model's parameters a client keeps (1.0: no pruning)
    # sealed history records for unlearning (docs/ALGORITHMS.md §6.4)
    history: bool = True  # clients upload a sealed MEDU record of their contribution each round
    history_bits_per_entry: float = 2.0  # R: record body bits per model parameter
    history_lattice: str = "Z"  # lattice of the record's dithered quantizer
    history_max_records: int | None = None  # records kept per round (seeded random subset); None = all
    # persistence and output
    checkpoint_every: int = 5
    seed: int = 0
    workers: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _one_of("dataset", self.dataset, DATASETS + (CUSTOM,))
        _one_of("split", self.split, SPLITS)
        _one_of("model", self.model, MODELS + (CUSTOM,))
        if (self.dataset == CUSTOM) != (self.model == CUSTOM):
            raise ConfigError("dataset and model are both 'custom' (a user's workload) or both built-in")
        _one_of("trainer", self.trainer, TRAINERS)
        _one_of("lattice", self.lattice, LATTICES)
        _one_of("noise", self.noise, NOISE_MODES)
        _one_of("mechanism", self.mechanism, MECHANISMS)
        _one_of("history_lattice", self.history_lattice, HISTORY_LATTICES)
        if not isinstance(self.history, bool):
            raise ConfigError(f"history must be true or false, got {self.history!r}")
        _in_open_interval("history_bits_per_entry", self.history_bits_per_entry, 0.0, 64.0)
        if self.history_max_records is not None:
            _positive_int("history_max_records", self.history_max_records)
        _positive_int("clients", self.clients, minimum=2)
        _positive_int("rounds", self.rounds)
        _positive_int("local_epochs", self.local_epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("checkpoint_every", self.checkpoint_every)
        _positive_int("workers", self.workers)
        _in_open_interval("dirichlet_alpha", self.dirichlet_alpha, 0.0, math.inf)
        _in_interval("sample_rate", self.sample_rate, 0.0, 1.0, open_low=True)
        _in_interval("dropout_rate", self.dropout_rate, 0.0, 1.0, open_high=True)
        _in_open_interval("learning_rate", self.learning_rate, 0.0, math.inf)
        _in_open_interval("server_learning_rate", self.server_learning_rate, 0.0, math.inf)
        _in_open_interval("clip_norm", self.clip_norm, 0.0, math.inf)
        _in_open_interval("target_epsilon", self.target_epsilon, 0.0, math.inf)
        _in_open_interval("delta", self.delta, 0.0, 1.0)
        _one_of("relation", self.relation, RELATIONS)
        if self.local_epsilon is not None:
            _in_open_interval("local_epsilon", self.local_epsilon, 0.0, math.inf)
        if self.relation == "add-remove" and self.noise == "distributed" and self.mechanism != "skellam":
            raise ConfigError("relation add-remove is accounted for the skellam mechanism only")
        if self.dpsgd_noise_multiplier is not None:
            _in_open_interval("dpsgd_noise_multiplier", self.dpsgd_noise_multiplier, 0.0, math.inf)
        if self.record_budget_epsilon is not None:
            _in_open_interval("record_budget_epsilon", self.record_budget_epsilon, 0.0, math.inf)
        _in_open_interval("locodl_l2", self.locodl_l2, 0.0, math.inf)
        if self.locodl_smoothness is not None:
            _in_open_interval("locodl_smoothness", self.locodl_smoothness, 0.0, math.inf)
        if self.trainer == "locodl":
            _check_locodl(self)
        if self.step is not None:
            _in_open_interval("step", self.step, 0.0, math.inf)
        if self.budget_epsilon is not None:
            _in_open_interval("budget_epsilon", self.budget_epsilon, 0.0, math.inf)
        if self.bits is not None and not (2 <= self.bits <= 32):
            raise ConfigError(f"bits must be between 2 and 32, got {self.bits}")
        _one_of("fedp3_policy", self.fedp3_policy, FEDP3_POLICIES)
        _one_of("fedp3_weighting", self.fedp3_weighting, FEDP3_WEIGHTINGS)
        _one_of("fedp3_clipping", self.fedp3_clipping, FEDP3_CLIPPINGS)
        _in_interval("fedp3_capacity", self.fedp3_capacity, 0.0, 1.0, open_low=True)
        if self.trainer == "fedp3":
            _check_fedp3(self)
        if self.threshold is not None and not (2 <= self.threshold <= self.clients):
            raise ConfigError(f"threshold must be between 2 and clients={self.clients}, got {self.threshold}")
        if self.neighbours is not None and not (1 <= self.neighbours <= self.clients - 1):
            raise ConfigError(f"neighbours must be between 1 and clients-1={self.clients - 1}, got {self.neighbours}")

    @property
    def local_epsilon_floor(self) -> float | None:
        """The per-round local-ε floor every upload respects (``privacy.local_privacy``):
        ``local_epsilon`` when set; for LDP-FedP3 with distributed noise
        :data:`FEDP3_LOCAL_EPSILON` by default, so each upload carries a real local guarantee
        with the distributed remainder on top; otherwise none."""
        if self.local_epsilon is not None:
            return self.local_epsilon
        if self.trainer == "fedp3" and self.noise == "distributed":
            return FEDP3_LOCAL_EPSILON
        return None

    @property
    def record_budget(self) -> float:
        """Every client's record-level ε budget (DP-SGD inside the client, ``privacy.units``)."""
        return self.client_budget if self.record_budget_epsilon is None else self.record_budget_epsilon

    @property
    def client_budget(self) -> float:
        return self.target_epsilon if self.budget_epsilon is None else self.budget_epsilon

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict of RunConfig keys (dashes allowed: `target-epsilon`)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    section = raw.get("run", raw)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [run] must be a table")
    return {key.replace("-", "_"): value for key, value in section.items()}


def extra_settings_given(extra: dict[str, Any], switch: str, keys: tuple[str, ...]) -> bool:
    """Whether the run's ``extra`` settings turn on the feature named by ``switch`` (a backdoor,
    a label flip, a heavy client); ConfigError when some of its ``keys`` come without it."""
    if switch in extra:
        return True
    stray = sorted(key for key in keys if key in extra)
    if stray:
        raise ConfigError(f"{', '.join(stray)} given without {switch}")
    return False


def _check_locodl(config: RunConfig) -> None:
    """LoCoDL's exactness needs every client in every communication and a convex objective."""
    if config.model != "logreg":
        raise ConfigError(f"trainer locodl needs model logreg (a strongly convex objective), got {config.model!r}")
    if config.sample_rate != 1.0:
        raise ConfigError("trainer locodl needs sample_rate 1.0: every client takes part in every communication")
    if config.history:
        raise ConfigError("trainer locodl keeps no MEDU history records (a client's state is not a FedAvg "
                          "update): set history = false (`--no-history`)")


def _check_fedp3(config: RunConfig) -> None:
    """What trainer "fedp3" needs of the rest of the run (the model's layer groups are checked
    against the policy when the model exists: ``federation.fedp3_rounds``)."""
    if config.model == "logreg":
        raise ConfigError("trainer fedp3 needs a model with at least one body layer group besides the "
                          "classifier head; logreg has only the head: use model mlp or cnn")
    if config.history:
        raise ConfigError("trainer fedp3 does not upload sealed history records (MEDU) yet: set history "
                          "to false (fedvault run --no-history)")


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _in_open_interval(name: str, value: object, low: float, high: float) -> None:
    _in_interval(name, value, low, high, open_low=True, open_high=True)


def _in_interval(name, value, low, high, *, open_low=False, open_high=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    too_low = value <= low if open_low else value < low
    too_high = value >= high if open_high else value > high
    if too_low or too_high:
        left = "(" if open_low else "["
        right = ")" if open_high else "]"
        raise ConfigError(f"{name} must be in {left}{low}, {high}{right}, got {value}")
