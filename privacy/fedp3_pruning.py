"""FedP3 server-side global pruning: the model each client receives.

FedP3 (Yi et al., ICLR 2024; docs/ALGORITHMS.md §4) sends every client a globally pruned model: the layer
groups the client owns, and the head, stay dense; every other Linear/Conv weight is magnitude
pruned per tensor, keeping its ``keep_ratio`` largest-magnitude entries; biases (and
normalisation parameters) are never pruned. In the reference code the keep ratio is a global 0.9;
fedvault derives it per client from the capacity the client declares (the fraction of the full
model's coordinates it can hold), so weaker clients get sparser non-owned layers while their owned
layers, the ones they train and upload, stay dense.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from privacy.fedp3_groups import FedP3Error, GroupLayout

__all__ = [
    "PrunedModel",
    "keep_count",
    "keep_ratio_for_capacity",
    "magnitude_mask",
    "prune_for_client",
]

# Keep ratios derived from a capacity are rounded down to this many decimals, so the ratio a
# client is told is exactly the decimal it reads and never keeps more than its capacity.
_RATIO_DECIMALS = 6


def _check_ratio(keep_ratio: Any, name: str = "keep_ratio") -> Fraction:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float, np.integer, np.floating)):
        raise FedP3Error(f"{name} must be a real number, got {type(keep_ratio).__name__}")
    value = float(keep_ratio)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise FedP3Error(f"{name} must be in (0, 1], got {keep_ratio!r}")
    return Fraction(value)


def keep_count(size: int, keep_ratio: float) -> int:
    """Entries kept in a tensor of ``size`` entries: ⌊keep_ratio·size⌋ (the reference code's
    ``int(size * ratio)``), except that a product within size·2⁻⁵⁰ of an integer counts as that
    integer. A binary float ratio is off by up to 2⁻⁵³ relative, so without that tolerance 0.3
    would keep 2 of 10 and 1/3 would keep 0 of 3."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
        raise FedP3Error(f"size must be a non-negative int, got {size!r}")
    product = _check_ratio(keep_ratio) * int(size)
    nearest = round(product)
    if abs(product - nearest) <= Fraction(int(size), 2**50):
        return int(nearest)
    return math.floor(product)


def magnitude_mask(weights: np.ndarray, keep_ratio: float) -> np.ndarray:
    """Boolean mask (same shape) keeping the ``keep_count(weights.size, keep_ratio)`` entries of
    largest |w|; ties go to the lower flat (C-order) index, so the mask is deterministic."""
    array = np.asarray(weights)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise FedP3Error(f"weights must be numeric, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise FedP3Error("weights contain NaN or infinity")
    kept = keep_count(array.size, keep_ratio)
    magnitudes = np.abs(array.astype(np.float64, copy=False)).ravel()
    order = np.argsort(-magnitudes, kind="stable")
    mask = np.zeros(array.size, dtype=bool)
    mask[order[:kept]] = True
    return mask.reshape(array.shape)


def _dense_set(layout: GroupLayout, dense_groups: Iterable[int]) -> frozenset[int]:
    groups = frozenset(layout.check_index(index) for index in dense_groups)
    return groups | {layout.head_index}


def keep_ratio_for_capacity(layout: GroupLayout, dense_groups: Iterable[int], capacity: float) -> float:
    """Largest keep ratio r (rounded down to 6 decimals, at most 1) such that a client holding
    its dense groups, the head and every bias in full, plus ⌊r·size⌋ entries of each other
    prunable weight, holds at most ``capacity`` × (the full model's coordinates).

    Args:
        layout: the model's layer groups.
        dense_groups: the client's owned body groups (the head is always dense).
        capacity: declared capacity in (0, 1], a fraction of the full model's coordinate count.

    Raises:
        FedP3Error: capacity outside (0, 1], or too small for the dense part alone (the message
            gives the minimum).
    """
    capacity_fraction = _check_ratio(capacity, "capacity")
    dense = _dense_set(layout, dense_groups)
    fixed = 0
    prunable = 0
    for group in layout.groups:
        for size, is_prunable in zip(group.sizes, group.prunable):
            if is_prunable and group.index not in dense:
                prunable += size
            else:
                fixed += size
    total = layout.total_size
    if capacity_fraction * total < fixed:
        raise FedP3Error(
            f"capacity {capacity} is below what the dense part needs: at least "
            f"{fixed / total:.6f} of the model ({fixed} of {total} coordinates)"
        )
    if prunable == 0:
        return 1.0
    exact = min(Fraction(1), (capacity_fraction * total - fixed) / prunable)
    scale = 10**_RATIO_DECIMALS
    rounded = math.floor(exact * scale)
    if rounded == 0:
        raise FedP3Error(
            f"capacity {capacity} leaves a keep ratio below 1e-{_RATIO_DECIMALS} for non-owned "
            "layers; raise the capacity"
        )
    return rounded / scale


@dataclass(frozen=True)
class PrunedModel:
    """A client's globally pruned model.

    Attributes:
        state: parameter name -> tensor/ndarray (the input's type, dtype and device), pruned
            entries set to zero; entries of ``global_state`` outside the layout (buffers) are
            copied unchanged.
        masks: for each pruned tensor, the (same-shape) boolean mask of kept entries. Dense
            tensors have no entry.
        keep_ratio: the ratio applied to non-dense prunable weights.
        dense_groups: groups sent dense (owned body groups and the head).
    """

    state: Mapping[str, Any]
    masks: Mapping[str, np.ndarray]
    keep_ratio: float
    dense_groups: frozenset[int]

    def kept_coordinates(self, layout: GroupLayout) -> int:
        """Non-pruned coordinates of the model's groups (what the client must store)."""
        pruned = sum(int(mask.size - mask.sum()) for mask in self.masks.values())
        return layout.total_size - pruned


def _clone(value: Any) -> Any:
    return value.detach().clone() if hasattr(value, "detach") else np.array(value, copy=True)


def prune_for_client(
    global_state: Mapping[str, Any],
    layout: GroupLayout,
    dense_groups: Iterable[int],
    keep_ratio: float,
) -> PrunedModel:
    """Build the pruned model one client receives.

    Args:
        global_state: parameter name -> tensor/ndarray (e.g. ``model.state_dict()``) holding at
            least every parameter of ``layout``.
        layout: the model's layer groups.
        dense_groups: the client's owned body groups; the head is added automatically.
        keep_ratio: in (0, 1]; each non-dense Linear/Conv weight keeps ⌊ratio·size⌋ entries of
            largest magnitude (see :func:`keep_ratio_for_capacity`).

    Returns:
        A :class:`PrunedModel`; ``global_state`` itself is never modified.
    """
    _check_ratio(keep_ratio)
    dense = _dense_set(layout, dense_groups)
    if not isinstance(global_state, Mapping):
        raise FedP3Error(f"global_state must be a mapping of name -> tensor, got {type(global_state).__name__}")
    for name in layout.parameter_names:
        if name not in global_state:
            raise FedP3Error(f"global_state has no parameter {name!r}")
    state = {name: _clone(value) for name, value in global_state.items()}
    masks: dict[str, np.ndarray] = {}
    for group in layout.groups:
        if group.index in dense:
            continue
        for name, shape, is_prunable in zip(group.parameter_names, group.shapes, group.prunable):
            if not is_prunable:
                continue
            value = state[name]
            host = value.detach().cpu().numpy() if hasattr(value, "detach") else value
            if tuple(host.shape) != shape:
                raise FedP3Error(f"parameter {name!r} has shape {tuple(host.shape)}, layout expects {shape}")
            mask = magnitude_mask(host, keep_ratio)
            if hasattr(value, "detach"):
                import torch

                value.masked_fill_(~torch.from_numpy(mask).to(value.device), 0)
            else:
                value[~mask] = 0
            masks[name] = mask
    return PrunedModel(state=state, masks=masks, keep_ratio=float(keep_ratio), dense_groups=dense)
