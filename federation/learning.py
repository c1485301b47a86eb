"""A client's local learning: its data shard, the run's model architecture, and the run's trainer."""

from __future__ import annotations

import numpy as np

from federation.config import RunConfig
from federation.evaluation import data_for, model_for
from federation.trainers import (
    DPSGDConfig, DPSGDTrainer, LocalTrainer, LossFunction, SGDConfig, SGDTrainer, TrainResult, num_examples,
)


def trainer_for(config: RunConfig, model, loss: LossFunction | None = None) -> LocalTrainer:
    """The run's local trainer over a copy of ``model`` (``loss``: default cross-entropy)."""
    if config.trainer == "dpsgd":
        return DPSGDTrainer(model, DPSGDConfig(
            epochs=config.local_epochs, expected_batch_size=config.batch_size,
            learning_rate=config.learning_rate, noise_multiplier=config.dpsgd_noise_multiplier,
            delta=config.delta, record_epsilon=config.record_budget, rounds=config.rounds), loss=loss)
    return SGDTrainer(model, SGDConfig(epochs=config.local_epochs, batch_size=config.batch_size,
                                       learning_rate=config.learning_rate), loss=loss)


class LocalLearner:
    """Trains client ``client_id``'s shard from a global parameter vector."""

    keeps_state = False  # no state across rounds (LoCoDL's learner keeps some: federation.locodl_run)

    def __init__(self, client_id: int, trainer: LocalTrainer, data) -> None:
        self.client_id = client_id
        self.trainer = trainer
        self.data = data

    @classmethod
    def for_client(cls, config: RunConfig, client_id: int) -> LocalLearner:
        data = data_for(config)
        return cls(client_id, trainer_for(config, model_for(config, data)), data.clients[client_id])

    @property
    def num_samples(self) -> int:
        return num_examples(self.data)

    def privacy_events(self) -> tuple:
        """Sample-level events (DP-SGD) one round of training incurs; empty for plain SGD."""
        return self.trainer.privacy_events(self.num_samples)

    def train(self, global_parameters: np.ndarray, round_seed: bytes) -> TrainResult:
        return self.trainer.train(global_parameters, self.data, round_seed, client_id=self.client_id)
