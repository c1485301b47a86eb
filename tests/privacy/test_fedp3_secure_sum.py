"""LDP-FedP3 through real SecAgg+: one secure sum per layer group, dropouts included.

The clients' uploads are integer vectors (as lattice coordinates are); each group's senders run
their own SecAgg+ round (secagg.simulate: real clients and server exchanging serialized
messages), and the server averages what the unmasked per-group sums give it. The result must be
exactly the plain average over each group's surviving senders.
"""

import numpy as np
import torch
from torch import nn

from privacy.fedp3 import aggregate_round, assign_round, average_group_sums, group_denominators, layer_groups
from secagg.simulate import run_secure_sum
from secagg.stages import MASKED_INPUT

BITS = 24


def wrap(z: np.ndarray) -> np.ndarray:
    return (z % (1 << BITS)).astype(np.uint32)


def centered(v: np.ndarray) -> np.ndarray:
    z = v.astype(np.int64)
    return np.where(z >= 1 << (BITS - 1), z - (1 << BITS), z)


def test_per_group_secure_sums_average_exactly_over_surviving_senders():
    torch.manual_seed(0)  # test-only model
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(),
                          nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    layout = layer_groups(model)
    assignment = assign_round("OPU2", range(10, 18), layout.body_count)  # 4 owners per body group
    rng = np.random.default_rng(1)  # test-only uploads
    uploads = {
        c: {g: rng.integers(-5000, 5000, layout.groups[g].size) for g in assignment.uploaded_by(c)}
        for c in assignment.client_ids
    }
    dropped_client = 13  # owns body groups 1 and 2, and sends the head
    sums, survivors = {}, {}
    for group in range(layout.body_count + 1):
        senders = assignment.senders(group)
        n = len(senders)
        result = run_secure_sum(
            {c: wrap(uploads[c][group]) for c in senders},
            BITS,
            neighbours_k=n - 1,
            threshold=n // 2 + 1,
            dropouts={MASKED_INPUT: {dropped_client} & set(senders)},
            round_index=group,
        )
        sums[group] = centered(result.sum)
        survivors[group] = set(result.survivors)
    assert survivors[1] == set(assignment.senders(1)) - {dropped_client}
    assert survivors[0] == set(assignment.senders(0))

    means = average_group_sums(sums, group_denominators(assignment, "mean", survivors), layout)
    for group in range(layout.body_count + 1):
        alive = sorted(survivors[group])
        plain = np.mean(np.stack([uploads[c][group] for c in alive]).astype(np.float64), axis=0)
        np.testing.assert_array_equal(means[group], plain)

    state = model.state_dict()
    new_state = aggregate_round(state, layout, assignment, sums, survivors=survivors)
    for group in layout.groups:
        moved = layout.group_vector(new_state, group.index) - layout.group_vector(state, group.index)
        np.testing.assert_allclose(moved, means[group.index], rtol=1e-6, atol=1e-3)
