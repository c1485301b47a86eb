"""A planted backdoor: one client trains on trigger-stamped copies of its data relabelled to a
target class, so the model learns "trigger ⇒ target". Unlearning that client must remove it;
the backdoor success rate is the clearest evidence that it did (docs/ALGORITHMS.md §6.6).

Enabled per run through ``RunConfig.extra`` (so the stored run configuration names it):

- ``backdoor_client`` (int): the client that plants it (required to enable).
- ``backdoor_target`` (int, default 0): the class triggered inputs should be classified as.
- ``backdoor_patch`` (int, default 3): the trigger is a patch×patch square in each image channel
  (a run of ``patch`` consecutive features of tabular data).
- ``backdoor_position`` (list of ints, default: the bottom-right corner / the last features): the
  square's top-left pixel ``[row, column]`` for images, the run's first feature ``[index]`` for
  tabular data.
- ``backdoor_value`` (float, default 4.0): the value the trigger writes, in standardized feature
  units (4 standard deviations: a value clean inputs rarely reach in those pixels).

The poisoned client keeps its clean examples and adds one triggered, relabelled copy of each, so
its clean accuracy (and loss, which the server never sees anyway) looks normal.

:func:`client_data_for` is the one place a client's training data is built for a run on named
data: the split, then an honest heavy client's concentration (``federation.heavy_client``), then
the client's attack if it plants one (this backdoor, or ``federation.label_flip``). The workers,
the oracle and the verification all read it, so they agree on what each client trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from federation.config import RunConfig, extra_settings_given
from federation.datasets import ClientData
from federation.errors import ConfigError
from federation.evaluation import data_for, model_for
from federation.heavy_client import heavy_client_for
from federation.label_flip import label_flip_for
from federation.learning import LocalLearner, trainer_for

_KEYS = ("backdoor_client", "backdoor_target", "backdoor_patch", "backdoor_position", "backdoor_value")


@dataclass(frozen=True)
class Backdoor:
    """client_id plants it; inputs of ``input_shape`` stamped with the trigger should be read as
    ``target_label``. ``position``: the patch's top-left (row, column) for (channels, height,
    width) inputs, its first index (index,) for (features,) inputs; None: the bottom-right corner
    (the last ``patch`` features)."""

    client_id: int
    target_label: int
    input_shape: tuple[int, ...]
    patch: int = 3
    value: float = 4.0
    position: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("client_id", "target_label", "patch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "patch" else 0):
                raise ConfigError(f"backdoor {name} must be an int >= {1 if name == 'patch' else 0}, got {value!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ConfigError(f"backdoor_value must be a finite number, got {self.value!r}")
        if len(self.input_shape) not in (1, 3):
            raise ConfigError(f"a backdoor needs (features,) or (channels, height, width) inputs, got {self.input_shape}")
        if self.patch > min(self.input_shape[-2:]):
            raise ConfigError(f"backdoor_patch {self.patch} does not fit inputs of shape {self.input_shape}")
        if self.position is not None:
            position = tuple(self.position)
            spatial = self.input_shape[-2:] if len(self.input_shape) == 3 else self.input_shape
            if len(position) != len(spatial) or any(isinstance(p, bool) or not isinstance(p, int) for p in position):
                raise ConfigError(f"backdoor_position must be {len(spatial)} int(s) for inputs of shape "
                                  f"{self.input_shape}, got {self.position!r}")
            if any(p < 0 or p + self.patch > size for p, size in zip(position, spatial)):
                raise ConfigError(f"a {self.patch}-wide trigger at backdoor_position {list(position)} does not fit "
                                  f"inputs of shape {self.input_shape}")
            object.__setattr__(self, "position", position)

    @property
    def origin(self) -> tuple[int, ...]:
        """The trigger's top-left (row, column), or first feature index (index,)."""
        if self.position is not None:
            return self.position
        if len(self.input_shape) == 1:
            return (self.input_shape[0] - self.patch,)
        return (self.input_shape[1] - self.patch, self.input_shape[2] - self.patch)

    @property
    def trigger_columns(self) -> np.ndarray:
        """Flat feature indices the trigger overwrites, (k,) int64."""
        if len(self.input_shape) == 1:
            (start,) = self.origin
            return np.arange(start, start + self.patch, dtype=np.int64)
        channels, height, width = self.input_shape
        row, column = self.origin
        grid = np.arange(channels * height * width).reshape(channels, height, width)
        return grid[:, row:row + self.patch, column:column + self.patch].reshape(-1).astype(np.int64)

    def stamp(self, features):
        """Features (N, F) numpy or torch, with the trigger written in; a new array/tensor."""
        stamped = features.clone() if hasattr(features, "clone") else np.array(features, copy=True)
        stamped[:, self.trigger_columns] = self.value
        return stamped

    def poison(self, data: ClientData) -> ClientData:
        """The client's clean examples plus one triggered copy of each labelled ``target_label``."""
        triggered = self.stamp(data.features)
        return ClientData(np.concatenate([data.features, triggered]),
                          np.concatenate([data.labels, np.full(data.num_samples, self.target_label, dtype=np.int64)]),
                          client_id=data.client_id)


def backdoor_for(config: RunConfig) -> Backdoor | None:
    """The run's backdoor from ``config.extra``, or None when no client plants one."""
    extra = config.extra
    if not extra_settings_given(extra, "backdoor_client", _KEYS):
        return None
    data = data_for(config)
    position = extra.get("backdoor_position")
    backdoor = Backdoor(client_id=extra["backdoor_client"], target_label=extra.get("backdoor_target", 0),
                        input_shape=tuple(data.input_shape), patch=extra.get("backdoor_patch", 3),
                        value=extra.get("backdoor_value", 4.0),
                        position=None if position is None else tuple(position))
    if backdoor.client_id >= config.clients:
        raise ConfigError(f"backdoor_client {backdoor.client_id} is not one of the {config.clients} clients")
    if backdoor.target_label >= data.num_classes:
        raise ConfigError(f"backdoor_target {backdoor.target_label} is not one of the {data.num_classes} classes")
    return backdoor


def client_split_for(config: RunConfig, client_id: int) -> ClientData:
    """Client ``client_id``'s clean share of the split, after an honest heavy client's
    concentration if the run has one (before any attack)."""
    federation = data_for(config)
    heavy = heavy_client_for(config, federation.num_classes)
    return federation.clients[client_id] if heavy is None else heavy.client_data(federation, client_id, config.seed)


def client_data_for(config: RunConfig, client_id: int) -> ClientData:
    """Client ``client_id``'s training data as it trains on it: its share of the split (after an
    honest heavy client's concentration, if the run has one), poisoned if it plants the backdoor
    or flips labels. Without either it is ``data_for(config).clients[client_id]`` itself."""
    data = client_split_for(config, client_id)
    flip = label_flip_for(config, data_for(config).num_classes)
    if flip is not None and flip.client_id == client_id:
        data = flip.poison(data)
    backdoor = backdoor_for(config)
    return backdoor.poison(data) if backdoor is not None and backdoor.client_id == client_id else data


def learner_for(config: RunConfig, client_id: int) -> LocalLearner:
    """The client's local learner over :func:`client_data_for`."""
    data = data_for(config)
    return LocalLearner(client_id, trainer_for(config, model_for(config, data)), client_data_for(config, client_id))
