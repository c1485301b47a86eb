"""Specification of LDP-FedP3 uploads and per-group aggregation (privacy.fedp3_aggregation)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from privacy.clipping import ClippingError
from privacy.fedp3 import (
    FedP3Error,
    aggregate_round,
    apply_group_means,
    assign_round,
    average_group_sums,
    client_upload,
    group_denominators,
    layer_groups,
    upload_weights,
)


def tiny_mlp(seed: int = 0) -> nn.Sequential:
    """Four hidden Linear layers (body groups 0..3) and a Linear head (group 4)."""
    torch.manual_seed(seed)  # test-only weights
    return nn.Sequential(
        nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(),
        nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2),
    )


LAYOUT = layer_groups(tiny_mlp())
SIZES = tuple(group.size for group in LAYOUT.groups)  # (36, 28, 20, 15, 8)


def secure_sums(uploads, assignment, survivors):
    """What one secure sum per group yields: the sum over its surviving senders."""
    sums = {}
    for group in range(LAYOUT.body_count + 1):
        alive = [c for c in assignment.senders(group) if c in survivors]
        if alive:
            sums[group] = np.sum([uploads[c][group] for c in alive], axis=0)
    return sums


@settings(max_examples=80, deadline=None)
@given(
    policy=st.sampled_from(["LowerB", "OPU2", "OPU3", "OPR2"]),
    clients=st.integers(1, 40),
    dropout=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**32 - 1),
)
def test_per_group_averages_from_group_sums_equal_the_plain_average_over_senders(policy, clients, dropout, seed):
    rng = np.random.default_rng(seed)
    assignment = assign_round(policy, range(100, 100 + clients), 4, public_seed=rng.bytes(32), round_index=3)
    survivors = {c for c in assignment.client_ids if rng.random() >= dropout}
    # Integer uploads (as lattice coordinates are): sums and averages must be exact.
    uploads = {
        c: {g: rng.integers(-(2**20), 2**20, SIZES[g]) for g in assignment.uploaded_by(c)}
        for c in assignment.client_ids
    }
    sums = secure_sums(uploads, assignment, survivors)
    means = average_group_sums(sums, group_denominators(assignment, "mean", survivors), LAYOUT)
    for group in range(5):
        senders = [c for c in assignment.senders(group) if c in survivors]
        if not senders:
            assert group not in means
            continue
        plain = np.mean(np.stack([uploads[c][group] for c in senders]).astype(np.float64), axis=0)
        np.testing.assert_array_equal(means[group], plain)


@settings(max_examples=40, deadline=None)
@given(policy=st.sampled_from(["LowerB", "OPU2", "OPU3"]), clients=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_float_uploads_average_to_the_plain_mean_up_to_rounding(policy, clients, seed):
    rng = np.random.default_rng(seed)
    assignment = assign_round(policy, range(clients), 4)
    uploads = {c: {g: rng.standard_normal(SIZES[g]) for g in assignment.uploaded_by(c)} for c in range(clients)}
    means = average_group_sums(secure_sums(uploads, assignment, set(range(clients))), group_denominators(assignment, "mean"), LAYOUT)
    for group, mean in means.items():
        plain = np.mean([uploads[c][group] for c in assignment.senders(group)], axis=0)
        np.testing.assert_allclose(mean, plain, rtol=1e-12, atol=1e-14)


def test_layer_weighting_matches_fedp3s_weighted_mean():
    # FedP3's weighted_mean: Σ_i (m_i / Σ_j m_j) x_i over a layer's senders, m_i = layers sent.
    rng = np.random.default_rng(11)
    assignment = assign_round("OPR2", range(12), 4, public_seed=bytes(range(32)))
    weights = upload_weights(assignment, "layers")
    assert max(weights.values()) == 1.0 and all(0 < w <= 1 for w in weights.values())
    raw = {c: {g: rng.standard_normal(SIZES[g]) for g in assignment.uploaded_by(c)} for c in range(12)}
    weighted = {c: {g: weights[c] * v for g, v in groups.items()} for c, groups in raw.items()}
    means = average_group_sums(secure_sums(weighted, assignment, set(range(12))), group_denominators(assignment, "layers"), LAYOUT)
    for group, mean in means.items():
        senders = assignment.senders(group)
        m = {c: len(assignment.uploaded_by(c)) for c in senders}
        reference = sum(m[c] / sum(m.values()) * raw[c][group] for c in senders)
        np.testing.assert_allclose(mean, reference, rtol=1e-12, atol=1e-14)


def test_weights_are_one_under_plain_mean_and_the_layer_ratio_otherwise():
    assignment = assign_round("OPU3", range(4), 4)
    assert set(upload_weights(assignment, "mean").values()) == {1.0}
    assert set(upload_weights(assignment, "layers").values()) == {1.0}  # everyone sends 3 + head
    with pytest.raises(FedP3Error, match="weighting"):
        upload_weights(assignment, "median")


def test_groups_nobody_sent_keep_their_old_value():
    model = tiny_mlp(1)
    state = model.state_dict()
    assignment = assign_round("LowerB", [7, 8], 4)  # base groups 0 and 2: nobody owns 1 or 3
    assert assignment.owner_counts() == (1, 0, 1, 0)
    uploads = {c: {g: np.full(SIZES[g], float(c)) for g in assignment.uploaded_by(c)} for c in (7, 8)}
    survivors = {7, 8}
    new_state = aggregate_round(state, LAYOUT, assignment, secure_sums(uploads, assignment, survivors), survivors=survivors)
    for group in LAYOUT.groups:
        for name in group.parameter_names:
            old, new = state[name], new_state[name]
            assert isinstance(new, torch.Tensor) and new.dtype == old.dtype
            if group.index in (1, 3):
                assert torch.equal(new, old), name
            else:
                shift = {0: 7.0, 2: 8.0, 4: 7.5}[group.index]
                torch.testing.assert_close(new, old + shift, rtol=0, atol=1e-6)


def test_a_group_whose_senders_all_dropped_is_unchanged_and_cannot_be_averaged():
    state = tiny_mlp(2).state_dict()
    assignment = assign_round("LowerB", range(4), 4)  # one owner per body group
    survivors = {0, 1, 2}  # client 3, sole owner of group 3, dropped
    denominators = group_denominators(assignment, "mean", survivors)
    assert 3 not in denominators and denominators[4] == 3.0
    with pytest.raises(FedP3Error, match="no denominator"):
        average_group_sums({3: np.zeros(SIZES[3])}, denominators, LAYOUT)
    new_state = aggregate_round(state, LAYOUT, assignment, {0: np.ones(SIZES[0])}, survivors=survivors)
    assert torch.equal(new_state["6.weight"], state["6.weight"]) and torch.equal(new_state["6.bias"], state["6.bias"])


def test_per_group_survivors_from_separate_secure_sums():
    assignment = assign_round("OPU2", range(8), 4)
    per_group = {0: {0, 1, 6}, 1: {0, 2, 3}, 2: set(), 4: set(range(8)) - {5}}
    denominators = group_denominators(assignment, "mean", per_group)
    assert denominators == {0: 3.0, 1: 3.0, 4: 7.0}
    with pytest.raises(FedP3Error, match="do not send"):
        group_denominators(assignment, "mean", {0: {4}})
    with pytest.raises(FedP3Error, match="not clients of this round"):
        group_denominators(assignment, "mean", {99})
    with pytest.raises(FedP3Error, match="unknown groups"):
        group_denominators(assignment, "mean", {9: set()})


def test_full_participation_with_unit_rate_is_fedp3_parameter_averaging():
    global_model, assignment = tiny_mlp(3), assign_round("OPU2", range(6), 4)
    global_state = global_model.state_dict()
    trained = {c: tiny_mlp(10 + c).state_dict() for c in range(6)}
    uploads = {}
    for c in range(6):
        update = {name: trained[c][name] - global_state[name] for name in global_state}
        upload = client_upload(update, LAYOUT, assignment.uploaded_by(c), clip_norm=1e9)
        uploads[c] = upload.vectors
    new_state = aggregate_round(global_state, LAYOUT, assignment, secure_sums(uploads, assignment, set(range(6))))
    for group in LAYOUT.groups:
        owners = assignment.senders(group.index)
        for name in group.parameter_names:
            expected = torch.stack([trained[c][name] for c in owners]).mean(dim=0)
            torch.testing.assert_close(new_state[name], expected, rtol=1e-5, atol=1e-6)


def test_server_learning_rate_scales_the_step():
    state = {name: np.zeros(value.shape, dtype=np.float32) for name, value in tiny_mlp().state_dict().items()}
    new_state = apply_group_means(state, LAYOUT, {4: np.full(8, 2.0)}, server_learning_rate=0.25)
    np.testing.assert_array_equal(new_state["8.bias"], np.full(2, 0.5, dtype=np.float32))
    assert new_state["8.bias"].dtype == np.float32
    np.testing.assert_array_equal(new_state["0.weight"], state["0.weight"])
    with pytest.raises(FedP3Error, match="server_learning_rate"):
        apply_group_means(state, LAYOUT, {}, server_learning_rate=0.0)
    with pytest.raises(FedP3Error, match="shape"):
        apply_group_means(state, LAYOUT, {4: np.zeros(3)})
    with pytest.raises(FedP3Error, match="NaN"):
        apply_group_means(state, LAYOUT, {4: np.full(8, np.nan)})


def test_client_upload_sends_only_its_groups_clipped_jointly():
    rng = np.random.default_rng(5)
    update = {name: torch.tensor(rng.standard_normal(tuple(v.shape)) * 3, dtype=torch.float32) for name, v in tiny_mlp().state_dict().items()}
    groups = (1, 2, 4)
    upload = client_upload(update, LAYOUT, groups, clip_norm=1.0)
    assert tuple(upload.vectors) == groups
    raw = {g: LAYOUT.group_vector(update, g) for g in groups}
    joint = math.sqrt(sum(float(np.dot(v, v)) for v in raw.values()))
    assert upload.pre_clip_norm == pytest.approx(joint, rel=1e-12)
    assert upload.group_norms == {g: pytest.approx(float(np.linalg.norm(raw[g])), rel=1e-12) for g in groups}
    concatenated = np.concatenate([upload.vectors[g] for g in groups])
    assert np.linalg.norm(concatenated) <= 1.0 and upload.l2_bound == 1.0
    for g in groups:  # one common factor: directions and relative sizes survive
        np.testing.assert_allclose(upload.vectors[g], raw[g] / joint, rtol=1e-9)


def test_per_group_clipping_bounds_each_group_by_c_over_root_k():
    update = {name: torch.ones_like(v) * 10 for name, v in tiny_mlp().state_dict().items()}
    groups = (0, 3, 4)
    upload = client_upload(update, LAYOUT, groups, clip_norm=2.0, clipping="per_group")
    share = 2.0 / math.sqrt(3)
    for g in groups:
        assert np.linalg.norm(upload.vectors[g]) <= share
        assert np.linalg.norm(upload.vectors[g]) == pytest.approx(share, rel=1e-9)
    assert np.linalg.norm(np.concatenate(list(upload.vectors.values()))) <= 2.0


def test_weight_is_applied_after_clipping_so_the_bound_shrinks():
    update = {name: torch.ones_like(v) for name, v in tiny_mlp().state_dict().items()}
    upload = client_upload(update, LAYOUT, (0, 4), clip_norm=1.0, weight=0.5)
    assert upload.l2_bound == 0.5 and upload.weight == 0.5
    assert np.linalg.norm(np.concatenate(list(upload.vectors.values()))) == pytest.approx(0.5, rel=1e-9)
    assert np.linalg.norm(np.concatenate(list(upload.vectors.values()))) <= 0.5


def test_client_upload_validates_its_inputs():
    update = tiny_mlp().state_dict()
    with pytest.raises(FedP3Error, match="distinct"):
        client_upload(update, LAYOUT, (1, 1), 1.0)
    with pytest.raises(FedP3Error, match="at least one group"):
        client_upload(update, LAYOUT, (), 1.0)
    with pytest.raises(FedP3Error, match="clipping"):
        client_upload(update, LAYOUT, (4,), 1.0, clipping="none")
    with pytest.raises(FedP3Error, match="weight"):
        client_upload(update, LAYOUT, (4,), 1.0, weight=1.5)
    with pytest.raises(ClippingError, match="clip_norm"):
        client_upload(update, LAYOUT, (4,), 0.0)
    with pytest.raises(ClippingError, match="clip_norm"):
        client_upload(update, LAYOUT, (4,), -1.0, clipping="per_group")
    with pytest.raises(ClippingError, match="NaN"):
        client_upload({**update, "8.bias": torch.tensor([0.0, float("nan")])}, LAYOUT, (4,), 1.0)
    with pytest.raises(FedP3Error, match="no parameter"):
        client_upload({}, LAYOUT, (4,), 1.0)


def test_average_group_sums_validates_its_inputs():
    with pytest.raises(FedP3Error, match="shape"):
        average_group_sums({0: np.zeros(5)}, {0: 1.0}, LAYOUT)
    with pytest.raises(FedP3Error, match="denominators"):
        average_group_sums({0: np.zeros(SIZES[0])}, {0: 0}, LAYOUT)
    with pytest.raises(FedP3Error, match="NaN"):
        average_group_sums({4: np.full(8, np.inf)}, {4: 2.0}, LAYOUT)
    with pytest.raises(FedP3Error, match="2\\*\\*53"):
        average_group_sums({4: np.full(8, 2**53, dtype=np.int64)}, {4: 2.0}, LAYOUT)
    with pytest.raises(FedP3Error, match="non-numeric"):
        average_group_sums({4: np.array(["a"] * 8)}, {4: 2.0}, LAYOUT)
    with pytest.raises(FedP3Error, match="out of range"):
        average_group_sums({5: np.zeros(1)}, {5: 1.0}, LAYOUT)
