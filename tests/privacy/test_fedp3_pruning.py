"""Specification of FedP3 server-side global pruning (privacy.fedp3_pruning)."""

from collections import OrderedDict
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from privacy.fedp3 import (
    FedP3Error,
    assign_round,
    keep_count,
    keep_ratio_for_capacity,
    layer_groups,
    magnitude_mask,
    prune_for_client,
)


def lenet() -> nn.Sequential:
    """FedP3's CIFAR LeNet: conv1, conv2, fc1, fc2 (body) and fc3 (head)."""
    torch.manual_seed(3)  # test-only weights
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 5), pool1=nn.MaxPool2d(2), conv2=nn.Conv2d(6, 16, 5), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc1=nn.Linear(400, 120), fc2=nn.Linear(120, 84), fc3=nn.Linear(84, 10),
    ))


@pytest.mark.parametrize(
    "size, ratio, kept",
    [(10, 0.9, 9), (10, 0.3, 3), (3, 1 / 3, 1), (10, 0.25, 2), (48120, 0.9, 43308), (7, 1.0, 7), (5, 0.1, 0), (0, 0.5, 0)],
)
def test_keep_count_is_floor_of_ratio_times_size(size, ratio, kept):
    assert keep_count(size, ratio) == kept


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 10**7), data=st.data())
def test_keep_count_of_an_exact_fraction_is_exact(size, data):
    kept = data.draw(st.integers(1, size))
    assert keep_count(size, kept / size) == kept


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 10**6), tenths=st.integers(1, 10))
def test_keep_count_of_decimal_ratios_matches_rational_floor(size, tenths):
    assert keep_count(size, tenths / 10) == (size * tenths) // 10


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_keep_ratio_must_be_in_zero_one(bad):
    with pytest.raises(FedP3Error, match="keep_ratio"):
        keep_count(10, bad)


@settings(max_examples=80, deadline=None)
@given(shape=st.sampled_from([(7,), (4, 5), (3, 2, 5)]), ratio=st.floats(0.01, 1.0), seed=st.integers(0, 2**32 - 1))
def test_magnitude_mask_keeps_exactly_the_largest_entries(shape, ratio, seed):
    weights = np.random.default_rng(seed).standard_normal(shape)
    mask = magnitude_mask(weights, ratio)
    assert mask.shape == shape and mask.dtype == bool
    assert int(mask.sum()) == keep_count(weights.size, ratio)
    if mask.any() and not mask.all():
        assert np.abs(weights[mask]).min() >= np.abs(weights[~mask]).max()


def test_magnitude_ties_go_to_the_lower_index():
    mask = magnitude_mask(np.array([1.0, -1.0, 1.0, 0.5, -1.0]), 0.6)
    np.testing.assert_array_equal(mask, [True, True, True, False, False])
    with pytest.raises(FedP3Error, match="NaN"):
        magnitude_mask(np.array([1.0, np.nan]), 0.5)


def test_pruned_model_keeps_owned_layers_and_head_dense_and_biases_untouched():
    model = lenet()
    layout = layer_groups(model)
    state = model.state_dict()
    before = {name: value.clone() for name, value in state.items()}
    owned = assign_round("OPU2", range(100), 4).owned_by(30)  # base group 1: owns {1, 2}
    assert owned == {1, 2}
    pruned = prune_for_client(state, layout, owned, 0.9)
    assert pruned.dense_groups == {1, 2, 4}
    for name, value in before.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)  # input untouched
    for group in layout.groups:
        for name, is_prunable in zip(group.parameter_names, group.prunable):
            out = pruned.state[name]
            assert isinstance(out, torch.Tensor) and out.dtype == before[name].dtype
            if group.index in pruned.dense_groups or not is_prunable:
                assert torch.equal(out, before[name]), name  # dense layers and every bias
                assert name not in pruned.masks
            else:
                mask = torch.from_numpy(pruned.masks[name])
                assert int(mask.sum()) == keep_count(out.numel(), 0.9)
                assert int((out != 0).sum()) == keep_count(out.numel(), 0.9)
                assert torch.equal(out[mask], before[name][mask])
                assert torch.all(out[~mask] == 0)
    assert set(pruned.masks) == {"conv1.weight", "fc2.weight"}
    # conv1.weight keeps 405 of 450 entries, fc2.weight 9072 of 10080.
    assert pruned.kept_coordinates(layout) == layout.total_size - 45 - 1008


def test_pruning_numpy_state_and_buffers():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.Linear(8, 2))
    layout = layer_groups(model)
    state = {name: value.numpy().copy() for name, value in model.state_dict().items()}
    pruned = prune_for_client(state, layout, [1], 0.5)
    assert isinstance(pruned.state["0.weight"], np.ndarray)
    assert int((pruned.state["0.weight"] != 0).sum()) == 16
    np.testing.assert_array_equal(pruned.state["1.weight"], state["1.weight"])  # norm weight never pruned
    np.testing.assert_array_equal(pruned.state["1.running_var"], state["1.running_var"])
    np.testing.assert_array_equal(pruned.state["2.weight"], state["2.weight"])  # owned group 1
    with pytest.raises(FedP3Error, match="no parameter"):
        prune_for_client({"0.weight": state["0.weight"]}, layout, [0], 0.5)
    with pytest.raises(FedP3Error, match="out of range"):
        prune_for_client(state, layout, [7], 0.5)


def test_capacity_gives_the_largest_ratio_that_fits():
    layout = layer_groups(lenet())
    owned = {0}
    capacity = 0.5
    ratio = keep_ratio_for_capacity(layout, owned, capacity)
    fixed = 456 + 850 + 120 + 84 + 16  # owned conv1 and fc3 in full, plus the other biases
    prunable = 2400 + 48000 + 10080
    budget = Fraction(capacity) * layout.total_size
    assert fixed + Fraction(ratio) * prunable <= budget < fixed + (Fraction(ratio) + Fraction(1, 10**6)) * prunable
    pruned = prune_for_client(lenet().state_dict(), layout, owned, ratio)
    assert pruned.kept_coordinates(layout) <= budget
    assert keep_ratio_for_capacity(layout, owned, 1.0) == 1.0


def test_capacity_below_the_dense_part_is_refused():
    layout = layer_groups(lenet())
    with pytest.raises(FedP3Error, match="at least 0.79"):
        keep_ratio_for_capacity(layout, {2}, 0.5)  # fc1 alone is 78% of LeNet
    with pytest.raises(FedP3Error, match="capacity"):
        keep_ratio_for_capacity(layout, {0}, 0.0)
