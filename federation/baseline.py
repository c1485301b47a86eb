"""The non-private float32 FedAvg baseline: same data, model, trainer settings and schedule as a
run, but plain float32 updates averaged in the clear (no clipping, quantization, noise or masking).
It is the reference `fedvault run --baseline` and the utility benchmark report beside fedvault."""

from __future__ import annotations

import os

import numpy as np

from federation.config import RunConfig
from federation.evaluation import GlobalModel
from federation.learning import LocalLearner
from federation.workload import Workload


def run_float32_fedavg(config: RunConfig, workload: Workload | None = None) -> list[float]:
    """Test accuracy after each round (clients sampled with the run's rate; no dropouts), on the
    config's named data and model or on a user's ``workload``."""
    plain = config.replace(trainer="sgd")
    if workload is not None:
        model = workload.global_model()
        learners = [workload.learner(plain, c) for c in range(len(workload.clients))]
    else:
        model = GlobalModel.for_config(config)
        learners = [LocalLearner.for_client(plain, c) for c in range(config.clients)]
    sampling = np.random.default_rng(config.seed)
    accuracies = []
    for _ in range(config.rounds):
        cohort = [c for c in range(len(learners)) if sampling.random() < config.sample_rate]
        if cohort:
            start = model.flat()
            round_seed = os.urandom(32)
            updates = [learners[c].train(start, round_seed).update for c in cohort]
            model.apply_update(np.mean(updates, axis=0), config.server_learning_rate)
        accuracies.append(model.evaluate()[0])
    return accuracies
