"""What the server tells one client about a FedP3 round, as bytes (docs/ALGORITHMS.md §4).

A FedP3 round runs one secure sum per layer group. Each group has its own ``RoundPlan``
(dimension = the group's parameters, its own public seed derived from the round seed), bound into
that group's SecAgg+ configuration exactly as a whole-model plan is. A client's
:class:`FedP3Offer` gathers the plans of the groups it uploads with the rest of what it needs to
train and to check the round before it spends budget: its public aggregation weight, the clipping
mode, the keep ratio of its pruned model, and the one ledger event the round charges it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from federation.errors import ConfigError
from privacy.events import Event, event_from_json, event_to_json
from secagg.context import encode_parts
from secagg.kdf import derive_key

OFFER_VERSION = 1
_GROUP_SEED_LABEL = "fedvault/federation/fedp3-group-seed"


def group_seed(round_seed: bytes, group: int) -> bytes:
    """The public 32-byte seed of layer group ``group``'s plan (rotation and dithers), from the
    round's public seed: every group's codec randomness is independent of every other's."""
    return derive_key(round_seed, salt=b"", info=encode_parts(_GROUP_SEED_LABEL, group))


@dataclass(frozen=True)
class FedP3Offer:
    """One client's FedP3 round (public, bytes are hex in JSON).

    ``plans``: group index -> that group's ``RoundPlan`` bytes, for the groups this client
    uploads this round (its owned body groups with a sum this round, and the head); ``weight``:
    its public aggregation weight in (0, 1] (``privacy.fedp3.upload_weights``); ``clipping``:
    "joint" or "per_group"; ``keep_ratio``: the magnitude-pruning ratio of the non-owned weights
    it receives; ``event``: what the round charges it, once (None without noise);
    ``round_seed``: the round's public seed (the batch order of its local training).
    """

    round_index: int
    round_seed: bytes
    plans: Mapping[int, bytes]
    weight: float
    clipping: str
    keep_ratio: float
    event: Event | None = None

    def __post_init__(self) -> None:
        if not self.plans:
            raise ConfigError("a FedP3 offer names at least one group to upload")
        object.__setattr__(self, "plans", MappingProxyType({int(g): bytes(p) for g, p in self.plans.items()}))

    def to_bytes(self) -> bytes:
        values = {
            "version": OFFER_VERSION, "round_index": self.round_index, "round_seed": self.round_seed.hex(),
            "plans": {str(group): plan.hex() for group, plan in sorted(self.plans.items())},
            "weight": self.weight, "clipping": self.clipping, "keep_ratio": self.keep_ratio,
            "event": None if self.event is None else event_to_json(self.event),
        }
        return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> FedP3Offer:
        try:
            values = json.loads(data)
            if values.pop("version") != OFFER_VERSION:
                raise ConfigError("FedP3 offer has an unsupported version")
            values["round_seed"] = bytes.fromhex(values["round_seed"])
            values["plans"] = {int(group): bytes.fromhex(plan) for group, plan in values["plans"].items()}
            if values["event"] is not None:
                values["event"] = event_from_json(values["event"])
            return cls(**values)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ConfigError(f"malformed FedP3 offer: {error}") from None
