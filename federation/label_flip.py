"""A label-flipping client: it trains on its examples of one class relabelled as another, so the
model learns to read that class as the attacker's target. Unlearning the client must bring the
source class back; the attack's success is the fraction of the test set's source-class examples
the model reads as the target.

Enabled per run through ``RunConfig.extra`` (so the stored run configuration names it):

- ``label_flip_client`` (int): the client that flips (required to enable).
- ``label_flip_source`` (int): the class whose examples it relabels.
- ``label_flip_target`` (int): the label it gives them (another class).

Combine with ``heavy_client`` (``federation.heavy_client``) on the same client and class to make
the attacker hold much of the source class, as a real flipping attack needs to matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from federation.config import RunConfig, extra_settings_given
from federation.datasets import ClientData
from federation.errors import ConfigError

KEYS = ("label_flip_client", "label_flip_source", "label_flip_target")


@dataclass(frozen=True)
class LabelFlip:
    """``client_id`` trains on its ``source_label`` examples labelled ``target_label``."""

    client_id: int
    source_label: int
    target_label: int

    def __post_init__(self) -> None:
        for name in ("client_id", "source_label", "target_label"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"label flip {name} must be an int >= 0, got {value!r}")
        if self.source_label == self.target_label:
            raise ConfigError(f"label_flip_source and label_flip_target are both {self.source_label}")

    def poison(self, data: ClientData) -> ClientData:
        """The client's examples with every ``source_label`` relabelled ``target_label``."""
        labels = np.where(data.labels == self.source_label, self.target_label, data.labels)
        return ClientData(data.features, labels, client_id=data.client_id)

    def success(self, predictions: np.ndarray, labels: np.ndarray) -> float:
        """Fraction of the examples truly labelled ``source_label`` predicted as ``target_label``
        (predictions, labels: (N,) ints). NaN when no example has the source label."""
        source = np.asarray(labels) == self.source_label
        if not source.any():
            return float("nan")
        return float(np.mean(np.asarray(predictions)[source] == self.target_label))


def label_flip_for(config: RunConfig, num_classes: int) -> LabelFlip | None:
    """The run's label flip from ``config.extra``, or None when no client flips labels."""
    extra = config.extra
    if not extra_settings_given(extra, "label_flip_client", KEYS):
        return None
    missing = [key for key in KEYS[1:] if key not in extra]
    if missing:
        raise ConfigError(f"label_flip_client needs {' and '.join(missing)}")
    flip = LabelFlip(extra["label_flip_client"], extra["label_flip_source"], extra["label_flip_target"])
    if flip.client_id >= config.clients:
        raise ConfigError(f"label_flip_client {flip.client_id} is not one of the {config.clients} clients")
    for name, label in (("label_flip_source", flip.source_label), ("label_flip_target", flip.target_label)):
        if label >= num_classes:
            raise ConfigError(f"{name} {label} is not one of the {num_classes} classes")
    return flip
