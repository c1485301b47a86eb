"""The client side of LDP-FedP3: train the globally pruned model, upload owned groups + head.

FedP3 (Yi et al., ICLR 2024, arXiv 2404.09816; docs/ALGORITHMS.md §4). The server prunes the global
model per client (``privacy.fedp3.prune_for_client``: owned body groups and the head dense, other
weights magnitude-pruned); the client trains ALL its parameters with the pruned entries held at
zero (its capacity), then uploads only its owned body groups and the head, clipped (and weighted)
by ``privacy.fedp3.client_upload``. Quantization, noise and the per-group secure sums are the
coordinator's, exactly as for a whole-model update. The group logic is H4b's ``privacy.fedp3``;
this module only connects it to the local trainers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from federation.learning_errors import TrainingError
from federation.parameters import ParameterLayout
from federation.trainers import ClientInput, LocalTrainer, TrainResult
from privacy.fedp3 import ClientUpload, GroupLayout, PrunedModel, client_upload


def state_to_vector(state: Mapping[str, Any], layout: ParameterLayout) -> np.ndarray:
    """(d,) float32 vector of the named tensors/arrays of ``state``, in ``layout`` order."""
    parts = []
    for name, shape in zip(layout.names, layout.shapes):
        if name not in state:
            raise TrainingError(f"state has no parameter {name!r}")
        value = state[name]
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if tuple(array.shape) != shape:
            raise TrainingError(f"parameter {name!r} has shape {tuple(array.shape)}, the model needs {shape}")
        parts.append(array.astype(np.float32).ravel())
    return np.concatenate(parts)


def vector_to_state(vector: np.ndarray, layout: ParameterLayout) -> dict[str, np.ndarray]:
    """Inverse of :func:`state_to_vector`: parameter name -> float64 array of its shape."""
    vector = np.asarray(vector)
    if vector.shape != (layout.size,):
        raise TrainingError(f"vector has shape {vector.shape}; the layout needs ({layout.size},)")
    return {
        name: vector[layout.slice_of(name)].reshape(shape).astype(np.float64)
        for name, shape in zip(layout.names, layout.shapes)
    }


@dataclass(frozen=True)
class FedP3ClientResult:
    """``training``: the local run (its ``update`` covers the whole pruned model, zero on pruned
    entries); ``upload``: the clipped owned groups and head to encode, one secure sum per group."""

    training: TrainResult
    upload: ClientUpload


def train_fedp3_client(
    trainer: LocalTrainer,
    pruned: PrunedModel,
    groups: GroupLayout,
    uploaded_groups: Sequence[int],
    data: ClientInput,
    round_seed: bytes,
    *,
    client_id: int,
    clip_norm: float,
    weight: float = 1.0,
    clipping: str = "joint",
) -> FedP3ClientResult:
    """Train from ``pruned.state`` with its masks held, then build the FedP3 upload.

    ``uploaded_groups`` is ``assignment.uploaded_by(client_id)``; ``weight`` the client's public
    weight from ``privacy.fedp3.upload_weights``. Raises TrainingError when the pruned state does
    not fit the trainer's model, FedP3Error (from privacy) for bad groups or weights.
    """
    if not isinstance(trainer, LocalTrainer):
        raise TrainingError(f"trainer must be a LocalTrainer, got {type(trainer).__name__}")
    if not isinstance(pruned, PrunedModel):
        raise TrainingError(f"pruned must be a privacy.fedp3.PrunedModel, got {type(pruned).__name__}")
    layout = trainer.layout
    start = state_to_vector(pruned.state, layout)
    training = trainer.train(start, data, round_seed, client_id=client_id, keep_masks=dict(pruned.masks))
    upload = client_upload(
        vector_to_state(training.update, layout), groups, uploaded_groups, clip_norm,
        clipping=clipping, weight=weight,
    )
    return FedP3ClientResult(training, upload)
