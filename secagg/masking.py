"""Adding and removing SecAgg+ masks on vectors mod 2**b.

Bonawitz et al., CCS 2017, with Flower's sign convention (docs/ALGORITHMS.md §1.1):

    y_i = x_i + PRG(b_i) + Σ_{j ∈ N(i) ∩ U1, j < i} PRG(s_ij) − Σ_{j ∈ N(i) ∩ U1, j > i} PRG(s_ij)  (mod 2**b)

so the two terms of a pair of survivors cancel in the sum. The server removes each survivor's
self mask once and, for each dropped client d, the term each surviving neighbour j added for d;
pairs where both ends dropped never entered the sum and cost nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from secagg.prg import add_mask
from secagg.round_keys import pairwise_mask_info, self_mask_info

__all__ = ["mask_input", "remove_pairwise_mask", "remove_self_mask"]


def _adds_pairwise_mask(own: int, peer: int) -> bool:
    """True when client ``own`` adds (rather than subtracts) its pairwise mask with ``peer``."""
    return peer < own


def mask_input(
    vector: np.ndarray,
    bits: int,
    *,
    client_id: int,
    self_mask_seed: bytes,
    pairwise_seeds: Mapping[int, bytes],
    iid: bytes,
    round_index: int,
) -> np.ndarray:
    """y_i: the client's masked input, a new ``(m,) uint32`` array mod 2**bits.

    Args:
        vector: x_i, ``(m,) uint32`` with entries < 2**bits (not modified).
        bits: b.
        client_id: i.
        self_mask_seed: b_i, 32 bytes.
        pairwise_seeds: s_ij for every neighbour j that shared keys (N(i) ∩ U1), keyed by j.
        iid, round_index: the round's instance id and index (PRG context).
    """
    masked = np.array(vector, dtype=np.uint32, copy=True, order="C")
    add_mask(masked, self_mask_seed, self_mask_info(iid, round_index), bits)
    info = pairwise_mask_info(iid, round_index)
    for peer in sorted(pairwise_seeds):
        add_mask(
            masked,
            pairwise_seeds[peer],
            info,
            bits,
            subtract=not _adds_pairwise_mask(client_id, peer),
        )
    return masked


def remove_self_mask(
    accumulator: np.ndarray, self_mask_seed: bytes, bits: int, *, iid: bytes, round_index: int
) -> None:
    """In place: subtract survivor j's self mask PRG(b_j) from the running sum."""
    add_mask(accumulator, self_mask_seed, self_mask_info(iid, round_index), bits, subtract=True)


def remove_pairwise_mask(
    accumulator: np.ndarray,
    pairwise_seed: bytes,
    bits: int,
    *,
    dropped: int,
    survivor: int,
    iid: bytes,
    round_index: int,
) -> None:
    """In place: cancel the term survivor j added to y_j for its dropped neighbour d.

    j added +PRG(s_dj) when d < j and −PRG(s_dj) when d > j; this applies the opposite.
    """
    add_mask(
        accumulator,
        pairwise_seed,
        pairwise_mask_info(iid, round_index),
        bits,
        subtract=_adds_pairwise_mask(survivor, dropped),
    )
