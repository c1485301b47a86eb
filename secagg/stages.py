"""The four SecAgg+ stages, named once (Bonawitz et al., CCS 2017; Flower's SecAgg+ workflow).

A round runs them in this order; the server closes each with ``advance()``:

    ADVERTISE_KEYS  clients sign and send two fresh X25519 public keys
    SHARE_KEYS      clients Shamir-share their self-mask seed and mask key to their neighbours
    MASKED_INPUT    clients send their input plus pairwise and self masks, mod 2**b
    UNMASK          survivors send seed shares of survivors and key shares of dropped clients
"""

from __future__ import annotations

from typing import Final

from secagg.errors import ConfigurationError

ADVERTISE_KEYS: Final = "advertise_keys"
SHARE_KEYS: Final = "share_keys"
MASKED_INPUT: Final = "masked_input"
UNMASK: Final = "unmask"

#: The stages in protocol order.
STAGES: Final[tuple[str, ...]] = (ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT, UNMASK)

__all__ = ["ADVERTISE_KEYS", "MASKED_INPUT", "SHARE_KEYS", "STAGES", "UNMASK", "stage_index"]


def stage_index(stage: str) -> int:
    """Position of ``stage`` in ``STAGES`` (0..3); ConfigurationError for an unknown name."""
    try:
        return STAGES.index(stage)
    except ValueError:
        raise ConfigurationError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}") from None
