"""The public parameters of one round, as the server announces them and every client checks them.

A round plan fixes everything a client needs to turn its update into integers the secure sum can
carry: the lattice codec (lattice, step, bits, clip norm, rotation), the public round seed (rotation
signs and dithers derive from it), and the integer noise each client adds. Its canonical bytes go
into SecAgg+'s ``application_config``, so they are bound into every signed key advertisement: a
client cannot be shown one plan while another client sees a different one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from federation.errors import ConfigError
from privacy.mechanisms import DistributedNoise, LocalNoise
from secagg.codec import CodecConfig, LatticeCodec
from secagg.lattice import get_lattice
from secagg.rotation import padded_dimension

PLAN_VERSION = 1


@dataclass(frozen=True)
class NoiseShare:
    """The integer noise each client adds to its coordinates before masking, as announced.

    ``mode``: "none", "local" (each release is (ε, δ)-DP on its own) or "distributed" (the secure
    sum of at least ``min_survivors`` shares carries the central guarantee); ``mechanism``:
    "skellam" (``scale`` = the client's variance) or "discrete_gaussian" (``scale`` = the
    client's σ); sensitivities are of the integer coordinates (replace-one for local, add/remove
    for distributed); ``dimension``: coordinates per client. ``mechanism_object`` gives the
    ``privacy.mechanisms`` description that samples the noise and names the event to charge.
    """

    mode: str = "none"
    mechanism: str = "skellam"
    scale: float = 0.0
    l2_sensitivity: float = 0.0
    l1_sensitivity: float = 0.0
    min_survivors: int = 1
    dimension: int = 1

    @classmethod
    def of(cls, noise: LocalNoise | DistributedNoise | None) -> NoiseShare:
        if noise is None:
            return cls()
        if isinstance(noise, LocalNoise):
            return cls("local", noise.mechanism, noise.scale, noise.l2_sensitivity, noise.l1_sensitivity)
        return cls("distributed", noise.mechanism, noise.share_scale, noise.l2_sensitivity, noise.l1_sensitivity,
                   noise.min_survivors, noise.dimension)

    def mechanism_object(self) -> LocalNoise | DistributedNoise | None:
        if self.mode == "none":
            return None
        if self.mode == "local":
            return LocalNoise(self.mechanism, self.scale, self.l2_sensitivity, self.l1_sensitivity)
        return DistributedNoise(self.mechanism, self.scale, self.min_survivors, 0, self.l2_sensitivity,
                                self.l1_sensitivity, self.dimension)

    @property
    def ledger_stream(self) -> str:
        """The ledger stream this noise's releases are charged to (``privacy.ledger``)."""
        return "update-ldp" if self.mode == "local" else "distributed"

    @property
    def floor(self) -> int:
        """Fewest inputs a sum may hold for its noise to be as calibrated (1 unless distributed)."""
        return self.min_survivors if self.mode == "distributed" else 1

    @property
    def std(self) -> float:
        """Standard deviation of one client's noise on one coordinate."""
        if self.mode == "none":
            return 0.0
        return math.sqrt(self.scale) if self.mechanism == "skellam" else self.scale


@dataclass(frozen=True)
class RoundPlan:
    """Everything public about round ``round_index`` (bytes are hex in JSON)."""

    round_index: int
    round_seed: bytes
    dimension: int
    lattice: str
    step: float
    bits: int
    clip_norm: float
    noise: NoiseShare
    rotate: bool = True

    def codec(self) -> LatticeCodec:
        return LatticeCodec(CodecConfig(lattice=self.lattice, step=self.step, bits=self.bits,
                                        rotate=self.rotate, clip_norm=self.clip_norm))

    def coordinates(self) -> int:
        return self.codec().coordinates(self.dimension)

    def to_bytes(self) -> bytes:
        values = asdict(self)
        values["round_seed"] = self.round_seed.hex()
        values["version"] = PLAN_VERSION
        return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundPlan:
        try:
            values = json.loads(data)
            if values.pop("version") != PLAN_VERSION:
                raise ConfigError("round plan has an unsupported version")
            values["round_seed"] = bytes.fromhex(values["round_seed"])
            values["noise"] = NoiseShare(**values["noise"])
            return cls(**values)
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"malformed round plan: {error}") from None


def default_step(clip_norm: float, dimension: int, lattice: str, *, signal_to_step: float = 8.0) -> float:
    """Δ such that a clipped, rotated coordinate has standard deviation ``signal_to_step`` steps.

    After the randomized Hadamard rotation a coordinate of an update of norm C is ≈ N(0, C²/d');
    at 8 steps per standard deviation the lattice's rounding (variance G(Λ)V^{2/n} steps²) is
    ~0.1% of the signal, and the rounding's share of the L2 sensitivity stays about 1/8.
    """
    padded = padded_dimension(dimension)
    return clip_norm / (signal_to_step * math.sqrt(padded)) * _unit_scale(lattice)


def _unit_scale(lattice: str) -> float:
    # A step in lattice units covers V^{1/n} per coordinate; normalise so every lattice gets the
    # same rounding granularity per coordinate.
    spec = get_lattice(lattice)
    return spec.volume ** (1.0 / spec.dimension)


def point_sensitivity(clip_norm: float, step: float, dimension: int | Sequence[int], lattice: str, *,
                      local: bool) -> float:
    """L2 sensitivity of one client's coordinates in lattice-point units (deterministic bound).

    A client's lattice point is p = Q(x/Δ + d) with ‖x‖ <= C and the dither d, like the rounding
    error, inside the Voronoi cell (norm <= covering radius ρ per block): ‖p‖ <= C/Δ + 2ρ√blocks.
    Removing a client (distributed DP) shifts the sum by p; replacing its input (local DP, same
    dither) shifts it by at most 2C/Δ + 2ρ√blocks.

    ``dimension`` may be a sequence: one release coded as several separately rotated vectors
    (FedP3's layer groups), clipped to C together; its blocks are those of all the vectors.
    """
    spec = get_lattice(lattice)
    dimensions = (dimension,) if isinstance(dimension, int) else tuple(dimension)
    blocks = sum(math.ceil(padded_dimension(size) / spec.dimension) for size in dimensions)
    rounding = 2.0 * spec.covering_radius * math.sqrt(blocks)
    return (2.0 if local else 1.0) * clip_norm / step + rounding


def coordinate_l2_sensitivity(clip_norm: float, step: float, dimension: int | Sequence[int], lattice: str, *,
                              local: bool) -> float:
    """L2 sensitivity of one client's integer coordinates z = p·G⁻¹, the noise's domain.

    Integer noise must cover every coordinate vector (noise on a sub-lattice would leave the coset
    of p visible), so the sensitivity is measured on z and pays ‖G⁻¹‖ (1 for Z, 1.93 for D4, 11.2
    for the E8 basis of docs/ALGORITHMS.md §2.1): with noise on, Z is the lattice to use.
    """
    spec = get_lattice(lattice)
    inverse_norm = float(1.0 / min(_singular_values(spec.generator)))
    return inverse_norm * point_sensitivity(clip_norm, step, dimension, lattice, local=local)


def _singular_values(matrix):
    import numpy as np

    return np.linalg.svd(np.asarray(matrix, dtype=float), compute_uv=False)
