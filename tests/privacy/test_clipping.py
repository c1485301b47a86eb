"""Specification of privacy.clipping: the L2 bound that every sensitivity claim rests on."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privacy.clipping import (
    ClippingError,
    clip_l2,
    clip_l2_groups,
    clip_l2_joint,
    l2_norm,
    per_group_sensitivity,
)
from privacy.errors import PrivacyError


def norm64(x) -> float:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64).ravel()))


finite_floats32 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
vectors32 = hnp.arrays(np.float32, st.integers(1, 300), elements=finite_floats32)
vectors64 = hnp.arrays(
    np.float64, st.integers(1, 300), elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
)
clip_bounds = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(update=st.one_of(vectors32, vectors64), clip_norm=clip_bounds)
def test_clipped_norm_never_exceeds_the_bound_as_stored(update, clip_norm):
    clipped, norm = clip_l2(update, clip_norm)
    assert clipped.dtype == update.dtype and clipped.shape == update.shape
    assert norm64(clipped) <= clip_norm  # exact: the bound holds on the stored values
    assert norm == pytest.approx(norm64(update), rel=1e-12, abs=0.0)
    if norm > clip_norm:
        # Clipping lands on the sphere (up to the storage dtype's rounding) and keeps direction.
        tolerance = 1e-5 if update.dtype == np.float32 else 1e-9
        assert norm64(clipped) == pytest.approx(clip_norm, rel=tolerance)
        expected = update.astype(np.float64) * (clip_norm / norm)
        np.testing.assert_allclose(clipped, expected, rtol=tolerance, atol=tolerance * clip_norm)
    else:
        np.testing.assert_array_equal(clipped, update)


@settings(max_examples=100, deadline=None)
@given(update=st.one_of(vectors32, vectors64), clip_norm=clip_bounds)
def test_clipping_is_idempotent(update, clip_norm):
    once, _ = clip_l2(update, clip_norm)
    twice, norm_of_once = clip_l2(once, clip_norm)
    np.testing.assert_array_equal(twice, once)
    assert norm_of_once <= clip_norm


def test_known_vector_is_scaled_to_the_sphere():
    clipped, norm = clip_l2(np.array([3.0, 4.0]), 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-9)
    assert 1.0 - 1e-9 < np.linalg.norm(clipped) <= 1.0


def test_update_inside_the_ball_is_returned_as_an_unchanged_copy():
    update = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    clipped, norm = clip_l2(update, 1.0)
    assert clipped is not update
    np.testing.assert_array_equal(clipped, update)
    clipped[0] = 99.0
    assert update[0] == np.float32(0.1)  # the caller's array is never aliased
    assert norm == pytest.approx(math.sqrt(0.14), rel=1e-7)


def test_zero_update_stays_zero():
    clipped, norm = clip_l2(np.zeros(5), 2.0)
    assert norm == 0.0
    np.testing.assert_array_equal(clipped, np.zeros(5))


def test_multidimensional_update_is_clipped_on_all_entries():
    update = np.full((4, 3), 2.0)  # norm sqrt(12 * 4) = sqrt(48)
    clipped, norm = clip_l2(update, 1.0)
    assert norm == pytest.approx(math.sqrt(48.0))
    assert clipped.shape == (4, 3)
    assert norm64(clipped) == pytest.approx(1.0, rel=1e-9)


def test_float32_rounding_cannot_push_the_norm_over_the_bound():
    # Many entries of awkward magnitudes maximise accumulated rounding when cast back to float32.
    rng = np.random.default_rng(7)  # test-only data, not secret
    violations_without_guard = 0
    for _ in range(200):
        update = (rng.standard_normal(1000) * 10.0 ** rng.uniform(-3, 3, 1000)).astype(np.float32)
        bound = float(rng.uniform(0.1, 10.0))
        clipped, norm = clip_l2(update, bound)
        assert norm64(clipped) <= bound
        naive = (update.astype(np.float64) * (bound / norm)).astype(np.float32)
        violations_without_guard += norm64(naive) > bound
    # The guard matters: naive scaling overshoots in a sizeable share of these cases.
    assert violations_without_guard > 0


def test_torch_tensors_keep_type_dtype_and_match_the_numpy_result():
    values = np.array([[1.0, -2.0], [2.0, 4.0]], dtype=np.float32)
    tensor = torch.tensor(values, requires_grad=True)
    clipped, norm = clip_l2(tensor, 2.5)
    assert isinstance(clipped, torch.Tensor)
    assert clipped.dtype == torch.float32 and clipped.shape == (2, 2)
    assert not clipped.requires_grad
    clipped_np, norm_np = clip_l2(values, 2.5)
    assert norm == norm_np == 5.0
    np.testing.assert_array_equal(clipped.numpy(), clipped_np)
    assert norm64(clipped) <= 2.5


def test_l2_norm_matches_numpy():
    update = np.arange(10, dtype=np.float32)
    assert l2_norm(update) == pytest.approx(np.linalg.norm(np.arange(10.0)), rel=1e-15)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), True, "1", None, [1.0]])
def test_clip_norm_must_be_a_finite_positive_number(bad):
    with pytest.raises(ClippingError, match="clip_norm"):
        clip_l2(np.ones(3), bad)


@pytest.mark.parametrize(
    "bad, reason",
    [
        (np.array([1.0, np.nan]), "NaN or infinity"),
        (np.array([1.0, -np.inf]), "NaN or infinity"),
        (torch.tensor([1.0, float("inf")]), "NaN or infinity"),
        (np.array([1, 2, 3]), "floating dtype"),
        (np.array([1 + 2j]), "floating dtype"),
        (torch.tensor([1, 2]), "floating-point tensor"),
        ([1.0, 2.0], "numpy.ndarray or torch.Tensor"),
    ],
)
def test_update_must_be_a_finite_float_array(bad, reason):
    with pytest.raises(ClippingError, match=reason):
        clip_l2(bad, 1.0)


def test_clipping_error_belongs_to_the_privacy_hierarchy():
    assert issubclass(ClippingError, PrivacyError) and issubclass(ClippingError, ValueError)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    scales=st.lists(st.floats(1e-3, 1e3), min_size=6, max_size=6),
    bounds=st.lists(clip_bounds, min_size=6, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_per_group_clipping_bounds_each_group_and_the_concatenation(sizes, scales, bounds, seed):
    rng = np.random.default_rng(seed)
    groups = {f"layer{i}": (rng.standard_normal(n) * scales[i]).astype(np.float32) for i, n in enumerate(sizes)}
    clip_norms = {f"layer{i}": bounds[i] for i in range(len(sizes))}
    clipped, norms = clip_l2_groups(groups, clip_norms)
    assert list(clipped) == list(groups)
    for key in groups:
        assert norm64(clipped[key]) <= clip_norms[key]
        assert norms[key] == pytest.approx(norm64(groups[key]), rel=1e-12)
        if norms[key] <= clip_norms[key]:
            np.testing.assert_array_equal(clipped[key], groups[key])
    joint = norm64(np.concatenate([clipped[key] for key in groups]).astype(np.float64))
    assert joint <= per_group_sensitivity(clip_norms)


def test_per_group_clipping_treats_groups_independently():
    groups = {"big": np.array([30.0, 40.0]), "small": np.array([0.3, 0.4])}
    clipped, norms = clip_l2_groups(groups, 1.0)
    np.testing.assert_allclose(clipped["big"], [0.6, 0.8], rtol=1e-9)
    np.testing.assert_array_equal(clipped["small"], groups["small"])  # not shrunk by its neighbour
    assert norms == {"big": 50.0, "small": pytest.approx(0.5)}


def test_joint_clipping_scales_all_groups_by_one_factor():
    groups = {0: np.array([3.0, 0.0]), 1: np.array([0.0, 4.0]), "head": np.array([0.0])}
    clipped, norm = clip_l2_joint(groups, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped[0], [0.6, 0.0], rtol=1e-9)
    np.testing.assert_allclose(clipped[1], [0.0, 0.8], rtol=1e-9)
    np.testing.assert_array_equal(clipped["head"], [0.0])


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5), bound=clip_bounds, seed=st.integers(0, 2**32 - 1))
def test_joint_clipping_bounds_the_whole_release(sizes, bound, seed):
    rng = np.random.default_rng(seed)
    groups = {i: (rng.standard_normal(n) * 100).astype(np.float32) for i, n in enumerate(sizes)}
    clipped, norm = clip_l2_joint(groups, bound)
    assert norm64(np.concatenate(list(clipped.values()))) <= bound
    again, _ = clip_l2_joint(clipped, bound)
    for key in groups:
        np.testing.assert_array_equal(again[key], clipped[key])


def test_per_group_sensitivity_is_the_root_sum_of_squares():
    assert per_group_sensitivity([3.0, 4.0]) == 5.0
    assert per_group_sensitivity({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}) == 2.0


def test_group_inputs_are_validated():
    with pytest.raises(ClippingError, match="non-empty mapping"):
        clip_l2_groups({}, 1.0)
    with pytest.raises(ClippingError, match="exactly the groups' keys"):
        clip_l2_groups({"a": np.ones(2), "b": np.ones(2)}, {"a": 1.0})
    with pytest.raises(ClippingError, match=r"clip_norms\['b'\]"):
        clip_l2_groups({"a": np.ones(2), "b": np.ones(2)}, {"a": 1.0, "b": -1.0})
    with pytest.raises(ClippingError, match=r"groups\[1\]"):
        clip_l2_joint({0: np.ones(2), 1: np.array([np.nan])}, 1.0)
    with pytest.raises(ClippingError, match="must not be empty"):
        per_group_sensitivity([])
