"""The lattice codec of a round: model update ↔ integer coordinates whose secure sum decodes to a sum.

Client:  update (clipped to ‖·‖ <= C) → rotate (round seed) → scale by 1/Δ → dithered lattice
         quantize (dither seed from round seed, client id, tensor) → (m,) int64 coordinates.
Server:  Σ coordinates mod 2**b → Voronoi lift (centred lift, then reduce mod 2**b·Λ to the
         representative nearest the origin) → Δ((Σz)G − Σd) → unrotate → Σ of the clients'
         quantized updates.

Everything the server needs to decode (rotation signs, every dither) is regenerated from the
round seed and the surviving client ids; nothing but the coordinates is sent. The step Δ is common
to all clients, which is what makes sums decode to sums (docs/ALGORITHMS.md §2.3).

Bit width (§2.6): ``plan_bits`` picks the smallest b for which the secure sum cannot wrap
(deterministic headroom on the blocks' norms) or wraps with probability at most
``overflow_probability`` (Gaussian tails of the rotated coordinates); ``check_bits`` refuses a
configuration below it with a ``BitWidthError`` that names the knob to turn. A wrap is never
silent. The Voronoi lift makes b depend on the norm of the summed points, not on the skew of the
basis (per-coordinate headroom would cost E8 ~3 extra bits with the §2.1 basis).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import gammainccinv

from secagg.context import encode_parts
from secagg.errors import BitWidthError, ConfigurationError, LatticeError
from secagg.kdf import derive_key
from secagg.lattice import LATTICE_NAMES, get_lattice
from secagg.modular import MAX_BITS, norm_bits, statistical_bits, voronoi_lift
from secagg.quantizer import DitheredQuantizer
from secagg.rotation import padded_dimension, rotate, unrotate

__all__ = ["CodecConfig", "LatticeCodec", "check_bits", "plan_bits"]

ROUND_SEED_LENGTH = 32
_ROTATION_LABEL = "fedvault/codec/rotation"
_DITHER_SEED_LABEL = "fedvault/codec/dither-seed"
_DITHER_LABEL = "fedvault/codec/dither"
# clip_l2 output may exceed C by float rounding; accept that much and plan bits for it.
_CLIP_SLACK = 1e-6


def _positive_finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigurationError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True, kw_only=True)
class CodecConfig:
    """Codec parameters shared by every client of a round (bound into the round's transcript).

    Attributes:
        lattice: "Z", "A2", "D4" or "E8".
        step: Δ > 0 in update units; each coordinate's quantization MSE is Δ²·G(Λ)·V^{2/n}.
        bits: b, 1..32: coordinates are summed mod 2**b.
        rotate: randomized Hadamard rotation before quantization (needed by the statistical
            bit-width rule; without it only the deterministic rule applies).
        clip_norm: C > 0, the L2 bound every encoded update must satisfy.
    """

    lattice: str = "E8"
    step: float
    bits: int
    rotate: bool = True
    clip_norm: float

    def __post_init__(self) -> None:
        if not isinstance(self.lattice, str) or self.lattice not in LATTICE_NAMES:
            raise ConfigurationError(
                f"lattice must be one of {', '.join(LATTICE_NAMES)}, got {self.lattice!r}"
            )
        object.__setattr__(self, "step", _positive_finite(self.step, "step"))
        object.__setattr__(self, "clip_norm", _positive_finite(self.clip_norm, "clip_norm"))
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise ConfigurationError(f"bits must be an int, got {type(self.bits).__name__}")
        if not 1 <= self.bits <= MAX_BITS:
            raise ConfigurationError(f"bits must be in 1..{MAX_BITS}, got {self.bits}")
        object.__setattr__(self, "bits", int(self.bits))
        if not isinstance(self.rotate, bool):
            raise ConfigurationError(f"rotate must be a bool, got {type(self.rotate).__name__}")


def plan_bits(
    clip_norm: float,
    step: float,
    lattice: str,
    clients: int,
    dimension: int,
    noise_std: float = 0.0,
    overflow_probability: float = 1e-6,
    *,
    rotate: bool = True,
) -> int:
    """The smallest bit width b for which the secure sum of ``clients`` encodings decodes exactly
    (always, or with probability at least 1 − ``overflow_probability``).

    The server decodes with ``secagg.modular.voronoi_lift``, exact while every summed block lies
    within R·(packing radius) of the origin, R = 2**b. In lattice units a client's block satisfies
    ‖λ‖ <= C/Δ + 2ρ (clipped input, plus dither and quantization error each within the covering
    radius ρ), so without noise the sum's blocks have norm <= n·(C/Δ + 2ρ) and ``norm_bits`` gives
    a b that never wraps. With rotation every coordinate is ≈ N(0, ‖Σx‖²/d'); even when all
    clients' updates point the same way, a summed coordinate has standard deviation at most
    n·C/(Δ√d') + 2√n·σ_q (σ_q² = G(Λ)V^{2/n}; dither and quantization error are independent
    across clients), and integer noise of standard deviation s per client and coordinate adds at
    most √n·s·σ_max(G) in lattice units; the chi-square rule of ``statistical_bits`` sizes b for
    that. Noise has unbounded tails, so with noise only probabilistic rules apply.

    Args:
        clip_norm: C, L2 bound of every update (update units).
        step: Δ.
        lattice: lattice name.
        clients: n, contributors to one sum.
        dimension: d, length of the update.
        noise_std: standard deviation of the integer noise each client adds to each coordinate
            (coordinate units, 0 for none).
        overflow_probability: allowed probability that the sum fails to decode exactly.
        rotate: whether the codec rotates (``CodecConfig.rotate``).
    Returns:
        b in 1..32.
    Raises:
        BitWidthError: no b <= 32 suffices; the message names the knobs to change.
        ConfigurationError: a parameter is out of range.
    """
    clip = _positive_finite(clip_norm, "clip_norm") * (1.0 + _CLIP_SLACK)
    step = _positive_finite(step, "step")
    if not isinstance(lattice, str):
        raise ConfigurationError(f"lattice must be a lattice name, got {type(lattice).__name__}")
    if lattice not in LATTICE_NAMES:
        raise ConfigurationError(f"lattice must be one of {', '.join(LATTICE_NAMES)}, got {lattice!r}")
    chosen = get_lattice(lattice)
    clients = _positive_int(clients, "clients")
    dimension = _positive_int(dimension, "dimension")
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float, np.integer, np.floating)):
        raise ConfigurationError(f"noise_std must be a number, got {type(noise_std).__name__}")
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ConfigurationError(f"noise_std must be finite and >= 0, got {noise_std}")
    if not isinstance(rotate, bool):
        raise ConfigurationError(f"rotate must be a bool, got {type(rotate).__name__}")
    if isinstance(overflow_probability, bool) or not isinstance(overflow_probability, (float, int)):
        raise ConfigurationError(f"overflow_probability must be a number, got {overflow_probability!r}")
    if not 0.0 < overflow_probability < 1.0:
        raise ConfigurationError(f"overflow_probability must be in (0, 1), got {overflow_probability}")

    block = chosen.dimension
    quantizer_length = padded_dimension(dimension) if rotate else dimension
    coordinates = -(-quantizer_length // block) * block
    max_block_norm = clients * (clip / step + 2.0 * chosen.covering_radius)
    noise_gain = float(np.linalg.norm(chosen.generator, 2))  # σ_max(G): coordinate noise → lattice units
    noise_std_sum = math.sqrt(clients) * float(noise_std) * noise_gain

    candidates = []
    if noise_std == 0.0:
        candidates.append(norm_bits(max_block_norm, chosen.packing_radius))
    if rotate:
        point_std = clients * clip / (step * math.sqrt(quantizer_length)) + 2.0 * math.sqrt(
            clients * chosen.second_moment_per_coordinate
        )
        candidates.append(
            statistical_bits(
                math.hypot(point_std, noise_std_sum),
                coordinates,
                overflow_probability,
                block_dimension=block,
                packing_radius=chosen.packing_radius,
            )
        )
    elif noise_std > 0.0:
        # Signal bounded deterministically, noise by its chi-square tail with the union bound.
        per_block = overflow_probability / (coordinates // block)
        noise_radius = noise_std_sum * math.sqrt(2.0 * float(gammainccinv(0.5 * block, per_block)))
        candidates.append(norm_bits(max_block_norm + noise_radius, chosen.packing_radius))
    needed = min(candidates)
    if needed > MAX_BITS:
        raise BitWidthError(
            f"the sum of {clients} {lattice} encodings needs {needed} bits, more than {MAX_BITS}: "
            f"raise --step (now {step:g}) or lower --clip (now {clip_norm:g})"
            + ("" if rotate else ", or enable rotation")
        )
    return needed


def check_bits(
    bits: int,
    clip_norm: float,
    step: float,
    lattice: str,
    clients: int,
    dimension: int,
    noise_std: float = 0.0,
    overflow_probability: float = 1e-6,
    *,
    rotate: bool = True,
) -> None:
    """Refuse ``bits`` if the secure sum could wrap beyond ``overflow_probability``.

    Same parameters as ``plan_bits``, plus ``bits`` (b, 1..32).

    Raises:
        BitWidthError: bits < plan_bits(...); the message says "increase --bits to at least N,
            or raise --step, or lower --clip".
        ConfigurationError: a parameter is out of range.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ConfigurationError(f"bits must be an int in 1..{MAX_BITS}, got {bits!r}")
    needed = plan_bits(
        clip_norm, step, lattice, clients, dimension, noise_std, overflow_probability, rotate=rotate
    )
    if bits < needed:
        raise BitWidthError(
            f"--bits {bits} lets the sum of {clients} {lattice} encodings of dimension {dimension} "
            f"wrap (allowed overflow probability {overflow_probability:g}): increase --bits to at "
            f"least {needed}, or raise --step (now {step:g}), or lower --clip (now {clip_norm:g})"
        )


def _check_seed(round_seed: object) -> bytes:
    if not isinstance(round_seed, (bytes, bytearray)) or len(round_seed) != ROUND_SEED_LENGTH:
        raise ConfigurationError(f"round_seed must be {ROUND_SEED_LENGTH} bytes")
    return bytes(round_seed)


def _check_client_id(client_id: object) -> int:
    if isinstance(client_id, bool) or not isinstance(client_id, (int, np.integer)):
        raise ConfigurationError(f"client id must be an int, got {type(client_id).__name__}")
    if not 0 <= client_id < 2**63:
        raise ConfigurationError(f"client id must be in 0..2**63-1, got {client_id}")
    return int(client_id)


def _check_tensor(tensor: object) -> str:
    if not isinstance(tensor, str) or not tensor:
        raise ConfigurationError(f"tensor must be a non-empty str, got {tensor!r}")
    return tensor


class LatticeCodec:
    """Encode clients' updates and decode their secure sum (see the module docstring).

    Args:
        config: the round's ``CodecConfig``.
        backend: "numba" (default) or "numpy" (reference; identical results).
    """

    def __init__(self, config: CodecConfig, *, backend: str = "numba") -> None:
        if not isinstance(config, CodecConfig):
            raise ConfigurationError(f"config must be a CodecConfig, got {type(config).__name__}")
        self._config = config
        self._lattice = get_lattice(config.lattice)
        self._quantizer = DitheredQuantizer(self._lattice, config.step, backend=backend)

    @property
    def config(self) -> CodecConfig:
        return self._config

    @property
    def quantizer(self) -> DitheredQuantizer:
        return self._quantizer

    def check_bits(
        self, clients: int, dimension: int, noise_std: float = 0.0, overflow_probability: float = 1e-6
    ) -> None:
        """``check_bits`` for this codec's bits, clip, step, lattice and rotation (BitWidthError)."""
        config = self._config
        check_bits(
            config.bits, config.clip_norm, config.step, config.lattice, clients, dimension,
            noise_std, overflow_probability, rotate=config.rotate,
        )

    def _quantizer_length(self, dimension: int) -> int:
        dimension = _positive_int(dimension, "dimension")
        return padded_dimension(dimension) if self._config.rotate else dimension

    def coordinates(self, dimension: int) -> int:
        """m, the number of int64 coordinates ``encode`` returns for a length-``dimension`` update."""
        return self._quantizer.coordinates(self._quantizer_length(dimension))

    def _dither_key(self, round_seed: bytes, client_id: int, tensor: str) -> tuple[bytes, bytes]:
        seed = derive_key(round_seed, salt=b"", info=encode_parts(_DITHER_SEED_LABEL, client_id, tensor))
        return seed, encode_parts(_DITHER_LABEL, tensor)

    def encode(
        self, update: np.ndarray, round_seed: bytes, client_id: int, tensor: str = "update"
    ) -> np.ndarray:
        """One client's coordinates.

        Args:
            update: (d,) float32/float64, already clipped to ‖update‖ <= clip_norm.
            round_seed: the round's 32-byte public seed (same for every client).
            client_id: this client's id.
            tensor: name of the tensor (separates the dithers of several tensors).
        Returns:
            (m,) int64, m = ``coordinates(d)``; reduce mod 2**bits with ``secagg.modular.wrap``.
        Raises:
            LatticeError: the update is not a finite 1-D float vector.
            ConfigurationError: the update exceeds clip_norm (the bit width relies on it), or a
                seed/id/name is malformed.
        """
        round_seed, client_id, tensor = _check_seed(round_seed), _check_client_id(client_id), _check_tensor(tensor)
        vector = np.asarray(update)
        if vector.ndim != 1 or vector.shape[0] == 0:
            raise LatticeError(f"update must be a non-empty 1-D array, got shape {vector.shape}")
        if vector.dtype not in (np.float32, np.float64):
            raise LatticeError(f"update must be float32 or float64, got dtype {vector.dtype}")
        vector = vector.astype(np.float64)
        if not np.all(np.isfinite(vector)):
            raise LatticeError("update contains NaN or infinity")
        norm = float(np.linalg.norm(vector))
        if norm > self._config.clip_norm * (1.0 + _CLIP_SLACK):
            raise ConfigurationError(
                f"update L2 norm {norm:.6g} exceeds clip_norm {self._config.clip_norm:g}; clip it "
                "first (privacy.clipping.clip_l2): the bit width is planned for clipped updates"
            )
        if self._config.rotate:
            vector = rotate(vector, round_seed, encode_parts(_ROTATION_LABEL, tensor))
        seed, info = self._dither_key(round_seed, client_id, tensor)
        return self._quantizer.encode(vector, seed, info)

    def _decode_lifted(
        self, z_sum: np.ndarray, round_seed: bytes, client_ids: Sequence[int], length: int, tensor: str
    ) -> np.ndarray:
        quantizer_length = self._quantizer_length(length)
        keys = [self._dither_key(round_seed, client_id, tensor) for client_id in client_ids]
        decoded = self._quantizer.decode_sum(z_sum, keys, quantizer_length)
        if self._config.rotate:
            return unrotate(decoded, round_seed, encode_parts(_ROTATION_LABEL, tensor), length)
        return decoded

    def _check_ids(self, client_ids: Sequence[int]) -> list[int]:
        if isinstance(client_ids, (bytes, str)) or not isinstance(client_ids, Sequence):
            raise ConfigurationError("client_ids must be a sequence of ints")
        ids = [_check_client_id(client_id) for client_id in client_ids]
        if not ids:
            raise ConfigurationError("client_ids is empty: there is no sum to decode")
        if len(set(ids)) != len(ids):
            raise ConfigurationError("client_ids has duplicates; each dither must be removed exactly once")
        return ids

    def decode_sum(
        self,
        sum_mod: np.ndarray,
        round_seed: bytes,
        client_ids: Sequence[int],
        length: int,
        tensor: str = "update",
    ) -> np.ndarray:
        """Σ over ``client_ids`` of the clients' quantized updates.

        Args:
            sum_mod: (m,) uint32, Σ_i z_i mod 2**bits over exactly the clients in ``client_ids``.
            round_seed: the round's seed.
            client_ids: the ids whose encodings are in the sum (the survivors), each once.
            length: d, the update length.
            tensor: the tensor name used by ``encode``.
        Returns:
            (d,) float64.
        Raises:
            LatticeError: sum_mod has the wrong dtype, length or range.
            ConfigurationError: malformed seed, ids, length or tensor.
        """
        round_seed, tensor = _check_seed(round_seed), _check_tensor(tensor)
        ids = self._check_ids(client_ids)
        expected = self.coordinates(length)
        array = np.asarray(sum_mod)
        if array.ndim != 1 or array.shape[0] != expected:
            raise LatticeError(f"sum_mod must have shape ({expected},), got {array.shape}")
        lifted = voronoi_lift(array, self._config.bits, self._lattice)
        return self._decode_lifted(lifted, round_seed, ids, length, tensor)

    def decode(
        self, z: np.ndarray, round_seed: bytes, client_id: int, length: int, tensor: str = "update"
    ) -> np.ndarray:
        """One client's quantized update from its own (unmasked, unwrapped) int64 coordinates.

        Used for sealed history records and to check that sums decode to sums.
        """
        round_seed, tensor = _check_seed(round_seed), _check_tensor(tensor)
        ids = self._check_ids([client_id])
        return self._decode_lifted(z, round_seed, ids, length, tensor)
