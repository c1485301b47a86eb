"""The non-private float32 FedAvg baseline: same data, model, trainer settings and schedule as a
run, but plain float32 updates averaged in the clear (no clipping, quantization, noise or masking).
It is the reference `fedvault run --baseline` and the utility benchmark report beside fedvault."""

from __future__ import annotations

import os

import numpy as np

from federation.config import RunConfig
from federation.evaluation import GlobalModel
from federation.learning import LocalLearner


def run_float32_fedavg(config: RunConfig) -> list[float]:
    """Test accuracy after each round (clients sampled with the run's rate; no dropouts)."""
    model = GlobalModel.for_config(config)
    learners = [LocalLearner.for_client(config.replace(trainer="sgd"), c) for c in range(config.clients)]
    sampling = np.random.default_rng(config.seed)
    accuracies = []
    for _ in range(config.rounds):
        cohort = [c for c in range(config.clients) if sampling.random() < config.sample_rate]
        if cohort:
            start = model.flat()
            round_seed = os.urandom(32)
            updates = [learners[c].train(start, round_seed).update for c in cohort]
            model.apply_update(np.mean(updates, axis=0), config.server_learning_rate)
        accuracies.append(model.evaluate()[0])
    return accuracies
