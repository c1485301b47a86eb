"""Class-matched membership inference: is a client's data still recognisable in a model?

The loss-threshold attack (``unlearning.verification.membership_auc``) scores members against
non-members. Comparing a client's examples with a whole test set confounds membership with class
difficulty: a client holding mostly an easy class scores "member" on any model, one holding a
hard class scores below 0.5, whether or not its data was ever trained on. Here the non-members
are drawn from a pool of unseen examples (the test set) with the members' label distribution,
so a model that never saw the members scores ≈ 0.5 and only memorization moves the score.

Assumption: the pool's examples of a class come from the same distribution as the members' of
that class (true for a stratified test split of the same data; not under feature skew, e.g.
FedProx Synthetic's per-client feature shift, where the score measures that shift too).
"""

from __future__ import annotations

import numpy as np
import torch

from unlearning.errors import UnlearningInputError
from unlearning.verification import DEFAULT_BATCH_SIZE, membership_auc, per_example_losses


def class_matched_indices(member_labels: np.ndarray, pool_labels: np.ndarray, *, seed: int) -> np.ndarray:
    """Rows of the pool forming a non-member set with the members' label distribution.

    member_labels (n,), pool_labels (N,): int class indices. The set is as large as the pool allows
    (at most n): M = min(n, min over the members' classes c of ⌊N_c / π_c⌋) with π_c the members'
    share of class c and N_c the pool's count; class c contributes round(π_c·M) rows, drawn
    without replacement by a generator seeded with ``seed``. Returns (k,) int64 sorted indices.
    Raises UnlearningInputError when the pool lacks a class the members hold.
    """
    members = np.asarray(member_labels)
    pool = np.asarray(pool_labels)
    for name, labels in (("member_labels", members), ("pool_labels", pool)):
        if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise UnlearningInputError(f"{name} must be a non-empty 1-D integer array, "
                                       f"got {labels.dtype} {labels.shape}")
    classes, counts = np.unique(members, return_counts=True)
    shares = counts / members.size
    available = np.array([np.count_nonzero(pool == c) for c in classes])
    lacking = classes[available == 0]
    if lacking.size:
        raise UnlearningInputError(f"the non-member pool has no example of class(es) {lacking.tolist()}")
    size = int(min(members.size, np.min(np.floor(available / shares))))
    rng = np.random.default_rng(seed)
    chosen = []
    for label, share, count in zip(classes, shares, available):
        take = min(int(count), int(round(share * size)))
        chosen.append(rng.choice(np.flatnonzero(pool == label), size=take, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def class_matched_membership_auc(model: torch.nn.Module, members: tuple[torch.Tensor, torch.Tensor],
                                 pool: tuple[torch.Tensor, torch.Tensor], *, seed: int = 0,
                                 batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Loss-threshold MIA AUC of ``model`` on ``members`` (features (n, ...), labels (n,)) against
    non-members drawn class-matched from ``pool`` (:func:`class_matched_indices`). 0.5: the
    members look like unseen examples of their classes."""
    rows = torch.as_tensor(class_matched_indices(members[1].numpy(), pool[1].numpy(), seed=seed))
    nonmembers = (pool[0][rows], pool[1][rows])
    return membership_auc(per_example_losses(model, *members, batch_size=batch_size),
                          per_example_losses(model, *nonmembers, batch_size=batch_size))
