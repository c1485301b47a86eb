"""What the unlearning bench measures on each model of a scenario (original, unlearned, oracles),
and the gaps between them.

Per model: test accuracy; the attack's success (backdoor: triggered test inputs read as the
target, over the test examples not already of the target class; label flip: test examples of
the source class read as the target; an honest heavy client has no attack: None); accuracy on
the test examples of the removed client's dominant classes (its most frequent labels covering
half its clean examples, at most three: ``unlearning_scenarios.dominant_classes``); and the
loss-threshold membership-inference AUC on the client's clean examples, against class-matched
non-members from the test set (``unlearning.membership``) and, for reference, against the whole
test set (the confounded score).

Gaps are in points (×100), unlearned minus retrained, signed: above 0 the unlearned model keeps
more of that quantity than retraining. For an honest heavy client's dominant classes "above" is
under-removal and "below" over-removal; for a flipper's source class the signs swap (its data
lowered that accuracy). Distance: ‖w − w_oracle‖ / ‖w_original − w_oracle‖ (1 = no closer than
before unlearning, 0 = the oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.unlearning_scenarios import dominant_classes
from federation.backdoor import backdoor_for, client_split_for
from federation.config import RunConfig
from federation.evaluation import data_for, model_for
from federation.label_flip import label_flip_for
from federation.parameters import load_parameters
from unlearning.membership import class_matched_membership_auc
from unlearning.verification import accuracy, backdoor_success_rate, membership_inference_auc

POINTS = 100.0


@dataclass(frozen=True)
class ModelMetrics:
    test_accuracy: float
    dominant_accuracy: float
    attack_success: float | None
    membership_auc: float  # class-matched non-members
    membership_auc_unmatched: float  # the whole test set as non-members (confounded by class)


class ScenarioEvaluator:
    """Evaluates flat parameter vectors of one run's architecture on its data."""

    def __init__(self, config: RunConfig, client_id: int, *, seed: int = 0) -> None:
        data = data_for(config)
        self.config = config
        self.module = model_for(config, data)
        self.test = (torch.tensor(np.asarray(data.test.features)), torch.tensor(np.asarray(data.test.labels)))
        clean = client_split_for(config, client_id)
        self.client = (torch.tensor(np.asarray(clean.features)), torch.tensor(np.asarray(clean.labels)))
        self.dominant = dominant_classes(clean.labels)
        mask = torch.isin(self.test[1], torch.tensor(self.dominant))
        self.dominant_test = (self.test[0][mask], self.test[1][mask])
        self.backdoor = backdoor_for(config)
        self.flip = label_flip_for(config, data.num_classes)
        self.seed = seed

    def _load(self, parameters: np.ndarray) -> torch.nn.Module:
        load_parameters(self.module, np.asarray(parameters, dtype=np.float32))
        return self.module

    def _attack_success(self, model: torch.nn.Module) -> float | None:
        if self.backdoor is not None:
            return backdoor_success_rate(model, *self.test, self.backdoor.stamp, self.backdoor.target_label)
        if self.flip is not None:
            with torch.no_grad():
                predictions = model.eval()(self.test[0]).argmax(dim=1).numpy()
            return self.flip.success(predictions, self.test[1].numpy())
        return None

    def evaluate(self, parameters: np.ndarray) -> ModelMetrics:
        model = self._load(parameters)
        return ModelMetrics(
            test_accuracy=accuracy(model, *self.test),
            dominant_accuracy=accuracy(model, *self.dominant_test),
            attack_success=self._attack_success(model),
            membership_auc=class_matched_membership_auc(model, self.client, self.test, seed=self.seed),
            membership_auc_unmatched=membership_inference_auc(model, self.client, self.test))


def relative_distance(parameters: np.ndarray, oracle: np.ndarray, original: np.ndarray) -> float:
    """‖w − w_oracle‖ / ‖w_original − w_oracle‖."""
    oracle = np.asarray(oracle, dtype=np.float64)
    reference = float(np.linalg.norm(np.asarray(original, dtype=np.float64) - oracle))
    return float(np.linalg.norm(np.asarray(parameters, dtype=np.float64) - oracle)) / max(reference, 1e-30)


def gaps(model: ModelMetrics, oracle: ModelMetrics) -> dict[str, float | None]:
    """Signed gaps in points, model minus oracle."""
    attack = None
    if model.attack_success is not None and oracle.attack_success is not None:
        attack = POINTS * (model.attack_success - oracle.attack_success)
    return {"attack_gap": attack,
            "dominant_gap": POINTS * (model.dominant_accuracy - oracle.dominant_accuracy),
            "test_gap": POINTS * (model.test_accuracy - oracle.test_accuracy),
            "membership_gap": POINTS * (model.membership_auc - oracle.membership_auc)}
