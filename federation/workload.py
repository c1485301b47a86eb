"""A user's own model and data for a run, in place of ``RunConfig``'s named dataset and model.

``RunConfig`` names built-in data (digits, breast_cancer, mnist5k, synthetic) and models (logreg,
mlp, cnn). A :class:`Workload` brings anything else: any torch ``nn.Module`` (its current weights
are the run's initial model), one training input per client (a torch ``DataLoader`` over a
map-style dataset, or :class:`federation.datasets.ClientData`), and the server's test data::

    workload = Workload(model=MyNet(), clients=[loader_0, loader_1, ...], test=test_loader)
    with Repository.open("fedvault.db") as repository:
        coordinator = Coordinator(RunConfig(rounds=10), repository, key_directory=keys, workload=workload)
        summary = coordinator.run()

Everything else of the run is unchanged: clipping, lattice coding, exact integer noise, SecAgg+
over serialized messages in worker processes, storage, the ledger. The stored configuration
says ``dataset = model = "custom"`` (the workload's ``name`` goes into ``extra``); resuming such a
run needs the same workload again, checked against the stored parameter count.

Clients live in worker processes started with ``spawn``, so the workload is pickled once per
worker: define model classes, datasets and any loss function at module level (no lambdas or
local classes). The coordinator checks this up front and says what could not be pickled.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from federation.config import CUSTOM, RunConfig
from federation.datasets import ClientData, Examples
from federation.errors import ConfigError
from federation.trainers import ClientInput, num_examples

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class Workload:
    """``model``: the architecture and initial weights (copied; the caller's module is never
    changed). ``clients``: client i trains on ``clients[i]``. ``test``: what the server
    evaluates the global model on (``Examples`` or a ``DataLoader``). ``loss``: (logits,
    targets) -> mean loss, default cross-entropy; accuracy is argmax over the model's output.
    ``name``: a label stored with the run."""

    model: nn.Module
    clients: Sequence[ClientInput]
    test: Examples | DataLoader
    loss: LossFunction | None = None
    name: str = "custom"
    _checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise ConfigError(f"workload model must be a torch nn.Module, got {type(self.model).__name__}")
        if not any(True for _ in self.model.parameters()):
            raise ConfigError("workload model has no parameters to train")
        clients = tuple(self.clients)
        if len(clients) < 2:
            raise ConfigError(f"a workload needs at least 2 clients (a sum of one reveals it), got {len(clients)}")
        for client_id, data in enumerate(clients):
            if not isinstance(data, ClientData | DataLoader):
                raise ConfigError(f"workload client {client_id}: expected a DataLoader or ClientData, "
                                  f"got {type(data).__name__}")
            if num_examples(data) == 0:
                raise ConfigError(f"workload client {client_id} has no training examples")
        if not isinstance(self.test, Examples | DataLoader):
            raise ConfigError(f"workload test data must be Examples or a DataLoader, got {type(self.test).__name__}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("workload name must be a non-empty string")
        object.__setattr__(self, "clients", clients)
        object.__setattr__(self, "model", copy.deepcopy(self.model))

    @property
    def parameter_count(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def bind(self, config: RunConfig) -> RunConfig:
        """``config`` for this workload: one client per entry, dataset and model ``"custom"``.

        Raises:
            ConfigError: the config's trainer needs a built-in model (LoCoDL: logreg; FedP3: the
                layer groups of mlp or cnn).
        """
        if config.trainer == "locodl":
            raise ConfigError("trainer locodl needs the built-in logreg model (its objective is the convex "
                              "softmax regression); a custom workload trains with sgd or dpsgd")
        if config.trainer not in ("sgd", "dpsgd"):
            raise ConfigError(f"trainer {config.trainer} runs on the built-in models; a custom workload trains "
                              "with sgd or dpsgd")
        extra = {**config.extra, "workload": self.name, "workload_parameters": self.parameter_count}
        return config.replace(clients=len(self.clients), dataset=CUSTOM, model=CUSTOM, extra=extra)

    def check_matches(self, config: RunConfig) -> None:
        """A stored run's configuration was made with a workload of this shape (resume)."""
        if config.dataset != CUSTOM:
            raise ConfigError(f"the run trains the built-in {config.dataset!r} data; do not pass a workload")
        stored = config.extra.get("workload_parameters")
        if stored != self.parameter_count or config.clients != len(self.clients):
            raise ConfigError(f"the run was made with {config.clients} clients and a {stored}-parameter model; "
                              f"this workload has {len(self.clients)} clients and {self.parameter_count}")

    def check_picklable(self) -> None:
        """Fail early, with the reason, if the workload cannot travel to the worker processes."""
        if self._checked:
            return
        try:
            pickle.dumps(self)
        except Exception as error:  # noqa: BLE001 - pickle raises many types; all mean the same here
            raise ConfigError(f"the workload cannot be sent to the client worker processes ({type(error).__name__}: "
                              f"{error}); define its model class, dataset and loss at module level") from None
        object.__setattr__(self, "_checked", True)

    def global_model(self):
        """The server's model (a copy of the initial weights) evaluated on ``test``."""
        from federation.evaluation import GlobalModel

        return GlobalModel(copy.deepcopy(self.model), self.test, loss=self.loss)

    def learner(self, config: RunConfig, client_id: int):
        """Client ``client_id``'s local learner with the run's trainer settings."""
        from federation.learning import LocalLearner, trainer_for

        if not 0 <= client_id < len(self.clients):
            raise ConfigError(f"workload has no client {client_id}")
        return LocalLearner(client_id, trainer_for(config, self.model, loss=self.loss), self.clients[client_id])

    def initial_parameters(self) -> np.ndarray:
        from federation.parameters import flatten_parameters

        return flatten_parameters(self.model).astype(np.float32)
