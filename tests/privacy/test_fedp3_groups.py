"""Specification of FedP3 layer groups and ownership policies (privacy.fedp3_groups)."""

from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from privacy.errors import PrivacyError
from privacy.fedp3 import (
    POLICIES,
    FedP3Error,
    assign_round,
    base_group,
    fedp3_upload_bytes,
    layer_groups,
    owned_body_groups,
)

# Coordinates per group of FedP3's CIFAR LeNet: 6·3·25+6, 16·6·25+16, 400·120+120, 120·84+84, 84·10+10.
LENET_GROUP_SIZES = (456, 2416, 48120, 10164, 850)


def lenet() -> nn.Sequential:
    """FedP3's CIFAR LeNet: conv1, conv2, fc1, fc2 (body) and fc3 (head)."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 5), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2), flatten=nn.Flatten(),
        fc1=nn.Linear(400, 120), relu3=nn.ReLU(), fc2=nn.Linear(120, 84), relu4=nn.ReLU(),
        fc3=nn.Linear(84, 10),
    ))


def tiny_mlp(body_layers: int = 4, width: int = 6, inputs: int = 5, classes: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    fan_in = inputs
    for _ in range(body_layers):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, classes))


def test_lenet_has_fedp3s_five_groups_with_fc3_as_head():
    layout = layer_groups(lenet())
    assert [g.name for g in layout.groups] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert layout.groups[0].parameter_names == ("conv1.weight", "conv1.bias")
    assert tuple(g.size for g in layout.groups) == LENET_GROUP_SIZES
    assert layout.head_index == 4 and layout.body_count == 4
    assert layout.total_size == sum(p.numel() for p in lenet().parameters()) == 62006
    assert all(g.prunable == (True, False) for g in layout.groups)


def test_normalisation_parameters_join_the_preceding_layer_and_are_not_prunable():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 5, bias=False), nn.Linear(5, 2))
    layout = layer_groups(model)
    assert [g.parameter_names for g in layout.groups] == [
        ("0.weight", "0.bias", "1.weight", "1.bias"),
        ("3.weight",),
        ("4.weight", "4.bias"),
    ]
    assert layout.groups[0].prunable == (True, False, False, False)
    # Buffers (running statistics) belong to no group.
    assert "1.running_mean" not in layout.parameter_names


def test_group_vector_round_trips_through_split_vector():
    model = tiny_mlp()
    layout = layer_groups(model)
    state = model.state_dict()
    for group in layout.groups:
        vector = layout.group_vector(state, group.index)
        assert vector.dtype == np.float64 and vector.shape == (group.size,)
        parts = layout.split_vector(vector, group.index)
        for name in group.parameter_names:
            np.testing.assert_array_equal(parts[name], state[name].numpy())
    with pytest.raises(FedP3Error, match="expects a"):
        layout.split_vector(np.zeros(layout.groups[0].size + 1), 0)
    with pytest.raises(FedP3Error, match="shape"):
        layout.group_vector({**state, "0.weight": torch.zeros(2, 2)}, 0)
    with pytest.raises(FedP3Error, match="no parameter"):
        layout.group_vector({}, 0)
    with pytest.raises(FedP3Error, match="out of range"):
        layout.group(len(layout.groups))


def test_unsupported_models_are_refused_with_the_reason():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.fc = nn.Linear(2, 2)

    with pytest.raises(FedP3Error, match="no Linear/Conv layer precedes"):
        layer_groups(Scaled())
    shared = nn.Linear(3, 3)
    with pytest.raises(FedP3Error, match="shared"):
        tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
        tied[1].weight = tied[0].weight
        layer_groups(tied)
    with pytest.raises(FedP3Error, match="at least one body group"):
        layer_groups(nn.Sequential(shared))
    with pytest.raises(FedP3Error, match="nn.Module"):
        layer_groups({"fc.weight": torch.zeros(1)})
    assert issubclass(FedP3Error, PrivacyError) and issubclass(FedP3Error, ValueError)


def test_base_group_is_floor_i_times_g_over_n():
    assert [base_group(i, 100, 4) for i in (0, 24, 25, 49, 50, 74, 75, 99)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [base_group(i, 10, 4) for i in range(10)] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    with pytest.raises(FedP3Error, match="position"):
        base_group(10, 10, 4)


@pytest.mark.parametrize("policy, owners, per_client", [("LowerB", 25, 1), ("OPU2", 50, 2), ("OPU3", 75, 3)])
def test_owners_per_body_group_for_100_clients_and_4_groups(policy, owners, per_client):
    assignment = assign_round(policy, range(100), 4)
    assert assignment.owner_counts() == (owners,) * 4
    assert all(len(assignment.owned_by(c)) == per_client for c in range(100))
    # Everyone uploads the head.
    assert assignment.senders(4) == tuple(range(100))
    assert all(assignment.uploaded_by(c)[-1] == 4 for c in range(100))


def test_overlapping_policies_wrap_around():
    assert owned_body_groups("LowerB", 30, 100, 4) == {1}
    assert owned_body_groups("OPU2", 99, 100, 4) == {3, 0}
    assert owned_body_groups("OPU3", 80, 100, 4) == {3, 0, 1}
    assert assign_round("OPU2", range(100), 4).uploaded_by(99) == (0, 3, 4)


def test_positions_follow_sorted_client_ids():
    assignment = assign_round("LowerB", [907, 3, 55, 12], 2)
    assert assignment.client_ids == (3, 12, 55, 907)
    assert [assignment.owned_by(c) for c in (3, 12, 55, 907)] == [{0}, {0}, {1}, {1}]


@settings(max_examples=60, deadline=None)
@given(policy=st.sampled_from(["LowerB", "OPU2", "OPU3"]), clients=st.integers(1, 300), groups=st.integers(3, 12))
def test_deterministic_policies_spread_clients_evenly(policy, clients, groups):
    counts = Counter(base_group(i, clients, groups) for i in range(clients))
    # ⌊i·G/n⌋ gives each base group ⌊n/G⌋ or ⌈n/G⌉ clients.
    assert all(clients // groups <= counts[g] <= -(-clients // groups) for g in range(groups))
    assignment = assign_round(policy, range(clients), groups)
    width = {"LowerB": 1, "OPU2": 2, "OPU3": 3}[policy]
    assert sum(assignment.owner_counts()) == width * clients


@pytest.mark.parametrize("policy, groups", [("OPU2", 1), ("OPU3", 2), ("OPR2", 1)])
def test_policies_need_enough_body_groups(policy, groups):
    with pytest.raises(FedP3Error, match="only"):
        assign_round(policy, range(4), groups, public_seed=bytes(32))


def test_bad_round_inputs_are_refused():
    with pytest.raises(FedP3Error, match="unknown FedP3 policy"):
        assign_round("OPU4", range(4), 4)
    with pytest.raises(FedP3Error, match="distinct"):
        assign_round("OPU2", [1, 1, 2], 4)
    with pytest.raises(FedP3Error, match="at least one client"):
        assign_round("OPU2", [], 4)
    with pytest.raises(FedP3Error, match="ints"):
        assign_round("OPU2", [1, "2"], 4)
    with pytest.raises(FedP3Error, match="not part of round"):
        assign_round("OPU2", [1, 2], 4).owned_by(3)
    with pytest.raises(FedP3Error, match="32 bytes"):
        assign_round("OPR2", range(4), 4)
    assert POLICIES == ("LowerB", "OPU2", "OPU3", "OPR2")


def test_opr2_draws_two_distinct_groups_reproducibly_from_the_public_seed():
    seed = bytes(range(32))
    first = assign_round("OPR2", range(100), 4, public_seed=seed, round_index=7)
    again = assign_round("OPR2", range(100), 4, public_seed=seed, round_index=7)
    assert first == again
    assert all(len(owned) == 2 and owned <= {0, 1, 2, 3} for _, owned in first.ownership)
    next_round = assign_round("OPR2", range(100), 4, public_seed=seed, round_index=8)
    other_seed = assign_round("OPR2", range(100), 4, public_seed=bytes(32), round_index=7)
    assert first.ownership != next_round.ownership
    assert first.ownership != other_seed.ownership
    assert owned_body_groups("OPR2", 5, 100, 4, public_seed=seed, round_index=7) == first.owned_by(5)


def test_opr2_pairs_are_uniform_over_rounds():
    # 30 rounds x 100 clients = 3,000 pairs over the 6 unordered pairs of 4 groups: each expected
    # 500 times (sd 20.4). A +-110 window (5.4 sd) fails by chance with probability < 1e-6.
    pairs = Counter()
    for round_index in range(30):
        assignment = assign_round("OPR2", range(100), 4, public_seed=b"\x01" * 32, round_index=round_index)
        pairs.update(tuple(sorted(owned)) for _, owned in assignment.ownership)
    assert len(pairs) == 6
    assert all(abs(count - 500) <= 110 for count in pairs.values()), pairs


def test_upload_bytes_for_lenet_at_16_bits_are_exact():
    report = fedp3_upload_bytes(lenet(), "LowerB", 100, 16)
    assert report["full_model_coordinates"] == 62006
    assert report["full_model_bytes"] == 2 * 62006
    assert [g["owners"] for g in report["groups"]] == [25, 25, 25, 25, 100]
    # A LowerB client sends its one body group and the head: the mean body group is 61156/4.
    assert report["mean_bytes_per_client"] == 2 * (61156 / 4 + 850)
    assert report["min_bytes_per_client"] == 2 * (456 + 850)
    assert report["max_bytes_per_client"] == 2 * (48120 + 850)
    assert report["vectors_per_client"] == 2.0
    assert report["saving_fraction"] == pytest.approx(1 - (61156 / 4 + 850) / 62006)
    # Rotation pads every group to a power of two: 512, 4096, 65536, 16384 and 1024.
    assert report["rotated_full_model_bytes"] == 2 * 65536
    assert report["rotated_mean_bytes_per_client"] == 2 * ((512 + 4096 + 65536 + 16384) / 4 + 1024)


def test_opu2_uploads_less_than_the_full_model_and_policies_order_by_overlap():
    model = lenet()
    reports = {p: fedp3_upload_bytes(model, p, 100, 12) for p in POLICIES}
    full = reports["OPU2"]["full_model_bytes"]
    assert full == -(-62006 * 12 // 8)
    assert reports["OPU2"]["max_bytes_per_client"] < full
    assert reports["OPU2"]["saving_fraction"] > 0
    assert (
        reports["LowerB"]["mean_bytes_per_client"]
        < reports["OPU2"]["mean_bytes_per_client"]
        < reports["OPU3"]["mean_bytes_per_client"]
        < full
    )
    # Each group is bit-packed on its own: ceil(d_g * 12 / 8) bytes.
    assert [g["bytes"] for g in reports["OPU2"]["groups"]] == [-(-d * 12 // 8) for d in LENET_GROUP_SIZES]
    assert len(reports["OPR2"]["bytes_per_client"]) == 100


def test_upload_bytes_validate_their_inputs():
    with pytest.raises(FedP3Error, match="1..32"):
        fedp3_upload_bytes(lenet(), "OPU2", 100, 33)
    with pytest.raises(FedP3Error, match="bits_per_coordinate"):
        fedp3_upload_bytes(lenet(), "OPU2", 100, 8.0)
    with pytest.raises(FedP3Error, match="clients"):
        fedp3_upload_bytes(lenet(), "OPU2", 0, 8)
    with pytest.raises(FedP3Error, match="unknown FedP3 policy"):
        fedp3_upload_bytes(lenet(), "FedAvg", 10, 8)
