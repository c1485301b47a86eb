"""LDP-FedP3: the entry point (Yi et al., ICLR 2024, arXiv 2404.09816; docs/ALGORITHMS.md §4).

One round, with the pieces this package provides (the lead's coordinator wires the transport,
the lattice codec, the noise and the ledger in between)::

    layout     = layer_groups(model)                                   # fedp3_groups
    assignment = assign_round(policy, client_ids, layout.body_count,
                              public_seed=round_seed, round_index=t)   # LowerB/OPU2/OPU3/OPR2
    weights    = upload_weights(assignment, weighting)                 # public, "mean" | "layers"
    per client i:
        owned   = assignment.owned_by(i)
        ratio   = keep_ratio_for_capacity(layout, owned, capacity_i)   # fedp3_pruning
        pruned  = prune_for_client(global_state, layout, owned, ratio) # sent to client i
        ... local training from pruned.state ...
        upload  = client_upload(trained - pruned.state, layout, assignment.uploaded_by(i),
                                clip_norm, weight=weights[i])          # fedp3_aggregation
        ... encode + integer noise (calibrated to 2·upload.l2_bound) + mask, per group ...
    per group g: one secure sum over assignment.senders(g) -> sum_g, survivors_g
    new_state  = aggregate_round(global_state, layout, assignment, sums, weighting=weighting,
                                 survivors=survivors)

:func:`fedp3_upload_bytes` reports the upload saving against sending the whole model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from privacy.fedp3_aggregation import (
    CLIPPINGS,
    WEIGHTINGS,
    ClientUpload,
    apply_group_means,
    average_group_sums,
    client_upload,
    group_denominators,
    upload_weights,
)
from privacy.fedp3_groups import (
    POLICIES,
    FedP3Error,
    GroupLayout,
    LayerGroup,
    RoundAssignment,
    assign_round,
    base_group,
    layer_groups,
    owned_body_groups,
)
from privacy.fedp3_pruning import (
    PrunedModel,
    keep_count,
    keep_ratio_for_capacity,
    magnitude_mask,
    prune_for_client,
)

__all__ = [
    "CLIPPINGS",
    "POLICIES",
    "WEIGHTINGS",
    "ClientUpload",
    "FedP3Error",
    "GroupLayout",
    "LayerGroup",
    "PrunedModel",
    "RoundAssignment",
    "aggregate_round",
    "apply_group_means",
    "assign_round",
    "average_group_sums",
    "base_group",
    "client_upload",
    "fedp3_upload_bytes",
    "group_denominators",
    "keep_count",
    "keep_ratio_for_capacity",
    "layer_groups",
    "magnitude_mask",
    "owned_body_groups",
    "prune_for_client",
    "upload_weights",
]

# Public seed used by the upload report when OPR2 is asked for without one: the report only
# needs *a* reproducible draw, not a secret one.
_REPORT_SEED = bytes(32)


def aggregate_round(
    global_state: Mapping[str, Any],
    layout: GroupLayout,
    assignment: RoundAssignment,
    group_sums: Mapping[int, np.ndarray],
    *,
    weighting: str = "mean",
    survivors: Collection[int] | Mapping[int, Collection[int]] | None = None,
    server_learning_rate: float = 1.0,
) -> dict[str, Any]:
    """Server side of a FedP3 round: per-group sums -> per-group averages -> new global state.

    Args:
        global_state: the current global model (parameter name -> tensor/ndarray).
        layout: the model's layer groups.
        assignment: the round's public assignment.
        group_sums: group index -> (size_g,) sum of the surviving senders' uploads, as decoded
            from that group's secure sum. Groups without a sum keep their old value.
        weighting: the weighting the clients pre-multiplied with (``"mean"`` or ``"layers"``).
        survivors: as in :func:`group_denominators`.
        server_learning_rate: η in θ_g ← θ_g + η·mean_g.

    Raises:
        FedP3Error: a sum for a group none of whose senders survived, or any input mismatch.
    """
    denominators = group_denominators(assignment, weighting, survivors)
    means = average_group_sums(group_sums, denominators, layout)
    return apply_group_means(global_state, layout, means, server_learning_rate=server_learning_rate)


def _packed_bytes(coordinates: int, bits: int) -> int:
    return -(-coordinates * bits // 8)


def _next_power_of_two(value: int) -> int:
    return 1 << max(0, (value - 1).bit_length())


def fedp3_upload_bytes(
    model: Any,
    policy: str,
    clients: int,
    bits_per_coordinate: int,
    *,
    public_seed: bytes | None = None,
    round_index: int = 0,
) -> dict:
    """Upload size per client under a FedP3 policy, against sending the whole model.

    Every uploaded group is its own secure-sum vector, bit-packed at exactly
    ``bits_per_coordinate`` bits per coordinate: ⌈d_g·b/8⌉ bytes; the whole model is one vector
    of ⌈d·b/8⌉ bytes. The ``rotated_*`` figures pad every vector to the next power of two, as the
    randomized Hadamard rotation in front of the lattice quantizer does (a FedP3 upload pads each
    group separately, which can eat much of the saving). Message headers, AEAD overhead and the
    SecAgg key exchange are the same per vector count and are not included.

    Args:
        model: a torch ``nn.Module`` (its layer groups are derived with :func:`layer_groups`).
        policy: ``"LowerB"``, ``"OPU2"``, ``"OPU3"`` or ``"OPR2"``.
        clients: n >= 1 clients in the round.
        bits_per_coordinate: b in 1..32.
        public_seed: OPR2's 32-byte public seed (default: 32 zero bytes, a reproducible draw).
        round_index: OPR2's round.

    Returns:
        A JSON-serialisable dict: ``policy``, ``clients``, ``bits_per_coordinate``, ``groups``
        (name, coordinates, owners, bytes, rotated_bytes each), ``full_model_coordinates``,
        ``full_model_bytes``, ``rotated_full_model_bytes``, ``bytes_per_client`` (list, client
        position order), ``mean_bytes_per_client``, ``min_bytes_per_client``,
        ``max_bytes_per_client``, ``upload_fraction`` (mean / full), ``saving_fraction``
        (1 − upload_fraction), ``vectors_per_client`` (secure sums each client joins), and the
        ``rotated_`` counterparts of the per-client figures.
    """
    if isinstance(bits_per_coordinate, bool) or not isinstance(bits_per_coordinate, (int, np.integer)):
        raise FedP3Error(f"bits_per_coordinate must be an int, got {bits_per_coordinate!r}")
    bits = int(bits_per_coordinate)
    if not 1 <= bits <= 32:
        raise FedP3Error(f"bits_per_coordinate must be in 1..32, got {bits}")
    if isinstance(clients, bool) or not isinstance(clients, (int, np.integer)) or clients < 1:
        raise FedP3Error(f"clients must be a positive int, got {clients!r}")
    layout = layer_groups(model)
    seed = _REPORT_SEED if public_seed is None else public_seed
    assignment = assign_round(policy, range(clients), layout.body_count, public_seed=seed, round_index=round_index)
    group_bytes = [_packed_bytes(group.size, bits) for group in layout.groups]
    rotated_group_bytes = [_packed_bytes(_next_power_of_two(group.size), bits) for group in layout.groups]
    per_client = [sum(group_bytes[g] for g in assignment.uploaded_by(c)) for c in assignment.client_ids]
    rotated_per_client = [
        sum(rotated_group_bytes[g] for g in assignment.uploaded_by(c)) for c in assignment.client_ids
    ]
    vectors = [len(assignment.uploaded_by(c)) for c in assignment.client_ids]
    full = _packed_bytes(layout.total_size, bits)
    rotated_full = _packed_bytes(_next_power_of_two(layout.total_size), bits)
    mean = math.fsum(per_client) / len(per_client)
    rotated_mean = math.fsum(rotated_per_client) / len(rotated_per_client)
    return {
        "policy": policy,
        "clients": len(per_client),
        "bits_per_coordinate": bits,
        "groups": [
            {
                "name": group.name,
                "coordinates": group.size,
                "owners": len(assignment.senders(group.index)),
                "bytes": group_bytes[group.index],
                "rotated_bytes": rotated_group_bytes[group.index],
            }
            for group in layout.groups
        ],
        "full_model_coordinates": layout.total_size,
        "full_model_bytes": full,
        "rotated_full_model_bytes": rotated_full,
        "bytes_per_client": per_client,
        "mean_bytes_per_client": mean,
        "min_bytes_per_client": min(per_client),
        "max_bytes_per_client": max(per_client),
        "upload_fraction": mean / full,
        "saving_fraction": 1.0 - mean / full,
        "vectors_per_client": math.fsum(vectors) / len(vectors),
        "rotated_mean_bytes_per_client": rotated_mean,
        "rotated_upload_fraction": rotated_mean / rotated_full,
        "rotated_saving_fraction": 1.0 - rotated_mean / rotated_full,
    }
