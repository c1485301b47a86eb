"""Specification of the class-matched membership-inference score: non-members drawn with the
members' label distribution, so class difficulty cancels and only memorization moves the AUC."""

import numpy as np
import pytest
import torch

from federation.datasets import load_dataset
from unlearning.errors import UnlearningInputError
from unlearning.membership import class_matched_indices, class_matched_membership_auc
from unlearning.verification import membership_inference_auc


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small full-batch models train fastest on one thread; two threads on a loaded 2-core machine
    mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_non_members_follow_the_members_label_distribution():
    members = np.array([0] * 30 + [1] * 10 + [4] * 20)
    pool = np.repeat(np.arange(5), 40)
    rows = class_matched_indices(members, pool, seed=1)
    assert np.unique(rows).size == rows.size  # drawn without replacement
    counts = np.bincount(pool[rows], minlength=5)
    assert counts.tolist() == [30, 10, 0, 0, 20]
    # A pool short of a class shrinks the whole set, keeping the proportions.
    short = np.concatenate([np.repeat([0], 15), np.repeat([1, 4], 40)])
    counts = np.bincount(short[class_matched_indices(members, short, seed=1)], minlength=5)
    assert counts.tolist() == [15, 5, 0, 0, 10]
    other = class_matched_indices(members, pool, seed=2)
    assert not np.array_equal(class_matched_indices(members, pool, seed=1), other)
    with pytest.raises(UnlearningInputError, match=r"no example of class\(es\) \[4\]"):
        class_matched_indices(members, np.repeat([0, 1], 40), seed=0)


def _trained(features: torch.Tensor, labels: torch.Tensor, *, hidden: int = 0, steps: int = 100) -> torch.nn.Module:
    """Full-batch training: logistic regression (hidden 0) or a one-hidden-layer MLP."""
    torch.manual_seed(0)
    width = features.shape[1]
    model = torch.nn.Linear(width, 10) if not hidden else torch.nn.Sequential(
        torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
    return model


def test_a_model_that_never_saw_the_client_scores_one_half_only_when_classes_are_matched():
    data = load_dataset("digits", seed=0)
    features, labels = torch.tensor(data.train.features), torch.tensor(data.train.labels)
    seen = np.arange(labels.shape[0]) % 2 == 0
    model = _trained(features[seen], labels[seen])  # never sees the odd rows
    # A client of unseen examples, mostly of the class this model finds hardest (highest loss).
    unseen = np.flatnonzero(~seen)
    losses = torch.nn.functional.cross_entropy(model(features[unseen]), labels[unseen], reduction="none").detach()
    hardest = int(np.argmax([losses[labels[unseen] == c].mean() for c in range(10)]))
    of_class = labels[unseen].numpy() == hardest
    shuffle = np.random.default_rng(0).permutation  # the rows are ordered by writer: draw, never slice
    client_rows = np.concatenate([shuffle(unseen[of_class])[:50], shuffle(unseen[~of_class])[:10]])
    client = (features[client_rows], labels[client_rows])
    # Non-members: the test set, and the unseen rows the client does not hold (~100 per class).
    rest = np.setdiff1d(unseen, client_rows)
    pool = (torch.cat([torch.tensor(data.test.features), features[rest]]),
            torch.cat([torch.tensor(data.test.labels), labels[rest]]))
    matched = [class_matched_membership_auc(model, client, pool, seed=seed) for seed in range(5)]
    unmatched = membership_inference_auc(model, client, pool)
    assert abs(np.mean(matched) - 0.5) < 0.05
    assert unmatched < 0.40  # class difficulty alone reads as "not a member"
    # Memorization does move the matched score: a model fitted hard to the client's rows.
    memorizer = _trained(torch.cat([features[seen], client[0]]), torch.cat([labels[seen], client[1]]),
                         hidden=128, steps=300)
    assert class_matched_membership_auc(memorizer, client, pool, seed=0) > np.mean(matched) + 0.05
