"""Local trainers: what a client does between receiving θ_t and uploading Δ_i.

Every trainer has one entry point::

    trainer.train(start, data, round_seed, *, client_id=0, keep_masks=None) -> TrainResult

``start`` is the flat float32 parameter vector the client received (θ_t, or its FedP3-pruned
version), ``data`` a :class:`federation.datasets.ClientData` or any torch ``DataLoader`` the user
brings, and the result's ``update`` is Δ = local − start as a flat float32 vector in
:mod:`federation.parameters` order, ready for clipping and lattice encoding.

- :class:`SGDTrainer`: FedAvg local epochs of minibatch SGD (optionally with momentum and weight
  decay). Batch order comes from the public round seed and the client id: reproducible, and
  nothing secret depends on it.
- :class:`DPSGDTrainer`: sample-level DP-SGD through :mod:`privacy.dpsgd` (Opacus, Poisson
  sampling at the exact rate, explicit RDP accountant). Its ``privacy_events(num_samples)`` are
  what the ledger must charge BEFORE ``train`` runs; the sampling and noise generators come from
  the OS CSPRNG, never from the public round seed (the server knows that seed).

Both accept any user ``nn.Module`` (the model template is copied once; its weights are replaced
by ``start`` at every call) and any loss with mean reduction. FedP3's pruned training passes
``keep_masks`` (parameter name -> bool mask of kept entries, from
``privacy.fedp3.prune_for_client``): pruned entries stay exactly zero through training
(:mod:`federation.fedp3_training` wires the whole FedP3 client step).
LoCoDL, which keeps client state across rounds, lives in :mod:`federation.locodl_clients`.
"""

from __future__ import annotations

import copy
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from federation.datasets import ClientData, Examples
from federation.learning_errors import TrainingError
from federation.parameters import ParameterLayout, flatten_parameters, load_parameters
from secagg.context import encode_parts

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ClientInput = ClientData | DataLoader

_BATCH_ORDER_LABEL = "fedvault/federation/batch-order"


@dataclass(frozen=True)
class TrainResult:
    """One client's local training outcome.

    ``update``: (d,) float32, Δ = trained − start (float64 from the LoCoDL client, whose exact
    convergence needs it). ``num_samples``: local examples (the FedAvg
    weight). ``loss``: mean training loss over the local steps (NaN when no step saw data).
    ``steps``: optimizer steps taken. ``events``: privacy events this training incurred (for the
    ledger's "dp-sgd" stream; empty for non-private training).
    """

    update: np.ndarray
    num_samples: int
    loss: float
    steps: int
    events: tuple[Any, ...] = ()


def batch_order_seed(round_seed: bytes, client_id: int) -> int:
    """A 63-bit torch seed for the client's batch order, from the PUBLIC round seed and its id.

    Only for randomness that may be public (which minibatch comes first); DP sampling and noise
    never use it.
    """
    if not isinstance(round_seed, bytes | bytearray) or len(round_seed) == 0:
        raise TrainingError("round_seed must be non-empty bytes")
    if isinstance(client_id, bool) or not isinstance(client_id, int | np.integer) or client_id < 0:
        raise TrainingError(f"client_id must be an int >= 0, got {client_id!r}")
    digest = hashlib.sha256(encode_parts(_BATCH_ORDER_LABEL, bytes(round_seed), int(client_id))).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _tensors(data: Examples) -> tuple[torch.Tensor, torch.Tensor]:
    # Copies: the dataset arrays are read-only and torch wants writable memory.
    return torch.tensor(data.features, dtype=torch.float32), torch.tensor(data.labels, dtype=torch.long)


def as_loader(
    data: ClientInput, batch_size: int, generator: torch.Generator | None = None, *, shuffle: bool = True
) -> DataLoader:
    """``data`` as a DataLoader: a user's loader is returned as is; examples are batched (and
    shuffled with ``generator`` when ``shuffle``)."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Examples):
        if data.num_samples == 0:
            raise TrainingError("the client has no training examples")
        return DataLoader(TensorDataset(*_tensors(data)), batch_size=batch_size, shuffle=shuffle, generator=generator)
    raise TrainingError(f"client data must be ClientData or a torch DataLoader, got {type(data).__name__}")


def num_examples(data: ClientInput) -> int:
    """How many training examples ``data`` holds (a DataLoader's dataset must have a length)."""
    if isinstance(data, DataLoader):
        return _dataset_size(data)
    if isinstance(data, Examples):
        return data.num_samples
    raise TrainingError(f"client data must be ClientData or a torch DataLoader, got {type(data).__name__}")


def _dataset_size(loader: DataLoader) -> int:
    try:
        return len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TrainingError("the DataLoader's dataset must have a length (a map-style dataset)") from None


def _mask_tensors(model: nn.Module, keep_masks: Mapping[str, np.ndarray] | None) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, float mask) pairs, validated against the model's parameter names and shapes."""
    if not keep_masks:
        return []
    parameters = dict(model.named_parameters())
    pairs = []
    for name, mask in keep_masks.items():
        if name not in parameters:
            raise TrainingError(f"keep_masks names {name!r}, which the model does not have")
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != tuple(parameters[name].shape):
            raise TrainingError(f"mask for {name!r} must be bool of shape {tuple(parameters[name].shape)}")
        pairs.append((parameters[name], torch.from_numpy(mask.astype(np.float32))))
    return pairs


def _apply_masks(pairs: Iterable[tuple[nn.Parameter, torch.Tensor]]) -> None:
    with torch.no_grad():
        for parameter, mask in pairs:
            parameter.mul_(mask)


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise TrainingError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TrainingError(f"{name} must be an int >= 1, got {value!r}")
    return value


class LocalTrainer(ABC):
    """A local training procedure over a private copy of a model template."""

    def __init__(self, model: nn.Module, loss: LossFunction | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TrainingError(f"model must be a torch nn.Module, got {type(model).__name__}")
        self._model = copy.deepcopy(model)
        self._layout = ParameterLayout.of(self._model)
        self._loss: LossFunction = loss if loss is not None else nn.functional.cross_entropy

    @property
    def dimension(self) -> int:
        """d, the length of ``start`` and of ``TrainResult.update``."""
        return self._layout.size

    @property
    def layout(self) -> ParameterLayout:
        """Names, shapes and offsets of the parameters inside ``start`` and ``update``."""
        return self._layout

    def privacy_events(self, num_samples: int) -> tuple[Any, ...]:
        """Events ``train`` will incur on a client with ``num_samples`` examples; charge them
        to the ledger before training. Non-private trainers incur none."""
        return ()

    def _start(self, start: np.ndarray, keep_masks: Mapping[str, np.ndarray] | None):
        start = np.asarray(start)
        load_parameters(self._model, start.astype(np.float32, copy=False))
        pairs = _mask_tensors(self._model, keep_masks)
        _apply_masks(pairs)  # the received pruned model is already zero there; make sure
        return flatten_parameters(self._model), pairs

    def _result(self, initial: np.ndarray, num_samples: int, losses: list[float], steps: int,
                events: tuple[Any, ...] = ()) -> TrainResult:
        update = flatten_parameters(self._model) - initial
        if not np.all(np.isfinite(update)):
            raise TrainingError("local training diverged (non-finite parameters); lower the learning rate")
        loss = float(np.mean(losses)) if losses else math.nan
        return TrainResult(update.astype(np.float32), int(num_samples), loss, int(steps), events)

    @abstractmethod
    def train(
        self,
        start: np.ndarray,
        data: ClientInput,
        round_seed: bytes,
        *,
        client_id: int = 0,
        keep_masks: Mapping[str, np.ndarray] | None = None,
    ) -> TrainResult:
        """Train from ``start`` ((d,) float) on ``data``; see the module docstring."""


@dataclass(frozen=True)
class SGDConfig:
    """FedAvg local training: ``epochs`` passes of minibatch SGD with ``batch_size`` examples."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_count(self.epochs, "epochs")
        _check_count(self.batch_size, "batch_size")
        _check_positive(self.learning_rate, "learning_rate")
        if not (0.0 <= self.momentum < 1.0):
            raise TrainingError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            raise TrainingError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")


class SGDTrainer(LocalTrainer):
    """FedAvg's local update (McMahan et al., AISTATS 2017): E epochs of minibatch SGD."""

    def __init__(self, model: nn.Module, config: SGDConfig = SGDConfig(), loss: LossFunction | None = None) -> None:
        super().__init__(model, loss)
        if not isinstance(config, SGDConfig):
            raise TrainingError(f"config must be an SGDConfig, got {type(config).__name__}")
        self.config = config

    def train(
        self,
        start: np.ndarray,
        data: ClientInput,
        round_seed: bytes,
        *,
        client_id: int = 0,
        keep_masks: Mapping[str, np.ndarray] | None = None,
    ) -> TrainResult:
        generator = torch.Generator().manual_seed(batch_order_seed(round_seed, client_id))
        loader = as_loader(data, self.config.batch_size, generator)
        initial, masks = self._start(start, keep_masks)
        optimizer = torch.optim.SGD(
            self._model.parameters(), lr=self.config.learning_rate,
            momentum=self.config.momentum, weight_decay=self.config.weight_decay,
        )
        self._model.train()
        losses: list[float] = []
        steps = 0
        for _ in range(self.config.epochs):
            for inputs, targets in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = self._loss(self._model(inputs), targets)
                if not torch.isfinite(loss):
                    raise TrainingError(f"non-finite training loss at step {steps}; lower the learning rate")
                loss.backward()
                optimizer.step()
                _apply_masks(masks)
                losses.append(float(loss.detach()))
                steps += 1
        return self._result(initial, _dataset_size(loader), losses, steps)


@dataclass(frozen=True)
class DPSGDConfig:
    """Sample-level DP-SGD: ``epochs`` of Poisson-sampled steps with expected batch
    ``expected_batch_size`` (capped at the client's size), per-example clip ``max_grad_norm``,
    noise multiplier σ; ``delta`` is the δ of the Opacus ε reported for cross-checking.

    ``noise_multiplier=None`` calibrates σ per client (its q and steps depend on its size) so
    that ``rounds`` rounds of its DP-SGD are (``record_epsilon``, ``delta``)-DP at the record
    level (``privacy.dpsgd.calibrate_dp_sgd_noise``)."""

    epochs: int = 1
    expected_batch_size: int = 32
    learning_rate: float = 0.1
    momentum: float = 0.0
    noise_multiplier: float | None = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    record_epsilon: float | None = None
    rounds: int = 1

    def __post_init__(self) -> None:
        _check_count(self.epochs, "epochs")
        _check_count(self.expected_batch_size, "expected_batch_size")
        _check_positive(self.learning_rate, "learning_rate")
        _check_count(self.rounds, "rounds")
        if self.noise_multiplier is None:
            if self.record_epsilon is None:
                raise TrainingError("a calibrated noise multiplier (None) needs record_epsilon")
            _check_positive(self.record_epsilon, "record_epsilon")
        else:
            _check_positive(self.noise_multiplier, "noise_multiplier")
        _check_positive(self.max_grad_norm, "max_grad_norm")
        if not (0.0 <= self.momentum < 1.0):
            raise TrainingError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (0.0 < self.delta < 1.0):
            raise TrainingError(f"delta must be in (0, 1), got {self.delta!r}")


class DPSGDTrainer(LocalTrainer):
    """DP-SGD inside the client (Abadi et al., CCS 2016) via ``privacy.dpsgd.train_dp_sgd``.

    The model must be one Opacus supports (no batch norm); the built-in models are.
    """

    def __init__(self, model: nn.Module, config: DPSGDConfig = DPSGDConfig(), loss: LossFunction | None = None) -> None:
        super().__init__(model, loss)
        if not isinstance(config, DPSGDConfig):
            raise TrainingError(f"config must be a DPSGDConfig, got {type(config).__name__}")
        self.config = config

    def plan(self, num_samples: int):
        """The ``privacy.dpsgd.DpSgdPlan`` (q = B/N, steps = ⌈epochs·N/B⌉) for a client of that size."""
        from privacy.dpsgd import plan_dp_sgd

        size = _check_count(num_samples, "num_samples")
        batch = min(self.config.expected_batch_size, size)
        sigma = self.config.noise_multiplier
        if sigma is None:
            from privacy.dpsgd import calibrate_dp_sgd_noise

            shape = plan_dp_sgd(size, 1.0, expected_batch_size=batch, epochs=self.config.epochs)
            sigma = calibrate_dp_sgd_noise(shape.sample_rate, shape.steps, self.config.rounds,
                                           self.config.record_epsilon, self.config.delta)
        return plan_dp_sgd(size, sigma, expected_batch_size=batch, epochs=self.config.epochs)

    def privacy_events(self, num_samples: int) -> tuple[Any, ...]:
        return (self.plan(num_samples).event,)

    def train(
        self,
        start: np.ndarray,
        data: ClientInput,
        round_seed: bytes,
        *,
        client_id: int = 0,
        keep_masks: Mapping[str, np.ndarray] | None = None,
    ) -> TrainResult:
        from privacy.dpsgd import train_dp_sgd

        batch_order_seed(round_seed, client_id)  # validates the arguments like the other trainers
        if isinstance(data, Examples):
            if data.num_samples == 0:
                raise TrainingError("the client has no training examples")
            dataset: Any = TensorDataset(*_tensors(data))
        elif isinstance(data, DataLoader):
            dataset = data
        else:
            raise TrainingError(f"client data must be ClientData or a torch DataLoader, got {type(data).__name__}")
        num_samples = len(dataset.dataset) if isinstance(dataset, DataLoader) else len(dataset)
        plan = self.plan(num_samples)
        initial, masks = self._start(start, keep_masks)
        optimizer = torch.optim.SGD(self._model.parameters(), lr=self.config.learning_rate, momentum=self.config.momentum)
        if masks:
            # Re-zero pruned entries after every private step (noise would otherwise fill them).
            optimizer.register_step_post_hook(lambda *_: _apply_masks(masks))
        result = train_dp_sgd(
            self._model, optimizer, dataset, plan,
            max_grad_norm=self.config.max_grad_norm, delta=self.config.delta, criterion=self._loss,
        )
        losses = [] if math.isnan(result.mean_loss) else [result.mean_loss]
        return self._result(initial, num_samples, losses, plan.steps, (result.event,))


@dataclass(frozen=True)
class Evaluation:
    """Accuracy (fraction in [0, 1]) and mean cross-entropy loss over ``num_samples`` examples."""

    accuracy: float
    loss: float
    num_samples: int


def evaluate(
    model: nn.Module,
    data: Examples | DataLoader,
    parameters: np.ndarray | None = None,
    *,
    batch_size: int = 1024,
    loss: LossFunction | None = None,
) -> Evaluation:
    """Accuracy and loss of ``model`` (with ``parameters`` loaded first, if given) on ``data``.

    The model is evaluated in eval mode under ``torch.no_grad``; a copy is used when parameters
    are given, so the caller's model is left untouched.
    """
    if not isinstance(model, nn.Module):
        raise TrainingError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if parameters is not None:
        model = copy.deepcopy(model)
        load_parameters(model, np.asarray(parameters))
    loss_fn = loss if loss is not None else nn.functional.cross_entropy
    loader = as_loader(data, _check_count(batch_size, "batch_size"), shuffle=False) if isinstance(data, Examples) else data
    if not isinstance(loader, DataLoader):
        raise TrainingError(f"data must be Examples or a DataLoader, got {type(data).__name__}")
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for inputs, targets in loader:
            logits = model(inputs)
            loss_sum += float(loss_fn(logits, targets)) * int(targets.shape[0])
            correct += int((logits.argmax(dim=1) == targets).sum())
            total += int(targets.shape[0])
    model.train(was_training)
    if total == 0:
        raise TrainingError("cannot evaluate on an empty dataset")
    return Evaluation(correct / total, loss_sum / total, total)
