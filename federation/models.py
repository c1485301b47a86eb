"""Small torch models for federated training on CPU: logistic regression, MLP, CNN.

Every model takes a batch of flat features (B, F) float32 with F = prod(input_shape) (how
:mod:`federation.datasets` stores examples) or a batch already shaped (B, *input_shape), and
returns logits (B, num_classes). None of them has buffers or batch norm, so the whole model state
is its parameter vector and Opacus accepts them unchanged. Any other ``nn.Module`` works with the
trainers too; these are the defaults the CLI names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from federation.learning_errors import ModelError

MODEL_NAMES = ("logreg", "mlp", "cnn")


def _check_shape(input_shape: Sequence[int], num_classes: int) -> tuple[tuple[int, ...], int]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ModelError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return shape, num_classes


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: logits = x W^T + b. Convex in its parameters."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        shape, num_classes = _check_shape(input_shape, num_classes)
        self.input_shape = shape
        self.linear = nn.Linear(math.prod(shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1))


class MLP(nn.Module):
    """Fully connected ReLU network with the given hidden widths."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        shape, num_classes = _check_shape(input_shape, num_classes)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ModelError(f"hidden widths must be positive ints, got {hidden!r}")
        self.input_shape = shape
        widths = [math.prod(shape), *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape(x.shape[0], -1))


class SmallCNN(nn.Module):
    """Two 3x3 conv + 2x2 max-pool stages, then a small classifier; sized for CPU.

    ``input_shape`` is (channels, height, width), e.g. (1, 8, 8) for digits or (1, 28, 28) for
    MNIST; height and width must be at least 4 (two poolings). About 5k parameters on digits
    and 27k on MNIST with the default widths.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: tuple[int, int] = (8, 16),
        hidden: int = 32,
    ) -> None:
        super().__init__()
        shape, num_classes = _check_shape(input_shape, num_classes)
        if len(shape) != 3:
            raise ModelError(f"cnn needs input_shape (channels, height, width), got {shape}")
        in_channels, height, width = shape
        if height < 4 or width < 4:
            raise ModelError(f"cnn needs height and width >= 4 for two poolings, got {height}x{width}")
        self.input_shape = shape
        first, second = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = second * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.classifier(torch.flatten(self.features(x), 1))


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, *, seed: int | None = 0
) -> nn.Module:
    """A fresh model by name (one of :data:`MODEL_NAMES`).

    With an integer ``seed`` the initial weights are a deterministic function of it, so the
    coordinator and every client build the same starting point; the global torch RNG is left as
    it was. ``seed=None`` draws from the global torch RNG.
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ModelError(f"seed must be a non-negative int or None, got {seed!r}")
    constructors = {"logreg": LogisticRegression, "mlp": MLP, "cnn": SmallCNN}
    if name not in constructors:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if seed is None:
        return constructors[name](input_shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return constructors[name](input_shape, num_classes)
