"""The parameters of one SecAgg+ round, shared by the server and every client.

The server sends a ``RoundConfig`` in its first message; each client signs its key advertisement
over ``config_digest(config)``, so a client whose view of the parameters (including the opaque
``application_config`` that carries codec and DP settings) differs from its neighbours' fails
signature verification instead of silently producing a wrong sum.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from secagg.context import encode_parts
from secagg.errors import ConfigurationError

#: Length of the server's fresh per-round instance nonce, bytes.
INSTANCE_NONCE_LENGTH: Final = 32
#: Client ids travel as unsigned 32-bit integers.
MAX_CLIENT_ID: Final = 2**32 - 1
#: Largest number of clients in one round (the wire format caps list lengths accordingly).
MAX_CLIENTS: Final = 2**20
#: Largest vector length, coordinates (one masked vector must fit in a single message).
MAX_VECTOR_LENGTH: Final = 2**30
#: Largest opaque application configuration, bytes.
MAX_APPLICATION_CONFIG_LENGTH: Final = 2**20
#: Smallest reconstruction threshold: with t = 1 every single share *is* the secret.
MIN_THRESHOLD: Final = 2

_DIGEST_LABEL: Final = "fedvault/secagg/round-config/v1"
_PERMUTATION_LABEL: Final = "fedvault/secagg/harary-permutation/v1"

__all__ = [
    "INSTANCE_NONCE_LENGTH",
    "MAX_APPLICATION_CONFIG_LENGTH",
    "MAX_CLIENTS",
    "MAX_CLIENT_ID",
    "MAX_VECTOR_LENGTH",
    "MIN_THRESHOLD",
    "RoundConfig",
    "config_digest",
    "permutation_seed",
]


def _require_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be in {low}..{high}, got {value}")
    return value


@dataclass(frozen=True)
class RoundConfig:
    """Parameters of one round.

    Attributes:
        round_index: the round number r, 0 .. 2**63 - 1.
        instance_nonce: 32 fresh random bytes chosen by the server for this attempt of the round
            (a retried round gets a new nonce and fresh keys); also seeds the neighbour graph.
        client_ids: the sampled clients, distinct ints in 0 .. 2**32 - 1; stored sorted.
        neighbours_k: k, the degree of the Harary neighbour graph; 1 <= k <= n - 1 and n*k even
            (k = n - 1 is classic SecAgg, every client a neighbour of every other).
        threshold: t, the Shamir reconstruction threshold and the minimum number of survivors;
            2 <= t <= k + 1 (a client's secrets are shared among itself and its k neighbours).
        bits: b, the masked vectors live in Z_{2**b}; 1 <= b <= 32.
        vector_length: m, coordinates per masked vector, 1 .. 2**30.
        application_config: opaque bytes (codec, DP parameters) bound into every signed
            advertisement so all clients provably agree on them; at most 1 MiB.
        minimum_survivors: the fewest clients that may remain at any stage, t <= value <= n
            (default t). In a sparse graph t is a per-neighbourhood threshold; this is the global
            floor on the inputs in the sum (docs/ALGORITHMS.md §1.6, Google's minimum aggregate), e.g. so
            that a sum always carries enough distributed-DP noise shares (§3.5).
    """

    round_index: int
    instance_nonce: bytes
    client_ids: tuple[int, ...]
    neighbours_k: int
    threshold: int
    bits: int
    vector_length: int
    application_config: bytes = b""
    minimum_survivors: int | None = None

    def __post_init__(self) -> None:
        _require_int("round_index", self.round_index, 0, 2**63 - 1)
        if not isinstance(self.instance_nonce, (bytes, bytearray)):
            raise ConfigurationError(
                f"instance_nonce must be bytes, got {type(self.instance_nonce).__name__}"
            )
        if len(self.instance_nonce) != INSTANCE_NONCE_LENGTH:
            raise ConfigurationError(
                f"instance_nonce must be {INSTANCE_NONCE_LENGTH} bytes, got {len(self.instance_nonce)}"
            )
        object.__setattr__(self, "instance_nonce", bytes(self.instance_nonce))
        if isinstance(self.client_ids, (str, bytes)) or not hasattr(self.client_ids, "__iter__"):
            raise ConfigurationError(
                f"client_ids must be a sequence of ints, got {type(self.client_ids).__name__}"
            )
        ids = tuple(self.client_ids)
        for client_id in ids:
            _require_int("client id", client_id, 0, MAX_CLIENT_ID)
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
            raise ConfigurationError(f"client_ids repeat {repeated[:5]}; each client appears once")
        n = len(ids)
        if not 2 <= n <= MAX_CLIENTS:
            raise ConfigurationError(
                f"a round needs 2..{MAX_CLIENTS} clients, got {n} (a sum of one input reveals it)"
            )
        object.__setattr__(self, "client_ids", tuple(sorted(ids)))
        k = _require_int("neighbours_k", self.neighbours_k, 1, n - 1)
        if (n * k) % 2:
            raise ConfigurationError(
                f"no {k}-regular graph on {n} clients exists (n*k must be even); "
                f"choose an even neighbours_k, or k = n - 1"
            )
        _require_int("threshold", self.threshold, MIN_THRESHOLD, k + 1)
        _require_int("bits", self.bits, 1, 32)
        _require_int("vector_length", self.vector_length, 1, MAX_VECTOR_LENGTH)
        if not isinstance(self.application_config, (bytes, bytearray)):
            raise ConfigurationError(
                f"application_config must be bytes, got {type(self.application_config).__name__}"
            )
        if len(self.application_config) > MAX_APPLICATION_CONFIG_LENGTH:
            raise ConfigurationError(
                f"application_config is {len(self.application_config)} bytes; "
                f"the limit is {MAX_APPLICATION_CONFIG_LENGTH}"
            )
        object.__setattr__(self, "application_config", bytes(self.application_config))
        if self.minimum_survivors is None:
            object.__setattr__(self, "minimum_survivors", self.threshold)
        _require_int("minimum_survivors", self.minimum_survivors, self.threshold, n)

    @property
    def client_count(self) -> int:
        """n, the number of sampled clients."""
        return len(self.client_ids)


def config_digest(config: RoundConfig) -> bytes:
    """SHA-256 over every field of ``config`` (32 bytes); signed into each key advertisement."""
    if not isinstance(config, RoundConfig):
        raise ConfigurationError(f"expected a RoundConfig, got {type(config).__name__}")
    return _digest(config)


# Cached: the server and each client check many advertisements against the same config.
@lru_cache(maxsize=64)
def _digest(config: RoundConfig) -> bytes:
    return hashlib.sha256(
        encode_parts(
            _DIGEST_LABEL,
            config.round_index,
            config.instance_nonce,
            len(config.client_ids),
            *config.client_ids,
            config.neighbours_k,
            config.threshold,
            config.bits,
            config.vector_length,
            config.application_config,
            config.minimum_survivors,
        )
    ).digest()


def permutation_seed(config: RoundConfig) -> bytes:
    """The public 32-byte seed of the round's Harary ring permutation (from the instance nonce)."""
    if not isinstance(config, RoundConfig):
        raise ConfigurationError(f"expected a RoundConfig, got {type(config).__name__}")
    return hashlib.sha256(
        encode_parts(_PERMUTATION_LABEL, config.round_index, config.instance_nonce)
    ).digest()
