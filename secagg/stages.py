"""The five SecAgg+ stages, named once (Bonawitz et al., CCS 2017, active-adversary version;
Bell et al., CCS 2020 neighbour graph).

A round runs them in this order; the server closes each with ``advance()``. Each stage names the
adversary it is there to stop (``docs/CONSISTENCY.md`` states the assumptions and the limits):

    ADVERTISE_KEYS  clients sign and send two fresh X25519 public keys. Against a server or relay
                    that swaps keys between clients, rounds or configurations: every key is signed
                    with the client's enrolled Ed25519 identity key over the config digest.
    SHARE_KEYS      clients Shamir-share their self-mask seed and mask key to their neighbours,
                    sealed pairwise (AES-GCM). Against an honest-but-curious server: it relays
                    the shares but cannot open them; fewer than t shares reveal nothing.
    MASKED_INPUT    clients send their input plus pairwise and self masks, mod 2**b. Against an
                    honest-but-curious server: each masked vector alone is uniformly random.
    CONSISTENCY     each survivor signs (round, nonce, instance id, the survivor set it was told).
                    Against a *deviating* server that tells holders different survivor sets to
                    obtain both kinds of share of one client: a client reveals nothing until it
                    holds a quorum of valid signatures on the very set it signed itself.
    UNMASK          survivors send seed shares of survivors and key shares of dropped clients,
                    exactly one kind per owner for the whole round, derived from the signed set
                    (not from the server's request). Against a deviating server that asks some
                    holders for a seed share and others for a key share of the same client.
"""

from __future__ import annotations

from typing import Final

from secagg.errors import ConfigurationError

ADVERTISE_KEYS: Final = "advertise_keys"
SHARE_KEYS: Final = "share_keys"
MASKED_INPUT: Final = "masked_input"
CONSISTENCY: Final = "consistency"
UNMASK: Final = "unmask"

#: The stages in protocol order.
STAGES: Final[tuple[str, ...]] = (ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT, CONSISTENCY, UNMASK)
#: The stages of the protocol without the consistency round (honest-but-curious server only):
#: kept for the attack tests and the benchmark's baseline, never used by the federation.
LEGACY_STAGES: Final[tuple[str, ...]] = (ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT, UNMASK)

__all__ = [
    "ADVERTISE_KEYS",
    "CONSISTENCY",
    "LEGACY_STAGES",
    "MASKED_INPUT",
    "SHARE_KEYS",
    "STAGES",
    "UNMASK",
    "stage_index",
]


def stage_index(stage: str) -> int:
    """Position of ``stage`` in ``STAGES`` (0..4); ConfigurationError for an unknown name."""
    try:
        return STAGES.index(stage)
    except ValueError:
        raise ConfigurationError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}") from None
