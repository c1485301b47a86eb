"""LDP-FedP3 uploads and per-group aggregation from secure sums.

A FedP3 client (Yi et al., ICLR 2024; docs/ALGORITHMS.md §4) uploads only its owned body groups and the
head. Under secure aggregation fedvault runs **one secure sum per layer group** over the clients
that send it, so each upload stays small and the server learns, per group, only the sum and which
(public) senders survived. This module is the plain-number part of that design:

1. :func:`client_upload` — the client clips the groups it uploads (jointly by default) and
   pre-multiplies them by its public aggregation weight. Noise is added afterwards, on the lattice
   integers, by the noise mechanisms; the L2 bound reported here is what they calibrate to.
2. :func:`group_denominators` — from the public assignment and the survivors of each group's
   secure sum, the per-group count (plain mean) or weight total (FedP3's m_i/Σ m_j weighting).
3. :func:`average_group_sums` — per-group sums ÷ denominators = per-group averages.
4. :func:`apply_group_means` — the new global model; groups nobody sent keep their old value.

Clipping and sensitivity: with ``clipping="joint"`` all uploaded groups are scaled by one factor
so that the client's whole release has ‖·‖₂ <= C, whichever groups it sends; with
``clipping="per_group"`` each of the k uploaded groups is clipped to C/√k, which gives the same
release bound C (√(k·C²/k)) but shrinks a small group even when only a large one is over. Either
way the local-DP sensitivity of the release is 2·w·C (w <= 1 the public weight), and noise on the
separate per-group sums composes to exactly that one Gaussian release, so a client is charged
once per round, not once per group.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy.clipping import ClippingError, clip_l2_groups, clip_l2_joint
from privacy.fedp3_groups import FedP3Error, GroupLayout, RoundAssignment

__all__ = [
    "CLIPPINGS",
    "WEIGHTINGS",
    "ClientUpload",
    "apply_group_means",
    "average_group_sums",
    "client_upload",
    "group_denominators",
    "upload_weights",
]

WEIGHTINGS = ("mean", "layers")
CLIPPINGS = ("joint", "per_group")
# Integers up to 2**53 convert to float64 exactly; past that a "sum of integers" is no longer the
# exact sum once it reaches the division.
_EXACT_INTEGER_LIMIT = 2**53


def upload_weights(assignment: RoundAssignment, weighting: str) -> dict[int, float]:
    """Public aggregation weight w_i of every client of the round, in (0, 1].

    ``"mean"``: w_i = 1 (plain per-group mean over senders). ``"layers"``: FedP3's weighting
    m_i / Σ_{j ∈ S_ℓ} m_j, with m_i the number of groups client i uploads (head included); it is
    applied as w_i = m_i / max_j m_j, which gives the same ratios while keeping w_i <= 1 so that
    pre-multiplying a clipped upload never raises its norm above C.
    """
    if weighting not in WEIGHTINGS:
        raise FedP3Error(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    if weighting == "mean":
        return {client_id: 1.0 for client_id in assignment.client_ids}
    layers = {client_id: len(assignment.uploaded_by(client_id)) for client_id in assignment.client_ids}
    most = max(layers.values())
    return {client_id: count / most for client_id, count in layers.items()}


@dataclass(frozen=True)
class ClientUpload:
    """What one client feeds into the per-group secure sums (before quantization and noise).

    Attributes:
        vectors: group index -> (size_g,) float64, clipped and multiplied by ``weight``.
        pre_clip_norm: L2 norm of the uploaded groups before clipping. Data-dependent: the
            client keeps it; it is never sent.
        group_norms: each uploaded group's pre-clip norm (client-side only, like the above).
        l2_bound: bound on ‖concatenation of vectors‖₂, = weight · clip_norm; the local-DP
            sensitivity of the release is twice this.
        weight: the public aggregation weight applied.
    """

    vectors: Mapping[int, np.ndarray]
    pre_clip_norm: float
    group_norms: Mapping[int, float]
    l2_bound: float
    weight: float


def _check_positive_real(value: Any, name: str, *, at_most_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise FedP3Error(f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number <= 0.0 or (at_most_one and number > 1.0):
        bound = "(0, 1]" if at_most_one else "finite and > 0"
        raise FedP3Error(f"{name} must be {bound}, got {value!r}")
    return number


def client_upload(
    update: Mapping[str, Any],
    layout: GroupLayout,
    groups: Sequence[int],
    clip_norm: float,
    *,
    clipping: str = "joint",
    weight: float = 1.0,
) -> ClientUpload:
    """Select, clip and weight the layer groups a client uploads.

    Args:
        update: parameter name -> tensor/ndarray: the client's model update (trained minus
            received parameters) for at least the parameters of ``groups``.
        layout: the model's layer groups.
        groups: indices to upload, normally ``assignment.uploaded_by(client_id)`` (owned body
            groups and the head); distinct.
        clip_norm: C > 0, the L2 bound of the whole release before weighting.
        clipping: ``"joint"`` (one factor for all groups) or ``"per_group"`` (each to C/√k).
        weight: the client's public weight from :func:`upload_weights`, in (0, 1].

    Raises:
        FedP3Error: bad groups, clipping mode, weight, or update entries that do not match the
            layout; ClippingError (a ValueError) for a bad clip_norm or non-finite update values.
    """
    if clipping not in CLIPPINGS:
        raise FedP3Error(f"unknown clipping {clipping!r}; choose one of {', '.join(CLIPPINGS)}")
    weight = _check_positive_real(weight, "weight", at_most_one=True)
    indices = [layout.check_index(index) for index in groups]
    if not indices:
        raise FedP3Error("a client must upload at least one group")
    if len(set(indices)) != len(indices):
        raise FedP3Error(f"groups must be distinct, got {list(groups)}")
    vectors = {index: layout.group_vector(update, index) for index in sorted(indices)}
    if clipping == "joint":
        clipped, pre_clip_norm = clip_l2_joint(vectors, clip_norm)
        group_norms = {index: float(np.linalg.norm(vector)) for index, vector in vectors.items()}
    else:
        share = _clip_share(clip_norm, len(vectors))
        clipped, group_norms = clip_l2_groups(vectors, share)
        pre_clip_norm = math.sqrt(math.fsum(norm * norm for norm in group_norms.values()))
    l2_bound = weight * float(clip_norm)
    if weight != 1.0:
        weighted = {index: vector * weight for index, vector in clipped.items()}
        # Re-clip at w·C: a no-op unless the multiplication rounded the norm one ULP above it.
        clipped, _ = clip_l2_joint(weighted, l2_bound)
    return ClientUpload(
        vectors=clipped,
        pre_clip_norm=pre_clip_norm,
        group_norms=group_norms,
        l2_bound=l2_bound,
        weight=weight,
    )


def _clip_share(clip_norm: float, groups: int) -> float:
    if isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float, np.integer, np.floating)):
        raise ClippingError(f"clip_norm must be a real number, got {type(clip_norm).__name__}")
    if not math.isfinite(float(clip_norm)) or float(clip_norm) <= 0.0:
        raise ClippingError(f"clip_norm must be finite and > 0, got {clip_norm!r}")
    # Clipping lands a relative 2**-32 inside each group's bound, so k · share² stays below C²
    # despite the rounding of C/√k.
    return float(clip_norm) / math.sqrt(groups)


def group_denominators(
    assignment: RoundAssignment,
    weighting: str,
    survivors: Collection[int] | Mapping[int, Collection[int]] | None = None,
) -> dict[int, float]:
    """Per-group denominators of the average: Σ w_i over the senders whose input reached the sum.

    Args:
        assignment: the round's public group assignment.
        weighting: ``"mean"`` (the denominator is the sender count) or ``"layers"``.
        survivors: ``None`` (every assigned sender made it), one set of surviving client ids for
            the whole round, or group index -> survivors of that group's own secure sum (a group
            missing from the mapping had no surviving sender).

    Returns:
        group index -> denominator, only for groups with at least one surviving sender.
    """
    weights = upload_weights(assignment, weighting)
    members = set(assignment.client_ids)
    denominators: dict[int, float] = {}
    for group in range(assignment.body_groups + 1):
        senders = assignment.senders(group)
        if survivors is None:
            alive = set(senders)
        else:
            reached = survivors.get(group, ()) if isinstance(survivors, Mapping) else survivors
            reached = set(reached)
            strangers = reached - members
            if strangers:
                raise FedP3Error(f"survivors {sorted(strangers)} are not clients of this round")
            not_senders = reached - set(senders) if isinstance(survivors, Mapping) else set()
            if not_senders:
                raise FedP3Error(f"clients {sorted(not_senders)} survived group {group}'s sum but do not send it")
            alive = set(senders) & reached
        if alive:
            denominators[group] = math.fsum(weights[client_id] for client_id in alive)
    if isinstance(survivors, Mapping):
        unknown = set(survivors) - set(range(assignment.body_groups + 1))
        if unknown:
            raise FedP3Error(f"survivors name unknown groups {sorted(unknown)}")
    return denominators


def average_group_sums(
    group_sums: Mapping[int, np.ndarray],
    denominators: Mapping[int, float],
    layout: GroupLayout,
) -> dict[int, np.ndarray]:
    """Per-group averages: ``group_sums[g] / denominators[g]`` as (size_g,) float64.

    With integer inputs summed exactly (|sum| < 2**53) the result is the correctly rounded
    average over the senders; with floats it equals it up to summation rounding.

    Raises:
        FedP3Error: a sum for an unknown group or without a denominator, a wrong shape, a
            non-numeric or non-finite sum, an integer sum too large for exact conversion, or a
            denominator that is not finite and positive.
    """
    if not isinstance(group_sums, Mapping) or not isinstance(denominators, Mapping):
        raise FedP3Error("group_sums and denominators must be mappings keyed by group index")
    means: dict[int, np.ndarray] = {}
    for group, total in group_sums.items():
        index = layout.check_index(group)
        if group not in denominators:
            raise FedP3Error(f"group {group} has a sum but no denominator (no surviving sender)")
        denominator = _check_positive_real(denominators[group], f"denominators[{group}]")
        array = np.asarray(total)
        size = layout.groups[index].size
        if array.shape != (size,):
            raise FedP3Error(f"group {group} sum must have shape ({size},), got {array.shape}")
        if np.issubdtype(array.dtype, np.integer):
            if array.size and int(np.max(np.abs(array.astype(object)))) >= _EXACT_INTEGER_LIMIT:
                raise FedP3Error(f"group {group} integer sum exceeds 2**53 and cannot be averaged exactly")
        elif np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                raise FedP3Error(f"group {group} sum contains NaN or infinity")
        else:
            raise FedP3Error(f"group {group} sum has non-numeric dtype {array.dtype}")
        means[index] = array.astype(np.float64) / denominator
    return means


def apply_group_means(
    global_state: Mapping[str, Any],
    layout: GroupLayout,
    group_means: Mapping[int, np.ndarray],
    *,
    server_learning_rate: float = 1.0,
) -> dict[str, Any]:
    """New global model: θ_g + η·mean_g for every group in ``group_means``; every other group
    (nobody sent it, or every sender dropped) and every buffer keeps its old value.

    With uploads Δ_i = θ_i − θ and η = 1 this is FedP3's per-layer average of the senders'
    parameters. Values keep the input's type, dtype and device; ``global_state`` is not modified.
    """
    learning_rate = _check_positive_real(server_learning_rate, "server_learning_rate")
    if not isinstance(global_state, Mapping):
        raise FedP3Error(f"global_state must be a mapping, got {type(global_state).__name__}")
    new_state = {
        name: value.detach().clone() if hasattr(value, "detach") else np.array(value, copy=True)
        for name, value in global_state.items()
    }
    for group, mean in group_means.items():
        index = layout.check_index(group)
        current = layout.group_vector(global_state, index)
        mean_array = np.asarray(mean, dtype=np.float64)
        if mean_array.shape != current.shape:
            raise FedP3Error(f"group {group} mean must have shape {current.shape}, got {mean_array.shape}")
        if not np.isfinite(mean_array).all():
            raise FedP3Error(f"group {group} mean contains NaN or infinity")
        for name, value in layout.split_vector(current + learning_rate * mean_array, index).items():
            old = new_state[name]
            if hasattr(old, "detach"):
                import torch

                new_state[name] = torch.from_numpy(value).to(dtype=old.dtype, device=old.device)
            else:
                new_state[name] = value.astype(old.dtype, copy=False)
    return new_state
