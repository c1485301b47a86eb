"""The FedP3 client step: pruned entries stay pruned, only owned groups and the head go up."""

import numpy as np
import pytest

from federation.datasets import load_dataset
from federation.fedp3_training import state_to_vector, train_fedp3_client, vector_to_state
from federation.learning_errors import TrainingError
from federation.models import MLP
from federation.parameters import ParameterLayout, flatten_parameters
from federation.splits import federate
from federation.trainers import SGDConfig, SGDTrainer
from privacy.fedp3 import assign_round, keep_ratio_for_capacity, layer_groups, prune_for_client

ROUND_SEED = bytes(range(32))


@pytest.fixture(scope="module")
def setting():
    data = federate(load_dataset("digits", seed=0), 4, split="iid", seed=0)
    model = MLP(data.input_shape, 10, hidden=(32, 32))
    groups = layer_groups(model)  # body groups 0, 1 and the head 2
    assignment = assign_round("LowerB", range(4), groups.body_count)
    return data, model, groups, assignment


def test_client_uploads_only_its_owned_groups_and_head_with_pruned_entries_untouched(setting):
    data, model, groups, assignment = setting
    client = data.clients[3]
    owned = assignment.owned_by(3)
    ratio = keep_ratio_for_capacity(groups, owned, 0.6)
    pruned = prune_for_client(model.state_dict(), groups, owned, ratio)
    trainer = SGDTrainer(model, SGDConfig(epochs=1, learning_rate=0.1))
    result = train_fedp3_client(
        trainer, pruned, groups, assignment.uploaded_by(3), client, ROUND_SEED, client_id=3, clip_norm=0.5,
    )
    assert set(result.upload.vectors) == set(assignment.uploaded_by(3)) == owned | {groups.head_index}
    total = np.sqrt(sum(float(v @ v) for v in result.upload.vectors.values()))
    assert total <= 0.5 * (1 + 1e-9)
    # Pruned weights of the non-owned body group never moved: the update is zero there.
    update = vector_to_state(result.training.update, trainer.layout)
    assert pruned.masks  # something was pruned
    for name, mask in pruned.masks.items():
        assert np.all(update[name][~mask] == 0.0)
        assert np.any(update[name][mask] != 0.0)
    # Uploaded vectors are the (jointly clipped) update of those groups.
    head = groups.head_index
    expected = groups.group_vector(update, head)
    scale = result.upload.vectors[head] @ expected / (expected @ expected)
    assert np.allclose(result.upload.vectors[head], scale * expected, atol=1e-9)


def test_state_vector_round_trip_matches_flatten(setting):
    _, model, _, _ = setting
    layout = ParameterLayout.of(model)
    vector = state_to_vector(model.state_dict(), layout)
    assert np.array_equal(vector, flatten_parameters(model))
    restored = vector_to_state(vector, layout)
    assert all(np.array_equal(restored[name], model.state_dict()[name].numpy()) for name in layout.names)
    with pytest.raises(TrainingError, match="no parameter"):
        state_to_vector({}, layout)
    with pytest.raises(TrainingError, match="shape"):
        vector_to_state(vector[:-1], layout)
