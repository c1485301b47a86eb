"""Unbiased compressors for compressed federated optimization (docs/ALGORITHMS.md §5.3).

A compressor C is in the class U(ω) when E[C(x)] = x and E‖C(x) − x‖² <= ω‖x‖². For n clients
compressing independently, the average of their outputs has variance ω/n (ω_av = ω/n); clients
sharing one random seed (shared-seed rand-k, the only rand-k SecAgg can sum, §5.4) get ω_av = ω.

Every compressor works on a batch: ``compress(vectors (n, d) float64, rng) -> (n, d) float64``
returns each client's decoded estimate C_i(x_i); ``uplink_bits(d, n)`` is what ONE client sends
for ONE compression. Bits of real numbers are counted at 32 per value (float32 on the wire), the
convention of §5.3's table and of the LoCoDL/EF-BV experiments; the simulation itself computes
in float64.

Randomness: simulations pass a seeded ``numpy.random.Generator`` (public randomness, not secret).
A deployment whose clients must agree on the randomness across machines derives it from the
round's public seed with :func:`shared_rand_k_indices` and :func:`shared_coins`, built on
``secagg.prg`` (AES-CTR), whose output does not depend on the numpy version.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from federation.learning_errors import CompressionError
from secagg.codec import CodecConfig, LatticeCodec, plan_bits
from secagg.context import encode_parts
from secagg.lattice import LATTICE_NAMES, get_lattice
from secagg.modular import wrap
from secagg.prg import uniform_floats
from secagg.rotation import padded_dimension

FLOAT_BITS = 32
"""Bits charged per transmitted real number (float32 on the wire)."""

_RAND_K_LABEL = "fedvault/federation/rand-k"
_COIN_LABEL = "fedvault/federation/coin"


def _check_batch(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise CompressionError(f"vectors must be a non-empty 2-D array (n, d), got shape {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise CompressionError(f"vectors must be floating point, got {vectors.dtype}")
    if not np.all(np.isfinite(vectors)):
        raise CompressionError("vectors contain NaN or infinity")
    return vectors.astype(np.float64, copy=False)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise CompressionError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


class Compressor(ABC):
    """An unbiased compressor applied by n clients at once (see the module docstring)."""

    name: str

    @abstractmethod
    def omega(self, dimension: int) -> float:
        """ω of one client's compression of a length-``dimension`` vector."""

    def omega_average(self, dimension: int, clients: int) -> float:
        """ω_av: variance factor of the average of ``clients`` compressions (independent: ω/n)."""
        return self.omega(dimension) / _check_positive_int(clients, "clients")

    @abstractmethod
    def uplink_bits(self, dimension: int, clients: int) -> int:
        """Bits one client uploads for one compression of a length-``dimension`` vector."""

    @abstractmethod
    def compress(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, d) float → (n, d) float64: row i is client i's decoded estimate C_i(x_i)."""


@dataclass(frozen=True)
class Identity(Compressor):
    """No compression: ω = 0, 32 bits per coordinate."""

    name: str = "identity"

    def omega(self, dimension: int) -> float:
        _check_positive_int(dimension, "dimension")
        return 0.0

    def uplink_bits(self, dimension: int, clients: int) -> int:
        return FLOAT_BITS * _check_positive_int(dimension, "dimension")

    def compress(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _check_batch(vectors).copy()


@dataclass(frozen=True)
class RandK(Compressor):
    """Keep k uniformly chosen coordinates, scaled by d/k: ω = d/k − 1.

    With ``shared=True`` all clients keep the same k coordinates (one public seed): the server
    knows the indices, so each client sends only the k values (32k bits) and the kept vectors are
    summable under SecAgg, but the errors are correlated: ω_av = ω. With ``shared=False`` each
    client draws its own set and sends indices too (32k + k⌈log2 d⌉ bits); ω_av = ω/n.
    """

    k: int
    shared: bool = True
    name: str = "rand-k"

    def __post_init__(self) -> None:
        _check_positive_int(self.k, "k")
        if not isinstance(self.shared, bool):
            raise CompressionError(f"shared must be a bool, got {self.shared!r}")

    def _check_dimension(self, dimension: int) -> int:
        dimension = _check_positive_int(dimension, "dimension")
        if self.k > dimension:
            raise CompressionError(f"rand-k needs k <= d, got k = {self.k} > d = {dimension}")
        return dimension

    def omega(self, dimension: int) -> float:
        return self._check_dimension(dimension) / self.k - 1.0

    def omega_average(self, dimension: int, clients: int) -> float:
        if self.shared:
            _check_positive_int(clients, "clients")
            return self.omega(dimension)
        return super().omega_average(dimension, clients)

    def uplink_bits(self, dimension: int, clients: int) -> int:
        dimension = self._check_dimension(dimension)
        index_bits = 0 if self.shared else self.k * max(1, math.ceil(math.log2(dimension)))
        return FLOAT_BITS * self.k + index_bits

    def compress(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        vectors = _check_batch(vectors)
        clients, dimension = vectors.shape
        self._check_dimension(dimension)
        scale = dimension / self.k
        out = np.zeros_like(vectors)
        if self.shared:
            kept = rng.choice(dimension, size=self.k, replace=False)
            out[:, kept] = scale * vectors[:, kept]
        else:
            # One independent uniform k-subset per row: the k smallest of d uniform keys.
            kept = np.argpartition(rng.random((clients, dimension)), self.k - 1, axis=1)[:, : self.k]
            rows = np.arange(clients)[:, None]
            out[rows, kept] = scale * vectors[rows, kept]
        return out


@dataclass(frozen=True)
class Natural(Compressor):
    """Natural compression (Horváth et al., arXiv 1905.10988): randomized rounding to a power of two.

    A coordinate t with 2^a <= |t| < 2^(a+1) becomes sign(t)·2^(a+1) with probability
    (|t| − 2^a)/2^a and sign(t)·2^a otherwise; unbiased with ω = 1/8 (attained at |t| = (4/3)·2^a),
    sending sign and exponent: 9 bits per coordinate. Independent per client: ω_av = ω/n.
    """

    name: str = "natural"

    def omega(self, dimension: int) -> float:
        _check_positive_int(dimension, "dimension")
        return 1.0 / 8.0

    def uplink_bits(self, dimension: int, clients: int) -> int:
        return 9 * _check_positive_int(dimension, "dimension")

    def compress(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        vectors = _check_batch(vectors)
        magnitude = np.abs(vectors)
        mantissa, exponent = np.frexp(magnitude)  # magnitude = mantissa·2^exponent, mantissa ∈ [0.5, 1)
        low = np.ldexp(np.ones_like(magnitude), exponent - 1)  # 2^a <= |t| < 2^(a+1) = 2·low
        round_up = rng.random(vectors.shape) < (magnitude - low) / low
        return np.where(magnitude == 0.0, 0.0, np.copysign(np.where(round_up, 2.0 * low, low), vectors))


@dataclass(frozen=True)
class LatticeCompressor(Compressor):
    """Common-scale dithered lattice quantization through ``secagg.codec`` (the SecAgg path).

    All n clients divide by one common scale s = max_i ‖x_i‖ (so every input has norm <= 1, the
    codec's clip), optionally rotate with the shared round seed, and quantize with step
    Δ = resolution/√d' (d' = the quantized length: the padded power of two with rotation, d
    without) and their own dither; the integer coordinates are summed mod 2**b with
    b from ``secagg.codec.plan_bits`` (overflow probability ``overflow_probability``) and the sum
    decoded by the codec, exactly as the secure aggregate is. Each client also decodes its own
    coordinates (``LatticeCodec.decode``) to know C_i(x_i), which LoCoDL and DIANA need.

    Subtractive dither makes C_i(x_i) − x_i uniform on the scaled Voronoi cell and independent of
    x_i (Zamir–Feder 1992), so C_i is unbiased and the errors of different clients are
    independent (ω_av = ω/n). The error variance is d·σ²·Δ²·s², σ² = G(Λ)·V^{2/n} per
    coordinate, i.e. ω = resolution²·σ²·d/d' RELATIVE TO s² (the largest client norm), not to each
    client's own norm. Rotation spreads a vector evenly over d' coordinates, which lets
    ``plan_bits`` use its Gaussian-tail rule, but pads d up to a power of two; without it the
    bit width comes from the deterministic norm bound on d coordinates. The scale costs one float per client (agreed under SecAgg through a
    norm bound announced by the server); the coordinates cost b bits each.
    """

    lattice: str = "E8"
    resolution: float = 1.0
    overflow_probability: float = 1e-6
    rotate: bool = True
    name: str = "lattice"

    def __post_init__(self) -> None:
        if self.lattice not in LATTICE_NAMES:
            raise CompressionError(f"lattice must be one of {', '.join(LATTICE_NAMES)}, got {self.lattice!r}")
        if not (isinstance(self.resolution, int | float) and math.isfinite(self.resolution) and self.resolution > 0):
            raise CompressionError(f"resolution must be a finite number > 0, got {self.resolution!r}")
        if not (0.0 < self.overflow_probability < 1.0):
            raise CompressionError(f"overflow_probability must be in (0, 1), got {self.overflow_probability!r}")
        if not isinstance(self.rotate, bool):
            raise CompressionError(f"rotate must be a bool, got {self.rotate!r}")

    def _quantized_length(self, dimension: int) -> int:
        dimension = _check_positive_int(dimension, "dimension")
        return padded_dimension(dimension) if self.rotate else dimension

    def step(self, dimension: int) -> float:
        """Δ in units of the common scale."""
        return self.resolution / math.sqrt(self._quantized_length(dimension))

    def bits_per_coordinate(self, dimension: int, clients: int) -> int:
        """b: the modulus 2**b of the sum of ``clients`` encodings (``secagg.codec.plan_bits``)."""
        return plan_bits(
            1.0, self.step(dimension), self.lattice, _check_positive_int(clients, "clients"), dimension,
            overflow_probability=self.overflow_probability, rotate=self.rotate,
        )

    def codec(self, dimension: int, clients: int) -> LatticeCodec:
        config = CodecConfig(
            lattice=self.lattice, step=self.step(dimension), bits=self.bits_per_coordinate(dimension, clients),
            rotate=self.rotate, clip_norm=1.0,
        )
        return LatticeCodec(config)

    def omega(self, dimension: int) -> float:
        per_coordinate = get_lattice(self.lattice).second_moment_per_coordinate
        return self.resolution**2 * per_coordinate * dimension / self._quantized_length(dimension)

    def uplink_bits(self, dimension: int, clients: int) -> int:
        codec = self.codec(dimension, clients)
        return codec.config.bits * codec.coordinates(dimension) + FLOAT_BITS

    def compress(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.compress_with_sum(vectors, rng)[0]

    def compress_with_sum(self, vectors: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """As ``compress``, plus the server's decode of the modular sum of all coordinates.

        Returns ((n, d) per-client estimates, (d,) decoded sum); the codec guarantees the sum
        equals the sum of the estimates (up to float rounding) unless the modulus overflowed.
        """
        vectors = _check_batch(vectors)
        clients, dimension = vectors.shape
        scale = float(np.linalg.norm(vectors, axis=1).max())
        if scale == 0.0:
            return np.zeros_like(vectors), np.zeros(dimension)
        codec = self.codec(dimension, clients)
        round_seed = rng.bytes(32)
        normalized = vectors / scale
        # Rounding can leave a norm a hair above 1; the codec accepts its own clip slack.
        coordinates = [codec.encode(normalized[i], round_seed, i) for i in range(clients)]
        estimates = np.stack([codec.decode(z, round_seed, i, dimension) for i, z in enumerate(coordinates)])
        total = codec.decode_sum(
            wrap(np.sum(coordinates, axis=0), codec.config.bits), round_seed, list(range(clients)), dimension
        )
        return scale * estimates, scale * total


def shared_rand_k_indices(round_seed: bytes, dimension: int, k: int, tensor: str = "update") -> np.ndarray:
    """The k coordinates every client of a round keeps, from the round's public seed.

    Returns (k,) int64, sorted, distinct, uniform over k-subsets of 0..d−1: the indices of the k
    smallest of d uniform keys from ``secagg.prg.uniform_floats`` (53-bit keys; a tie, probability
    below d²/2^54, is broken by index). Identical on every machine for the same inputs.
    """
    dimension = _check_positive_int(dimension, "dimension")
    k = _check_positive_int(k, "k")
    if k > dimension:
        raise CompressionError(f"k = {k} exceeds the dimension {dimension}")
    keys = uniform_floats(round_seed, encode_parts(_RAND_K_LABEL, tensor, dimension, k), dimension)
    return np.sort(np.argsort(keys, kind="stable")[:k]).astype(np.int64)


def shared_coins(round_seed: bytes, probability: float, count: int, label: str = "locodl") -> np.ndarray:
    """(count,) bool: ``count`` Bernoulli(probability) coins every participant derives identically
    from the round's public seed (LoCoDL's and Scaffnew's common coin θ)."""
    count = _check_positive_int(count, "count")
    if not (isinstance(probability, int | float) and 0.0 < probability <= 1.0):
        raise CompressionError(f"probability must be in (0, 1], got {probability!r}")
    return uniform_floats(round_seed, encode_parts(_COIN_LABEL, label), count) < probability
