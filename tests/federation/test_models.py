"""Models: forward shapes, deterministic construction, flat parameter vectors."""

import numpy as np
import pytest
import torch
from torch import nn

from federation.learning_errors import ModelError
from federation.models import MODEL_NAMES, build_model
from federation.parameters import ParameterLayout, flatten_parameters, load_parameters, parameter_count


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(("input_shape", "classes"), [((1, 8, 8), 10), ((1, 28, 28), 10)])
def test_models_map_flat_or_shaped_batches_to_logits(name, input_shape, classes):
    model = build_model(name, input_shape, classes)
    flat = torch.randn(5, int(np.prod(input_shape)))
    assert model(flat).shape == (5, classes)
    assert torch.allclose(model(flat.reshape(5, *input_shape)), model(flat))


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_tabular_models_take_feature_vectors(name):
    model = build_model(name, (30,), 2)
    assert model(torch.randn(3, 30)).shape == (3, 2)


def test_cnn_is_small_enough_for_cpu():
    assert parameter_count(build_model("cnn", (1, 8, 8), 10)) < 10_000
    assert parameter_count(build_model("cnn", (1, 28, 28), 10)) < 40_000
    assert parameter_count(build_model("logreg", (1, 8, 8), 10)) == 64 * 10 + 10


def test_seeded_construction_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(99)
    expected_next = torch.rand(1)
    torch.manual_seed(99)
    a = flatten_parameters(build_model("mlp", (64,), 10, seed=5))
    b = flatten_parameters(build_model("mlp", (64,), 10, seed=5))
    c = flatten_parameters(build_model("mlp", (64,), 10, seed=6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert torch.equal(torch.rand(1), expected_next)


def test_flatten_and_load_round_trip_in_named_parameter_order():
    model = build_model("cnn", (1, 8, 8), 10, seed=0)
    layout = ParameterLayout.of(model)
    vector = flatten_parameters(model)
    assert vector.dtype == np.float32 and vector.shape == (layout.size,)
    first = layout.names[0]
    assert np.array_equal(vector[layout.slice_of(first)], model.state_dict()[first].numpy().ravel())
    replacement = np.arange(layout.size, dtype=np.float32) / layout.size
    load_parameters(model, replacement)
    assert np.array_equal(flatten_parameters(model), replacement)
    bias = layout.names[-1]
    assert np.array_equal(model.state_dict()[bias].numpy(), replacement[layout.slice_of(bias)])


def test_any_user_module_flattens():
    user = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2, bias=False))
    assert parameter_count(user) == 3 * 4 + 4 + 4 * 2
    load_parameters(user, np.zeros(24, dtype=np.float32))
    assert not any(p.abs().sum() for p in user.parameters())


def test_bad_models_and_vectors_raise_model_error():
    with pytest.raises(ModelError, match="unknown model"):
        build_model("resnet", (1, 8, 8), 10)
    with pytest.raises(ModelError, match="channels, height, width"):
        build_model("cnn", (64,), 10)
    with pytest.raises(ModelError, match="num_classes"):
        build_model("mlp", (4,), 1)
    model = build_model("logreg", (4,), 3)
    with pytest.raises(ModelError, match="shape"):
        load_parameters(model, np.zeros(3, dtype=np.float32))
    with pytest.raises(ModelError, match="NaN"):
        load_parameters(model, np.full(15, np.nan, dtype=np.float32))
    with pytest.raises(ModelError, match="no parameters"):
        ParameterLayout.of(nn.ReLU())
    with pytest.raises(ModelError, match="no parameter named"):
        ParameterLayout.of(model).slice_of("missing")
