"""Evidence that a client's contribution is gone: metrics comparing an unlearned model with the
retrained oracle (docs/ALGORITHMS.md §6.6).

Models are ``torch.nn.Module`` classifiers returning logits (N, classes); data are float feature
tensors (N, ...) with int64 labels (N,). Everything runs in eval mode under ``torch.no_grad`` and
restores the model's training flag afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from unlearning.errors import UnlearningInputError

DEFAULT_BATCH_SIZE = 1024


def _check_model(model: object) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise UnlearningInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_data(features: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(features, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise UnlearningInputError("features and labels must be torch tensors")
    if labels.ndim != 1 or features.ndim < 1 or features.shape[0] != labels.shape[0]:
        raise UnlearningInputError(
            f"features (N, ...) and labels (N,) disagree: {tuple(features.shape)} vs "
            f"{tuple(labels.shape)}")
    if features.shape[0] == 0:
        raise UnlearningInputError("the data set is empty")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise UnlearningInputError(f"labels must be integer class indices, got {labels.dtype}")
    return features, labels.long()


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UnlearningInputError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


@contextmanager
def _evaluating(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _logits(model: torch.nn.Module, features: torch.Tensor, batch_size: int) -> torch.Tensor:
    with _evaluating(model):
        return torch.cat([model(features[i:i + batch_size])
                          for i in range(0, features.shape[0], batch_size)])


def accuracy(model: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor, *,
             batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Fraction of examples whose arg-max logit is the label, in [0, 1]."""
    model = _check_model(model)
    features, labels = _check_data(features, labels)
    predictions = _logits(model, features, _check_batch_size(batch_size)).argmax(dim=1)
    return float((predictions == labels).double().mean())


def per_example_losses(model: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor, *,
                       batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Cross-entropy loss of each example, (N,) float64 nats."""
    model = _check_model(model)
    features, labels = _check_data(features, labels)
    logits = _logits(model, features, _check_batch_size(batch_size))
    losses = torch.nn.functional.cross_entropy(logits.double(), labels, reduction="none")
    return losses.numpy()


def membership_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUC of the loss-threshold membership-inference attack: the probability that a random member
    has a lower loss than a random non-member, ties counting ½.

    Yeom et al. (CSF 2018) loss attack, scored exactly by the Mann–Whitney rank statistic
    AUC = (R_members − n₁(n₁+1)/2)/(n₁n₀) with average ranks for ties. 0.5: the attacker cannot
    tell forgotten data from unseen data; 1.0: every member has a lower loss than every non-member.
    """
    members = np.asarray(member_losses, dtype=np.float64)
    nonmembers = np.asarray(nonmember_losses, dtype=np.float64)
    for name, values in (("member_losses", members), ("nonmember_losses", nonmembers)):
        if values.ndim != 1 or values.shape[0] == 0:
            raise UnlearningInputError(f"{name} must be a non-empty 1-D array, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise UnlearningInputError(f"{name} contains NaN or infinity")
    # Rank by −loss so that "member" is the high-score class.
    ranks = rankdata(np.concatenate([-members, -nonmembers]), method="average")
    n1, n0 = members.shape[0], nonmembers.shape[0]
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def membership_inference_auc(model: torch.nn.Module, forgotten: tuple[torch.Tensor, torch.Tensor],
                             held_out: tuple[torch.Tensor, torch.Tensor], *,
                             batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Loss-threshold MIA AUC of ``model`` on the forgotten client's data (members) against
    held-out data the model never trained on (non-members); see :func:`membership_auc`."""
    return membership_auc(per_example_losses(model, *forgotten, batch_size=batch_size),
                          per_example_losses(model, *held_out, batch_size=batch_size))


def backdoor_success_rate(model: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor,
                          trigger: Callable[[torch.Tensor], torch.Tensor], target_label: int, *,
                          batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Fraction of triggered inputs classified as ``target_label``, over the clean examples whose
    true label is not ``target_label`` (those say nothing about the backdoor).

    trigger: maps a batch of clean features (B, ...) to triggered features of the same shape.
    """
    model = _check_model(model)
    features, labels = _check_data(features, labels)
    if not callable(trigger):
        raise UnlearningInputError("trigger must be a callable features -> triggered features")
    if isinstance(target_label, bool) or not isinstance(target_label, int) or target_label < 0:
        raise UnlearningInputError(f"target_label must be a class index, got {target_label!r}")
    keep = labels != target_label
    if not bool(keep.any()):
        raise UnlearningInputError("every example already has the target label")
    clean = features[keep]
    triggered = trigger(clean)
    if not isinstance(triggered, torch.Tensor) or triggered.shape != clean.shape:
        raise UnlearningInputError("trigger must return a tensor of the same shape as its input")
    predictions = _logits(model, triggered, _check_batch_size(batch_size)).argmax(dim=1)
    return float((predictions == target_label).double().mean())


def flat_parameters(model: torch.nn.Module | np.ndarray | torch.Tensor) -> np.ndarray:
    """A model's parameters as one (d,) float64 vector (``parameters_to_vector`` order)."""
    if isinstance(model, torch.nn.Module):
        return torch.nn.utils.parameters_to_vector(model.parameters()).detach().double().numpy()
    if isinstance(model, torch.Tensor):
        model = model.detach().double().numpy()
    vector = np.asarray(model, dtype=np.float64)
    if vector.ndim != 1:
        raise UnlearningInputError(f"a parameter vector must be 1-D, got shape {vector.shape}")
    return vector


def relative_distance(unlearned: torch.nn.Module | np.ndarray, retrained: torch.nn.Module | np.ndarray
                      ) -> float:
    """‖w_u − w_r‖₂ / ‖w_r‖₂ between the unlearned and retrained parameters."""
    w_u, w_r = flat_parameters(unlearned), flat_parameters(retrained)
    if w_u.shape != w_r.shape:
        raise UnlearningInputError(f"parameter vectors differ in length: {w_u.shape} vs {w_r.shape}")
    reference = float(np.linalg.norm(w_r))
    if not math.isfinite(reference) or reference == 0.0:
        raise UnlearningInputError("the retrained parameters are zero or non-finite")
    return float(np.linalg.norm(w_u - w_r)) / reference


def prediction_divergence(model_a: torch.nn.Module, model_b: torch.nn.Module, features: torch.Tensor,
                          *, batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Mean total-variation distance between the two models' predictive distributions, in [0, 1]."""
    model_a, model_b = _check_model(model_a), _check_model(model_b)
    if not isinstance(features, torch.Tensor) or features.ndim < 1 or features.shape[0] == 0:
        raise UnlearningInputError("features must be a non-empty tensor (N, ...)")
    batch_size = _check_batch_size(batch_size)
    p = torch.softmax(_logits(model_a, features, batch_size).double(), dim=1)
    q = torch.softmax(_logits(model_b, features, batch_size).double(), dim=1)
    return float(0.5 * (p - q).abs().sum(dim=1).mean())


@dataclass(frozen=True)
class Backdoor:
    """A backdoor to test: ``trigger`` maps clean features to triggered ones; ``target_label`` is
    the class the attacker wants."""

    trigger: Callable[[torch.Tensor], torch.Tensor]
    target_label: int


@dataclass(frozen=True)
class ModelReport:
    """Removal evidence for one model. backdoor_success is None when no backdoor was given."""

    test_accuracy: float
    forgotten_accuracy: float
    membership_auc: float
    backdoor_success: float | None


@dataclass(frozen=True)
class VerificationReport:
    """The unlearned model against the retrained oracle (what ``fedvault unlearn --verify`` prints)."""

    unlearned: ModelReport
    retrained: ModelReport
    relative_distance: float
    forgotten_prediction_divergence: float


def model_report(model: torch.nn.Module, test: tuple[torch.Tensor, torch.Tensor],
                 forgotten: tuple[torch.Tensor, torch.Tensor],
                 held_out: tuple[torch.Tensor, torch.Tensor], backdoor: Backdoor | None = None, *,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> ModelReport:
    """Test accuracy, accuracy and MIA AUC on the forgotten data, and backdoor success on the
    clean test set (None without a backdoor)."""
    if backdoor is not None and not isinstance(backdoor, Backdoor):
        raise UnlearningInputError("backdoor must be a Backdoor(trigger, target_label) or None")
    success = None
    if backdoor is not None:
        success = backdoor_success_rate(model, *test, backdoor.trigger, backdoor.target_label,
                                        batch_size=batch_size)
    return ModelReport(
        test_accuracy=accuracy(model, *test, batch_size=batch_size),
        forgotten_accuracy=accuracy(model, *forgotten, batch_size=batch_size),
        membership_auc=membership_inference_auc(model, forgotten, held_out, batch_size=batch_size),
        backdoor_success=success)


def verify_unlearning(unlearned: torch.nn.Module, retrained: torch.nn.Module,
                      test: tuple[torch.Tensor, torch.Tensor],
                      forgotten: tuple[torch.Tensor, torch.Tensor],
                      held_out: tuple[torch.Tensor, torch.Tensor], backdoor: Backdoor | None = None,
                      *, batch_size: int = DEFAULT_BATCH_SIZE) -> VerificationReport:
    """Compare the unlearned model with the retrained oracle on every §6.6 metric.

    test: clean test set; forgotten: the deleted client's training data; held_out: data neither
    model trained on, of the same distribution (the MIA non-members).
    """
    return VerificationReport(
        unlearned=model_report(unlearned, test, forgotten, held_out, backdoor, batch_size=batch_size),
        retrained=model_report(retrained, test, forgotten, held_out, backdoor, batch_size=batch_size),
        relative_distance=relative_distance(unlearned, retrained),
        forgotten_prediction_divergence=prediction_divergence(unlearned, retrained, forgotten[0],
                                                              batch_size=batch_size))
