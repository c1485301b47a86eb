"""Local trainers: SGD and DP-SGD learn digits, updates are Δ = local − start, masks hold."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from federation.datasets import ClientData, load_dataset
from federation.learning_errors import ModelError, TrainingError
from federation.models import build_model
from federation.parameters import ParameterLayout, flatten_parameters
from federation.trainers import (
    DPSGDConfig,
    DPSGDTrainer,
    SGDConfig,
    SGDTrainer,
    batch_order_seed,
    evaluate,
)

ROUND_SEED = bytes(range(32))


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", seed=0)
    client = ClientData(data.train.features, data.train.labels, client_id=3)
    return data, client


def test_local_sgd_learns_digits_far_above_chance_in_a_few_epochs(digits):
    data, client = digits
    model = build_model("mlp", data.input_shape, 10, seed=0)
    start = flatten_parameters(model)
    before = evaluate(model, data.test, start)
    result = SGDTrainer(model, SGDConfig(epochs=3, batch_size=32, learning_rate=0.1)).train(start, client, ROUND_SEED, client_id=3)
    after = evaluate(model, data.test, start + result.update)
    assert before.accuracy < 0.3  # chance is 0.1
    assert after.accuracy > 0.85, after
    assert after.loss < before.loss
    assert result.num_samples == client.num_samples
    assert result.steps == 3 * int(np.ceil(client.num_samples / 32))
    assert result.update.dtype == np.float32 and result.events == ()
    # The template passed to the trainer was not modified.
    assert np.array_equal(flatten_parameters(model), start)


@pytest.mark.parametrize(
    ("name", "config"),
    [("logreg", SGDConfig(epochs=2, learning_rate=0.05)), ("cnn", SGDConfig(epochs=3, learning_rate=0.05, momentum=0.9))],
)
def test_other_models_also_learn(digits, name, config):
    data, client = digits
    model = build_model(name, data.input_shape, 10, seed=1)
    start = flatten_parameters(model)
    result = SGDTrainer(model, config).train(start, client, ROUND_SEED)
    assert evaluate(model, data.test, start + result.update).accuracy > 0.7


def test_batch_order_is_reproducible_from_round_seed_and_client_id(digits):
    data, client = digits
    small = ClientData(client.features[:200], client.labels[:200], client_id=0)
    model = build_model("logreg", data.input_shape, 10, seed=0)
    trainer = SGDTrainer(model, SGDConfig(epochs=1, batch_size=16))
    start = flatten_parameters(model)
    first = trainer.train(start, small, ROUND_SEED, client_id=1).update
    assert np.array_equal(first, trainer.train(start, small, ROUND_SEED, client_id=1).update)
    assert not np.array_equal(first, trainer.train(start, small, ROUND_SEED, client_id=2).update)
    assert not np.array_equal(first, trainer.train(start, small, bytes(32), client_id=1).update)
    assert batch_order_seed(ROUND_SEED, 1) != batch_order_seed(ROUND_SEED, 2)


def test_any_user_module_and_dataloader_are_accepted():
    torch.manual_seed(0)
    features = torch.randn(256, 5)
    labels = (features[:, 0] + features[:, 1] > 0).long()
    loader = DataLoader(TensorDataset(features, labels), batch_size=32, shuffle=True)
    user_model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    start = flatten_parameters(user_model)
    result = SGDTrainer(user_model, SGDConfig(epochs=5, learning_rate=0.5)).train(start, loader, ROUND_SEED)
    assert result.num_samples == 256
    assert evaluate(user_model, loader, start + result.update).accuracy > 0.9


def test_keep_masks_hold_pruned_entries_at_zero(digits):
    data, client = digits
    model = build_model("mlp", data.input_shape, 10, seed=0)
    layout = ParameterLayout.of(model)
    name = layout.names[0]
    mask = np.random.default_rng(0).random(layout.shapes[0]) < 0.5
    start = flatten_parameters(model)
    start[layout.slice_of(name)] *= mask.ravel()
    result = SGDTrainer(model, SGDConfig(epochs=1, momentum=0.9)).train(start, client, ROUND_SEED, keep_masks={name: mask})
    trained = (start + result.update)[layout.slice_of(name)].reshape(mask.shape)
    assert np.all(trained[~mask] == 0.0)
    assert np.any(trained[mask] != start[layout.slice_of(name)].reshape(mask.shape)[mask])
    with pytest.raises(TrainingError, match="does not have"):
        SGDTrainer(model).train(start, client, ROUND_SEED, keep_masks={"nope": mask})


def test_dp_sgd_learns_and_reports_the_event_it_charged(digits):
    pytest.importorskip("privacy.events", reason="privacy.events (H4a) is not in the tree yet")
    data, client = digits
    model = build_model("logreg", data.input_shape, 10, seed=0)
    start = flatten_parameters(model)
    trainer = DPSGDTrainer(model, DPSGDConfig(epochs=2, expected_batch_size=64, learning_rate=0.5,
                                              noise_multiplier=1.0, max_grad_norm=1.0))
    plan = trainer.plan(client.num_samples)
    assert plan.sample_rate == pytest.approx(64 / client.num_samples)
    assert plan.steps == int(np.ceil(2 * client.num_samples / 64))
    result = trainer.train(start, client, ROUND_SEED, client_id=3)
    assert result.steps == plan.steps and result.num_samples == client.num_samples
    assert evaluate(model, data.test, start + result.update).accuracy > 0.6
    assert result.events == trainer.privacy_events(client.num_samples) == (plan.event,)


def test_dp_sgd_keeps_pruned_entries_at_zero_despite_noise(digits):
    pytest.importorskip("privacy.events", reason="privacy.events (H4a) is not in the tree yet")
    data, client = digits
    model = build_model("logreg", data.input_shape, 10, seed=0)
    mask = np.zeros((10, 64), dtype=bool)
    mask[:, :32] = True
    start = flatten_parameters(model)
    start[:640] *= mask.ravel()
    trainer = DPSGDTrainer(model, DPSGDConfig(epochs=1, expected_batch_size=128, noise_multiplier=2.0))
    result = trainer.train(start, client, ROUND_SEED, keep_masks={"linear.weight": mask})
    trained = (start + result.update)[:640].reshape(10, 64)
    assert np.all(trained[~mask] == 0.0) and np.any(trained[mask] != 0.0)


def test_evaluate_matches_a_manual_count(digits):
    data, _ = digits
    model = build_model("logreg", data.input_shape, 10, seed=2)
    result = evaluate(model, data.test)
    with torch.no_grad():
        predictions = model(torch.tensor(data.test.features)).argmax(dim=1).numpy()
    assert result.accuracy == pytest.approx(np.mean(predictions == data.test.labels))
    assert result.num_samples == data.test.num_samples


def test_trainers_validate_inputs(digits):
    data, client = digits
    model = build_model("logreg", data.input_shape, 10)
    with pytest.raises(TrainingError, match="learning_rate"):
        SGDConfig(learning_rate=0.0)
    with pytest.raises(TrainingError, match="round_seed"):
        SGDTrainer(model).train(flatten_parameters(model), client, b"")
    with pytest.raises(ModelError, match="shape"):
        SGDTrainer(model).train(np.zeros(3, dtype=np.float32), client, ROUND_SEED)
    with pytest.raises(TrainingError, match="ClientData or a torch DataLoader"):
        SGDTrainer(model).train(flatten_parameters(model), [1, 2], ROUND_SEED)
    with pytest.raises(ModelError, match="NaN"):
        SGDTrainer(model).train(np.full(650, np.nan, dtype=np.float32), client, ROUND_SEED)
    def broken_loss(outputs, targets):
        return outputs.sum() * float("nan")
    with pytest.raises(TrainingError, match="non-finite training loss"):
        SGDTrainer(model, loss=broken_loss).train(flatten_parameters(model), client, ROUND_SEED)
