"""The server's model: a flat float32 parameter vector, the update step, and test evaluation."""

from __future__ import annotations

import functools

import numpy as np
import torch

from torch.utils.data import DataLoader

from federation.config import CUSTOM, RunConfig
from federation.datasets import Examples, FederatedDataset
from federation.errors import ConfigError
from federation.models import build_model
from federation.parameters import flatten_parameters, load_parameters
from federation.splits import load_federated
from federation.trainers import LossFunction, evaluate


@functools.lru_cache(maxsize=4)
def federated_data(dataset: str, clients: int, split: str, alpha: float, seed: int) -> FederatedDataset:
    """The run's data split, identical in every process that asks with the same settings."""
    return load_federated(dataset, clients, split=split, alpha=alpha, seed=seed)


def data_for(config: RunConfig) -> FederatedDataset:
    if config.dataset == CUSTOM:
        raise ConfigError("this run trains a user's workload (dataset 'custom'): pass the same "
                          "federation.workload.Workload through the Python API")
    return federated_data(config.dataset, config.clients, config.split, config.dirichlet_alpha, config.seed)


def model_for(config: RunConfig, data: FederatedDataset) -> torch.nn.Module:
    """The run's architecture with the run's initial weights (seeded: every process agrees)."""
    return build_model(config.model, data.input_shape, data.num_classes, seed=config.seed)


class GlobalModel:
    """θ_t held by the server as a module plus its flat view, evaluated on ``test``."""

    def __init__(self, module: torch.nn.Module, test: Examples | DataLoader, loss: LossFunction | None = None) -> None:
        self.module = module
        self.test = test
        self.loss = loss

    @classmethod
    def for_config(cls, config: RunConfig) -> GlobalModel:
        data = data_for(config)
        return cls(model_for(config, data), data.test)

    @property
    def parameter_count(self) -> int:
        return int(self.flat().size)

    def flat(self) -> np.ndarray:
        """(d,) float32 copy of the parameters."""
        return flatten_parameters(self.module).astype(np.float32)

    def load_flat(self, vector: np.ndarray) -> None:
        load_parameters(self.module, np.asarray(vector, dtype=np.float32))

    def apply_update(self, mean_update: np.ndarray, server_learning_rate: float) -> None:
        """θ ← θ + η_s · mean Δ (Δ = local − global, so this is FedAvg at η_s = 1)."""
        self.load_flat(self.flat() + np.float32(server_learning_rate) * np.asarray(mean_update, dtype=np.float32))

    def evaluate(self) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) on the global test set."""
        result = evaluate(self.module, self.test, loss=self.loss)
        return result.accuracy, result.loss
