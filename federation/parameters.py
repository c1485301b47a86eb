"""Model parameters as one flat float32 vector, and back.

Federated updates travel as flat vectors (clip, rotate, quantize, mask all work on (d,) arrays).
The order is ``module.named_parameters()`` order, each tensor flattened row-major; the
:class:`ParameterLayout` records names, shapes and offsets so a layer group (FedP3) or a single
tensor can be addressed inside the vector. Only parameters travel: buffers (batch-norm running
statistics) stay local, which is what FedAvg implementations commonly do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from federation.learning_errors import ModelError


@dataclass(frozen=True)
class ParameterLayout:
    """Where each named parameter tensor sits in the flat vector.

    ``names[i]`` has shape ``shapes[i]`` and occupies ``[offsets[i], offsets[i] + prod(shapes[i]))``;
    ``size`` is the total length d.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, module: nn.Module) -> ParameterLayout:
        if not isinstance(module, nn.Module):
            raise ModelError(f"expected a torch nn.Module, got {type(module).__name__}")
        names, shapes, offsets = [], [], []
        offset = 0
        for name, parameter in module.named_parameters():
            names.append(name)
            shapes.append(tuple(parameter.shape))
            offsets.append(offset)
            offset += parameter.numel()
        if offset == 0:
            raise ModelError("the module has no parameters")
        return cls(tuple(names), tuple(shapes), tuple(offsets), offset)

    def slice_of(self, name: str) -> slice:
        """The range of parameter ``name`` inside the flat vector."""
        try:
            i = self.names.index(name)
        except ValueError:
            raise ModelError(f"no parameter named {name!r}; the model has {', '.join(self.names)}") from None
        return slice(self.offsets[i], self.offsets[i] + math.prod(self.shapes[i]))


def parameter_count(module: nn.Module) -> int:
    """Number of scalar parameters d of ``module``."""
    return ParameterLayout.of(module).size


def flatten_parameters(module: nn.Module) -> np.ndarray:
    """(d,) float32 copy of the module's parameters in ``named_parameters()`` order."""
    ParameterLayout.of(module)  # validates the module and that it has parameters
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to(torch.float32) for p in module.parameters()])
    return flat.cpu().numpy().copy()


def load_parameters(module: nn.Module, vector: np.ndarray) -> None:
    """Overwrite the module's parameters in place with ``vector`` ((d,) float, finite)."""
    layout = ParameterLayout.of(module)
    vector = np.asarray(vector)
    if vector.ndim != 1 or vector.shape[0] != layout.size:
        raise ModelError(f"parameter vector has shape {vector.shape}; the model needs ({layout.size},)")
    if not np.issubdtype(vector.dtype, np.floating):
        raise ModelError(f"parameter vector must be floating point, got {vector.dtype}")
    if not np.all(np.isfinite(vector)):
        raise ModelError("parameter vector contains NaN or infinity")
    source = torch.from_numpy(np.ascontiguousarray(vector))
    with torch.no_grad():
        for parameter, offset in zip(module.parameters(), layout.offsets):
            count = parameter.numel()
            parameter.copy_(source[offset : offset + count].reshape(parameter.shape).to(parameter.dtype))
