"""Specification of the unlearning verification metrics."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from unlearning.errors import UnlearningInputError
from unlearning.verification import (
    Backdoor,
    accuracy,
    backdoor_success_rate,
    membership_auc,
    membership_inference_auc,
    per_example_losses,
    prediction_divergence,
    relative_distance,
    verify_unlearning,
)


def _linear(weight, bias=None):
    weight = torch.as_tensor(weight, dtype=torch.float32)
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else torch.as_tensor(bias))
    return layer


def test_auc_of_identical_loss_distributions_is_one_half():
    # 2000 vs 2000 draws of one distribution: AUC std = sqrt((n1+n0+1)/(12 n1 n0)) = 0.0091, so
    # |AUC − ½| < 0.05 is 5.5 std (false failure < 1e-7; the seed is fixed anyway).
    rng = np.random.default_rng(0)
    assert abs(membership_auc(rng.exponential(size=2000), rng.exponential(size=2000)) - 0.5) < 0.05


def test_auc_of_perfectly_separated_losses_is_one_and_reversed_is_zero():
    low, high = np.linspace(0.0, 1.0, 50), np.linspace(2.0, 3.0, 70)
    assert membership_auc(low, high) == 1.0
    assert membership_auc(high, low) == 0.0


def test_auc_counts_ties_as_one_half():
    assert membership_auc(np.ones(5), np.ones(9)) == 0.5
    assert membership_auc(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == pytest.approx(0.875, abs=1e-15)


def test_auc_equals_sklearn_roc_auc_with_members_as_positives():
    rng = np.random.default_rng(1)
    members = np.round(rng.normal(0.0, 1.0, size=301), 1)  # rounding creates ties
    nonmembers = np.round(rng.normal(0.4, 1.0, size=207), 1)
    expected = roc_auc_score(np.r_[np.ones(301), np.zeros(207)], -np.r_[members, nonmembers])
    assert membership_auc(members, nonmembers) == pytest.approx(expected, abs=1e-12)


def test_auc_refuses_empty_or_non_finite_losses():
    with pytest.raises(UnlearningInputError, match="non-empty"):
        membership_auc(np.array([]), np.ones(3))
    with pytest.raises(UnlearningInputError, match="NaN"):
        membership_auc(np.array([np.nan]), np.ones(3))


def test_accuracy_and_losses_of_a_known_linear_model():
    model = _linear([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    assert accuracy(model, features, labels, batch_size=3) == 0.75
    losses = per_example_losses(model, features, labels)
    expected = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(-2.0)),
                math.log1p(math.exp(2.0)), math.log1p(math.exp(-1.0))]
    np.testing.assert_allclose(losses, expected, rtol=1e-6)


def test_mia_auc_of_a_model_is_one_when_members_are_fit_and_nonmembers_are_not():
    model = _linear([[1.0, 0.0], [0.0, 1.0]])
    members = (torch.tensor([[5.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1]))
    nonmembers = (torch.tensor([[5.0, 0.0], [0.0, 5.0], [1.0, 0.0]]), torch.tensor([1, 0, 1]))
    assert membership_inference_auc(model, members, nonmembers) == 1.0


def _trigger(batch):
    triggered = batch.clone()
    triggered[:, 2] = 10.0
    return triggered


def test_backdoor_success_counts_triggered_inputs_sent_to_the_target_among_other_labels():
    # Class 2 fires only when feature 2 is large: the trigger. Clean examples of class 2 do not count.
    model = _linear([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    features = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    assert backdoor_success_rate(model, features, labels, _trigger, 2) == pytest.approx(2 / 3)
    assert backdoor_success_rate(model, features, labels, lambda x: x.clone(), 2) == 0.0


def test_relative_distance_of_vectors_and_modules():
    assert relative_distance(np.array([3.0, 4.0]), np.array([0.0, 5.0])) == pytest.approx(
        math.sqrt(10) / 5, rel=1e-15)
    a, b = _linear([[1.0, 1.0]]), _linear([[2.0, 2.0]])
    assert relative_distance(a, b) == pytest.approx(0.5, rel=1e-7)
    with pytest.raises(UnlearningInputError, match="zero"):
        relative_distance(np.ones(2), np.zeros(2))


def test_prediction_divergence_is_zero_for_equal_models_and_positive_otherwise():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a, b = _linear([[1.0, 0.0], [0.0, 1.0]]), _linear([[0.0, 1.0], [1.0, 0.0]])
    assert prediction_divergence(a, a, features) == 0.0
    expected = abs(torch.softmax(torch.tensor([1.0, 0.0]), 0)[0].item() - 0.5) * 2
    assert prediction_divergence(a, b, features) == pytest.approx(expected, rel=1e-6)


def test_verify_unlearning_reports_both_models_and_restores_training_mode():
    torch.manual_seed(0)
    unlearned = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    retrained = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    unlearned.train()
    generator = torch.Generator().manual_seed(1)

    def data(n):
        return torch.randn(n, 3, generator=generator), torch.randint(0, 3, (n,), generator=generator)

    test, forgotten, held_out = data(40), data(20), data(30)
    report = verify_unlearning(unlearned, retrained, test, forgotten, held_out, Backdoor(_trigger, 2))
    assert unlearned.training and retrained.training
    assert 0.0 <= report.unlearned.membership_auc <= 1.0
    assert report.retrained.backdoor_success is not None
    assert report.relative_distance > 0.0
    # Evaluation runs with dropout off, so a second verification gives the same numbers.
    again = verify_unlearning(unlearned, retrained, test, forgotten, held_out, Backdoor(_trigger, 2))
    assert again == report
    assert verify_unlearning(unlearned, retrained, test, forgotten, held_out).unlearned.backdoor_success is None


def test_bad_inputs_are_refused():
    model = _linear([[1.0, 0.0]])
    with pytest.raises(UnlearningInputError, match="disagree"):
        accuracy(model, torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(UnlearningInputError, match="integer"):
        accuracy(model, torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(UnlearningInputError, match="Module"):
        accuracy("model", torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
