"""Sealed history records: one client's update per round, MEDU-compressed and AES-GCM-sealed.

Pipeline (docs/ALGORITHMS.md §6.1, §6.4; MEDU: Lang et al., arXiv 2505.03388), client side, pure:

1. **Differential thresholding.** δ = Δ_t − Δ̂_prev, where Δ̂_prev is the client's previous record
   *as the server will reconstruct it* (closed loop), or δ = Δ_t in a key frame. Entries with
   |δ_j| <= ``threshold`` are dropped, and at most ⌊κ·d⌋ of the largest are kept. A dropped entry
   is reconstructed as "unchanged" (Δ̂_t,j = Δ̂_prev,j), so its error is exactly |δ_j|.
2. **Dithered lattice coding** of the kept values (in index order, cut into n-blocks) with
   ``secagg.quantizer.DitheredQuantizer`` on Z, D4 or E8 at a per-record step s; the dither is
   regenerated from a seed derived from the history secret and is never stored.
3. **Entropy coding.** The support as a bitmap (omitted when nothing or everything is kept),
   the lattice points as integer codes (the point, E8 minus ½·coset plus one coset bit per
   block, with the parity-implied half of the last coordinate of each block removed), zigzagged and bit-packed at the narrowest
   byte-aligned width (``secagg.bitpack``), then one Zstandard frame (its Huffman/FSE stages are
   the entropy coder). No second checksum: the AEAD tag authenticates every byte.
4. **Fixed size.** The body budget is ⌈R·d/8⌉ bytes (R = ``bits_per_entry``, may be fractional).
   The encoder picks the finest step (eighth-octave grid) whose stream fits, and trades kept
   entries against step by the expected squared error
   Σ_dropped δ_j² + k·s²·G(Λ)V^{2/n}; the plaintext is header || blob || zero padding, always
   ``RecordConfig.plaintext_bytes`` long. The step is found by bisection (about 9 encodings per
   kept count); each kept count draws its dither once and reuses it at every step.
5. **Seal** with AES-256-GCM under the record key (``unlearning.secrets``), associated data
   (run, round, client, format version).

What the server learns from a sealed record: its length, which is the same for every record of
the configuration, and nothing else (no norm, no support size, no step, no parent).

Error bound. Per coordinate, |Δ̂_t,j − Δ_t,j| <= max(τ_t, s_t·ρ(Λ)), where τ_t is the largest
dropped |δ_j| and ρ(Λ) the covering radius (Z: ½, D4 and E8: 1; the subtractive-dither error of a
block lies in −s·V₀, whose points are within ρ of the origin). Because δ is taken against the
reconstruction Δ̂_prev, the error of record t is δ − δ̂ and does not accumulate along a chain.
Both bounds hold deterministically; the step is chosen after seeing the dither, so the error is
not exactly the uniform, input-independent dither error, only bounded like it.

Opening (server side, after a deletion request): verify the released secret against the
commitment, derive the key, decrypt, parse, decode, add to the parent's reconstruction (one
reconstruction held at a time), check ‖Δ̂‖ <= clip + slack.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

import zstandard

from secagg.aead import SEAL_OVERHEAD, open_sealed, seal
from secagg.bitpack import pack_bits, packed_length, unpack_bits
from secagg.errors import AuthenticationError, LatticeError, SecAggError
from secagg.lattice import Lattice, get_lattice
from secagg.quantizer import DitheredQuantizer
from unlearning.errors import (
    BrokenChainError,
    MalformedRecordError,
    RecordAuthenticationError,
    RecordBoundError,
    RecordBudgetError,
    UnlearningConfigurationError,
    UnlearningInputError,
)
from unlearning.secrets import (
    RECORD_FORMAT_VERSION,
    RunId,
    dither_seed,
    record_associated_data,
    record_key,
    verify_history_secret,
)

RECORD_LATTICES = ("Z", "D4", "E8")  # A2's points are irrational: no exact integer code
_LATTICE_CODES = {"Z": 1, "D4": 2, "E8": 3}
_MAGIC = b"FVHR"
_KEYFRAME_FLAG = 0x01
# magic, format version, lattice code, flags, reserved, parent round, step, threshold, kept, blob length
_HEADER = struct.Struct("<4sBBBBqddII")
HEADER_BYTES = _HEADER.size
_DITHER_INFO = b"fedvault/history-record/dither"
# Step grid s_j = max|v|·2^((j − 192)/8), j = 0..208: from 2^-24 to 4 times the largest kept value.
_GRID_UNITY = 192
_GRID_TOP = 208
_GRID_PER_OCTAVE = 8
# Float slack of the honest reconstruction in the norm check (relative).
_NORM_RTOL = 1e-9
# Code widths aligned to bytes (several codes per byte below 8 bits): zstd's literal coder works
# on bytes, so aligned symbols compress far better than codes straddling byte boundaries.
_CODE_WIDTHS = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class RecordConfig:
    """Everything that fixes the record format of a run (shared by clients and server).

    dimension: d, the flat update length. clip_norm: C, the L2 clip of the recorded update.
    norm_slack: added to C in the bound every record must satisfy, in update units (None: C, so
        the bound is 2C). It covers coding error; if the recorded contribution carries local DP
        noise, add the noise's high-probability norm.
    lattice: "Z", "D4" or "E8". Z is the default: with a per-coordinate entropy coder the
        space-filling gain of D4/E8 (<= 0.11 bit) is lost to coordinate correlation and E8's coset
        bits (measured at d = 2410, equal bytes, R = 2: relative error Z 0.385, D4 0.401, E8 0.438).
    bits_per_entry: R, the record body budget in bits per model coordinate (fractional allowed).
    keep_fraction: κ, the largest fraction of coordinates one record may change.
    threshold: changes |δ_j| <= threshold are never stored (update units).
    keyframe_interval: a record without a parent every this many records of a client (1: all
        key frames, no differential coding); bounds how much one lost record breaks.
    compression_level: Zstandard level of the entropy coder (1..22). Only the encoder uses it (any
        level decodes). The default 5 is about 3× cheaper per record than 19 at the same quality:
        on real digits updates (d = 650 and 4,810, R = 0.5) the records' mean relative squared
        error differed by < 0.2% between levels 3 and 19, while sealing took 2.8 ms instead of
        8.6 ms (d = 4,810); the step search encodes each record about 20 times.
    """

    dimension: int
    clip_norm: float
    norm_slack: float | None = None
    lattice: str = "Z"
    bits_per_entry: float = 2.0
    keep_fraction: float = 1.0
    threshold: float = 0.0
    keyframe_interval: int = 8
    compression_level: int = 5

    def __post_init__(self) -> None:
        def positive_int(name: str, value: object, upper: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
                raise UnlearningConfigurationError(f"{name} must be an int in 1..{upper}, got {value!r}")

        def finite(name: str, value: object, minimum: float, strict: bool) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UnlearningConfigurationError(f"{name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or value < minimum or (strict and value == minimum):
                relation = ">" if strict else ">="
                raise UnlearningConfigurationError(f"{name} must be finite and {relation} {minimum}, got {value}")
            return value

        positive_int("dimension", self.dimension, 2**31 - 1)
        positive_int("keyframe_interval", self.keyframe_interval, 2**31 - 1)
        positive_int("compression_level", self.compression_level, 22)
        object.__setattr__(self, "clip_norm", finite("clip_norm", self.clip_norm, 0.0, True))
        if self.norm_slack is None:
            object.__setattr__(self, "norm_slack", self.clip_norm)
        object.__setattr__(self, "norm_slack", finite("norm_slack", self.norm_slack, 0.0, False))
        object.__setattr__(self, "bits_per_entry", finite("bits_per_entry", self.bits_per_entry, 0.0, True))
        object.__setattr__(self, "threshold", finite("threshold", self.threshold, 0.0, False))
        keep = finite("keep_fraction", self.keep_fraction, 0.0, True)
        if keep > 1.0 or math.floor(keep * self.dimension) < 1:
            raise UnlearningConfigurationError(
                f"keep_fraction must be in (0, 1] and keep at least one of the {self.dimension} "
                f"coordinates, got {keep}")
        object.__setattr__(self, "keep_fraction", keep)
        if self.lattice not in RECORD_LATTICES:
            raise UnlearningConfigurationError(
                f"lattice must be one of {', '.join(RECORD_LATTICES)} for history records, got {self.lattice!r}")
        if self.body_bytes > 2**32 - 1:
            raise UnlearningConfigurationError("the record body exceeds 4 GiB; lower bits_per_entry")
        # The empty record (nothing kept) must fit, so that every update can be recorded.
        empty = len(_pack_stream(b"", np.zeros(0, dtype=np.int64), None, _compressor(self.compression_level)))
        if empty > self.body_bytes:
            raise UnlearningConfigurationError(
                f"bits_per_entry={self.bits_per_entry} gives a {self.body_bytes}-byte body, less than the "
                f"{empty} bytes of an empty record; raise bits_per_entry to at least "
                f"{math.ceil(8 * empty / self.dimension * 100) / 100}")

    @property
    def max_norm(self) -> float:
        """The L2 bound every decoded record must satisfy: clip_norm + norm_slack."""
        return self.clip_norm + self.norm_slack

    @property
    def kept_entries(self) -> int:
        """⌊κ·d⌋, the most coordinates one record stores."""
        return math.floor(self.keep_fraction * self.dimension)

    @property
    def body_bytes(self) -> int:
        """⌈R·d/8⌉, the fixed space for the entropy-coded stream."""
        return math.ceil(self.bits_per_entry * self.dimension / 8.0)

    @property
    def plaintext_bytes(self) -> int:
        return HEADER_BYTES + self.body_bytes

    @property
    def sealed_bytes(self) -> int:
        """The length of every sealed record of this configuration."""
        return self.plaintext_bytes + SEAL_OVERHEAD

    def lattice_object(self) -> Lattice:
        return get_lattice(self.lattice)


@dataclass(frozen=True)
class RecordHeader:
    """The parsed fixed header of a record plaintext.

    parent_round: the round of the record this one is a difference against (None: key frame).
    step: s, the lattice scale. threshold: τ, the largest dropped |δ_j|. kept: how many
    coordinates the record changes. blob_length: bytes of the entropy-coded stream.
    """

    parent_round: int | None
    step: float
    threshold: float
    kept: int
    blob_length: int

    @property
    def keyframe(self) -> bool:
        return self.parent_round is None


@dataclass(frozen=True)
class OpenedRecord:
    """A decoded record: the client's update of ``round_index`` as reconstructed from the chain.

    update: (d,) float64, read-only. error_bound: the per-coordinate bound max(τ, s·ρ(Λ)) that
    |update − true update| satisfies.
    """

    round_index: int
    parent_round: int | None
    update: np.ndarray
    step: float
    threshold: float
    error_bound: float


@dataclass(frozen=True)
class RecordChain:
    """A client's history state: its last *committed* record's round and reconstruction.

    Adopt the chain returned by :func:`build_record` only once the server confirms it stored the
    record; otherwise keep the old one (the next record's parent must exist on the server).
    """

    round_index: int | None = None
    reconstruction: np.ndarray | None = None
    records_since_keyframe: int = 0

    def __post_init__(self) -> None:
        if (self.round_index is None) != (self.reconstruction is None):
            raise UnlearningInputError("a chain has both a last round and its reconstruction, or neither")
        if self.round_index is not None:
            _check_round(self.round_index, "the chain's round_index")
            if not isinstance(self.reconstruction, np.ndarray) or self.reconstruction.ndim != 1:
                raise UnlearningInputError("the chain's reconstruction must be a 1-D numpy array")
        count = self.records_since_keyframe
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise UnlearningInputError(f"records_since_keyframe must be an int >= 0, got {count!r}")


@dataclass(frozen=True)
class BuiltRecord:
    """A sealed record to upload, the chain to adopt once it is stored, and what it decodes to."""

    sealed: bytes
    chain: RecordChain
    record: OpenedRecord


# --- entropy-coded stream ----------------------------------------------------------------
#
# Uncompressed layout, then one Zstandard frame over all of it:
#   code width w (1 byte, in _CODE_WIDTHS)
#   support bitmap, 1 bit per model coordinate (only when 0 < kept < d)
#   zigzag(code) of the kept values then of the last block's padding, w bits each
#   E8 only: one coset bit per block


def _zigzag(values: np.ndarray) -> np.ndarray:
    signed = values.astype(np.int64)
    return (signed.view(np.uint64) << np.uint64(1)) ^ (signed >> 63).view(np.uint64)


def _unzigzag(values: np.ndarray) -> np.ndarray:
    unsigned = values.astype(np.uint64)
    return ((unsigned >> np.uint64(1)) ^ (np.uint64(0) - (unsigned & np.uint64(1)))).view(np.int64)


def _point_codes(lattice: Lattice, points: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Lattice points (blocks, n) -> integer codes (blocks·n,) and, for E8, coset bits (blocks,).

    Z: the point. D4 = D_4 and E8 = D_8 ∪ (D_8 + ½·1): the D_n part f (E8: the point minus
    ½·coset) has an even sum, so f_n's parity is implied by f_1..f_{n−1} and the code stores
    (f_n − parity)/2 instead, a range half as wide (saves about 1/n bit per entry).
    """
    cosets = None
    if lattice.name == "E8":
        cosets = np.rint(2.0 * points[:, 0]).astype(np.int64) & 1
        points = points - 0.5 * cosets[:, None]
    codes = np.rint(points).astype(np.int64)
    if lattice.name in ("D4", "E8"):
        parity = codes[:, :-1].sum(axis=1) & 1
        codes[:, -1] = (codes[:, -1] - parity) // 2
    return codes.reshape(-1), cosets


def _code_points(lattice: Lattice, codes: np.ndarray, cosets: np.ndarray | None) -> np.ndarray:
    """Invert :func:`_point_codes`: codes (blocks·n,) and coset bits -> points (blocks, n) float64.
    Every code vector maps to a lattice point, so no stream can decode off the lattice."""
    blocks = codes.reshape(-1, lattice.dimension).copy()
    if lattice.name in ("D4", "E8"):
        blocks[:, -1] = 2 * blocks[:, -1] + (blocks[:, :-1].sum(axis=1) & 1)
    points = blocks.astype(np.float64)
    if cosets is not None:
        points += 0.5 * cosets.astype(np.float64)[:, None]
    return points


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One Zstandard context for all the trial encodings of a record (not shared across threads)."""
    return zstandard.ZstdCompressor(level=level, write_checksum=False, write_content_size=True)


def _support_bitmap(support: np.ndarray, dimension: int) -> bytes:
    """The packed support bitmap, or nothing when no or every coordinate is kept."""
    if not 0 < support.shape[0] < dimension:
        return b""
    bitmap = np.zeros(dimension, dtype=np.uint32)
    bitmap[support] = 1
    return pack_bits(bitmap, 1)


def _pack_stream(bitmap: bytes, codes: np.ndarray, cosets: np.ndarray | None,
                 compressor: zstandard.ZstdCompressor) -> bytes:
    zigzag = _zigzag(codes)
    largest = int(zigzag.max()) if zigzag.size else 0
    width = next((w for w in _CODE_WIDTHS if largest < 1 << w), None)
    if width is None:
        raise RecordBudgetError("a lattice code exceeds 32 bits; the update's range is too wide")
    parts = [bytes([width]), bitmap, pack_bits(zigzag.astype(np.uint32), width)]
    if cosets is not None:
        parts.append(pack_bits(cosets.astype(np.uint32), 1))
    return compressor.compress(b"".join(parts))


def _unpack_stream(blob: bytes, dimension: int, kept: int, lattice: Lattice
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Parse a stream: (support (kept,) int64, codes (blocks·n,) int64, cosets (blocks,) or None)."""
    n = lattice.dimension
    blocks = -(-kept // n)
    has_bitmap = 0 < kept < dimension
    cosets_count = blocks if lattice.name == "E8" else 0
    largest = 1 + packed_length(dimension, 1) + packed_length(blocks * n, 32) + packed_length(cosets_count, 1)
    try:
        # The frame header states the decompressed size (the encoder always writes it); refuse a
        # frame that claims more than the largest valid stream before allocating anything.
        declared = zstandard.get_frame_parameters(blob).content_size
        if declared == zstandard.CONTENTSIZE_UNKNOWN or declared > largest:
            raise MalformedRecordError("entropy-coded stream declares an impossible size")
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=largest)
        if len(raw) < 1 or raw[0] not in _CODE_WIDTHS:
            raise MalformedRecordError("entropy-coded stream has no valid code width")
        width, offset = raw[0], 1
        if has_bitmap:
            bitmap = unpack_bits(raw[offset:offset + packed_length(dimension, 1)], 1, dimension)
            offset += packed_length(dimension, 1)
            support = np.flatnonzero(bitmap)
            if support.shape[0] != kept:
                raise MalformedRecordError("support bitmap disagrees with the kept count")
        else:
            support = np.arange(kept, dtype=np.int64)  # kept = 0 or kept = d: no bitmap needed
        size = packed_length(blocks * n, width)
        codes = _unzigzag(unpack_bits(raw[offset:offset + size], width, blocks * n))
        offset += size
        cosets = None
        if cosets_count:
            cosets = unpack_bits(raw[offset:offset + packed_length(cosets_count, 1)], 1,
                                 cosets_count).astype(np.int64)
            offset += packed_length(cosets_count, 1)
        if offset != len(raw):
            raise MalformedRecordError("entropy-coded stream has trailing bytes")
    except zstandard.ZstdError as error:
        raise MalformedRecordError(f"entropy-coded stream does not decompress: {error}") from None
    except SecAggError as error:
        raise MalformedRecordError(f"entropy-coded stream does not parse: {error}") from None
    return support, codes, cosets


# --- plaintext encode / decode ---------------------------------------------------------------


def _check_update(update: object, dimension: int, name: str) -> np.ndarray:
    array = np.asarray(update)
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise UnlearningInputError(f"{name} must be a 1-D real vector, got shape {array.shape} "
                                   f"and dtype {array.dtype}")
    if array.shape[0] != dimension:
        raise UnlearningInputError(f"{name} has length {array.shape[0]}, the configuration says {dimension}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise UnlearningInputError(f"{name} contains NaN or infinity")
    return array


def _check_seed(seed: object) -> bytes:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != 32:
        raise UnlearningInputError("the dither seed must be 32 bytes")
    return bytes(seed)


def _check_parent(parent_round: object) -> int | None:
    if parent_round is None:
        return None
    if isinstance(parent_round, bool) or not isinstance(parent_round, (int, np.integer)) or parent_round < 0:
        raise UnlearningInputError(f"parent_round must be None or a round index >= 0, got {parent_round!r}")
    return int(parent_round)


class _Trial:
    """The top-k support of one record, encoded at grid steps on demand (each result cached).

    The dither depends only on how many entries are kept, so it is drawn once per trial (from
    the record's seed, as ``DitheredQuantizer.decode`` regenerates it) and every step reuses it;
    so do the support bitmap and the Zstandard context.
    """

    def __init__(self, config: RecordConfig, lattice: Lattice, seed: bytes, delta: np.ndarray,
                 support: np.ndarray, compressor: zstandard.ZstdCompressor) -> None:
        self.config, self.lattice, self.compressor = config, lattice, compressor
        self.support = support
        self.values = delta[support]
        self.largest = float(np.max(np.abs(self.values))) if self.values.size else 0.0
        n = lattice.dimension
        blocks = -(-self.values.shape[0] // n)
        self.padded = np.zeros((blocks, n))
        self.padded.reshape(-1)[: self.values.shape[0]] = self.values
        self.dither = DitheredQuantizer(lattice, 1.0).dither(seed, _DITHER_INFO, blocks) if blocks else None
        self.bitmap = _support_bitmap(support, config.dimension)
        self.results: dict[int, bytes | None] = {}

    def step(self, j: int) -> float:
        if self.largest == 0.0:
            return 1.0  # only exact zeros kept: any step codes them exactly
        return self.largest * 2.0 ** ((j - _GRID_UNITY) / _GRID_PER_OCTAVE)

    def blob(self, j: int) -> bytes | None:
        """The entropy-coded stream at grid step j, or None when it exceeds the body budget."""
        if j not in self.results:
            codes, cosets = np.zeros(0, dtype=np.int64), None
            if self.dither is not None:
                # DitheredQuantizer.encode, with the dither drawn once: Q(x/s + d), x/s as x·(1/s).
                points = self.lattice.nearest_point(self.padded * (1.0 / self.step(j)) + self.dither)
                codes, cosets = _point_codes(self.lattice, points)
            blob = _pack_stream(self.bitmap, codes, cosets, self.compressor)
            self.results[j] = blob if len(blob) <= self.config.body_bytes else None
        return self.results[j]

    def finest_fitting(self) -> int | None:
        """The smallest grid index whose stream fits (bisection; the size falls as the step grows)."""
        if self.blob(_GRID_TOP) is None:
            return None
        low, high = -1, _GRID_TOP  # invariant: high fits; low does not (or is below the grid)
        while high - low > 1:
            middle = (low + high) // 2
            if self.blob(middle) is None:
                low = middle
            else:
                high = middle
        return high


def encode_record_plaintext(update: np.ndarray, *, reference: np.ndarray | None,
                            parent_round: int | None, seed: bytes, config: RecordConfig) -> bytes:
    """MEDU-compress ``update`` against ``reference`` into a ``config.plaintext_bytes`` plaintext.

    update: (d,) the client's recorded update, ‖update‖ <= config.max_norm.
    reference: (d,) the reconstruction of the parent record, or None for a key frame (then
        ``parent_round`` must be None too). seed: the record's 32-byte dither seed.
    Raises UnlearningInputError for an update outside the norm bound (clip it first).
    """
    vector = _check_update(update, config.dimension, "update")
    parent = _check_parent(parent_round)
    if (reference is None) != (parent is None):
        raise UnlearningInputError("a key frame has neither reference nor parent_round; a differential "
                                   "record has both")
    if float(np.linalg.norm(vector)) > config.max_norm * (1.0 + _NORM_RTOL):
        raise UnlearningInputError(
            f"update norm {np.linalg.norm(vector):.6g} exceeds clip_norm + norm_slack = {config.max_norm:.6g}; "
            "clip it before recording")
    seed = _check_seed(seed)
    delta = vector if reference is None else vector - _check_update(reference, config.dimension, "reference")
    lattice = config.lattice_object()

    magnitudes = np.abs(delta)
    order = np.argsort(-magnitudes, kind="stable")
    candidates = int(np.count_nonzero(magnitudes > config.threshold))
    sorted_squares = magnitudes[order] ** 2
    # dropped_energy[k] = Σ of δ_j² outside the top k.
    dropped_energy = np.concatenate([np.cumsum(sorted_squares[::-1])[::-1], [0.0]])
    per_coordinate_moment = lattice.second_moment_per_coordinate

    compressor = _compressor(config.compression_level)
    best: tuple[float, _Trial, int] | None = None
    kept = min(config.kept_entries, candidates)
    while True:
        if best is not None and dropped_energy[kept] >= best[0]:
            break  # fewer kept entries can only drop more than the best total error already is
        trial = _Trial(config, lattice, seed, delta, np.sort(order[:kept]), compressor)
        index = trial.finest_fitting()
        if index is not None:
            error = dropped_energy[kept] + kept * trial.step(index) ** 2 * per_coordinate_moment
            if best is None or error < best[0]:
                best = (error, trial, index)
        if kept == 0:
            break
        kept //= 2
    if best is None:  # unreachable: the empty record fits by the configuration's own check
        raise RecordBudgetError("no encoding fits the record body; raise bits_per_entry")
    _, trial, index = best
    blob = trial.blob(index)
    dropped = np.ones(config.dimension, dtype=bool)
    dropped[trial.support] = False
    threshold = float(magnitudes[dropped].max()) if dropped.any() else 0.0
    header = _HEADER.pack(_MAGIC, RECORD_FORMAT_VERSION, _LATTICE_CODES[config.lattice],
                          _KEYFRAME_FLAG if parent is None else 0, 0,
                          -1 if parent is None else parent, trial.step(index), threshold,
                          trial.support.shape[0], len(blob))
    return header + blob + bytes(config.body_bytes - len(blob))


def parse_record_header(plaintext: bytes, config: RecordConfig) -> RecordHeader:
    """Validate and parse the fixed header (and the zero padding) of a record plaintext."""
    if not isinstance(plaintext, (bytes, bytearray)) or len(plaintext) != config.plaintext_bytes:
        raise MalformedRecordError(f"a record plaintext of this configuration is {config.plaintext_bytes} bytes")
    magic, version, lattice_code, flags, reserved, parent, step, threshold, kept, blob_length = \
        _HEADER.unpack_from(plaintext, 0)
    if magic != _MAGIC or version != RECORD_FORMAT_VERSION:
        raise MalformedRecordError("not a fedvault history record of format version 1")
    if lattice_code != _LATTICE_CODES[config.lattice]:
        raise MalformedRecordError(f"record was coded on another lattice than {config.lattice}")
    if flags not in (0, _KEYFRAME_FLAG) or reserved != 0:
        raise MalformedRecordError("unknown header flags")
    keyframe = flags == _KEYFRAME_FLAG
    if keyframe != (parent == -1) or parent < -1:
        raise MalformedRecordError("key-frame flag and parent round disagree")
    if not (math.isfinite(step) and step > 0.0 and math.isfinite(threshold) and threshold >= 0.0):
        raise MalformedRecordError("step must be finite and positive, threshold finite and non-negative")
    if kept > config.kept_entries:
        raise MalformedRecordError(f"record changes {kept} coordinates, more than the {config.kept_entries} allowed")
    if blob_length > config.body_bytes:
        raise MalformedRecordError("entropy-coded stream longer than the body")
    if any(plaintext[HEADER_BYTES + blob_length:]):
        raise MalformedRecordError("non-zero padding")
    return RecordHeader(None if keyframe else parent, step, threshold, kept, blob_length)


def decode_record_plaintext(plaintext: bytes, *, reference: np.ndarray | None, seed: bytes,
                            config: RecordConfig) -> tuple[np.ndarray, RecordHeader]:
    """Invert :func:`encode_record_plaintext`: the reconstructed update (d,) float64 and header.

    reference: the parent's reconstruction (required iff the record is not a key frame).
    Raises MalformedRecordError for anything that does not parse or is not on the lattice.
    """
    header = parse_record_header(plaintext, config)
    if header.keyframe:
        base = np.zeros(config.dimension, dtype=np.float64)
    else:
        if reference is None:
            raise BrokenChainError(f"record is a difference against round {header.parent_round}, "
                                   "whose reconstruction was not given")
        base = _check_update(reference, config.dimension, "reference").copy()
    seed = _check_seed(seed)
    lattice = config.lattice_object()
    blob = bytes(plaintext[HEADER_BYTES:HEADER_BYTES + header.blob_length])
    support, codes, cosets = _unpack_stream(blob, config.dimension, header.kept, lattice)
    if header.kept:
        points = _code_points(lattice, codes, cosets)
        try:
            z = lattice.to_coordinates(points)
            values = DitheredQuantizer(lattice, header.step).decode(z.reshape(-1), seed, _DITHER_INFO,
                                                                    header.kept)
        except LatticeError as error:
            raise MalformedRecordError(f"record codes are not {lattice.name} lattice points: {error}") from None
        base[support] += values
    return base, header


def _error_bound(header: RecordHeader, config: RecordConfig) -> float:
    quantization = header.step * config.lattice_object().covering_radius if header.kept else 0.0
    return max(header.threshold, quantization)


def _opened(round_index: int, update: np.ndarray, header: RecordHeader, config: RecordConfig
            ) -> OpenedRecord:
    update.setflags(write=False)
    return OpenedRecord(round_index, header.parent_round, update, header.step, header.threshold,
                        _error_bound(header, config))


# --- seal / open ---------------------------------------------------------------------------


def _check_round(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UnlearningInputError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _check_config(config: object) -> RecordConfig:
    if not isinstance(config, RecordConfig):
        raise UnlearningInputError(f"config must be a RecordConfig, got {type(config).__name__}")
    return config


def build_record(update: np.ndarray, *, history_secret: bytes, run_id: RunId, client_id: int,
                 round_index: int, config: RecordConfig, chain: RecordChain | None = None
                 ) -> BuiltRecord:
    """Client side: compress, pad and seal the update the client contributed in ``round_index``.

    update: (d,) fedvault convention (local − global), as contributed (clipped, and noised if
        local DP is on). chain: the client's state after its last stored record (None: first).
    Returns the sealed bytes (always ``config.sealed_bytes`` long), the chain to adopt once the
    server has stored them, and the record as the server will decode it.
    """
    config = _check_config(config)
    round_index = _check_round(round_index, "round_index")
    chain = RecordChain() if chain is None else chain
    if not isinstance(chain, RecordChain):
        raise UnlearningInputError("chain must be a RecordChain")
    if chain.round_index is not None and chain.round_index >= round_index:
        raise UnlearningInputError(f"round {round_index} is not after the chain's last round {chain.round_index}")
    keyframe = chain.reconstruction is None or chain.records_since_keyframe + 1 >= config.keyframe_interval
    seed = dither_seed(history_secret, run_id, round_index, client_id)
    while True:
        reference = None if keyframe else chain.reconstruction
        plaintext = encode_record_plaintext(update, reference=reference,
                                            parent_round=None if keyframe else chain.round_index,
                                            seed=seed, config=config)
        # Closed loop: the chain continues from exactly what the server will reconstruct.
        reconstruction, header = decode_record_plaintext(plaintext, reference=reference, seed=seed,
                                                         config=config)
        norm = float(np.linalg.norm(reconstruction))
        if norm <= config.max_norm:
            break
        if keyframe:
            raise RecordBudgetError(
                f"the recorded update would decode to norm {norm:.6g} > clip_norm + norm_slack = "
                f"{config.max_norm:.6g}; raise bits_per_entry or keep_fraction, or norm_slack")
        keyframe = True  # entries left unchanged from the parent pushed it out: restart the chain
    sealed = seal(record_key(history_secret, run_id, round_index, client_id), plaintext,
                  record_associated_data(run_id, round_index, client_id))
    record = _opened(round_index, reconstruction, header, config)
    next_chain = RecordChain(round_index, record.update, 0 if keyframe else chain.records_since_keyframe + 1)
    return BuiltRecord(sealed, next_chain, record)


def _open_unverified(sealed: bytes, history_secret: bytes, run_id: RunId, client_id: int, round_index: int,
                     config: RecordConfig, previous: OpenedRecord | None) -> OpenedRecord:
    if not isinstance(sealed, (bytes, bytearray, memoryview)) or len(sealed) != config.sealed_bytes:
        raise MalformedRecordError(f"a sealed record of this configuration is {config.sealed_bytes} bytes")
    try:
        plaintext = open_sealed(record_key(history_secret, run_id, round_index, client_id), bytes(sealed),
                                record_associated_data(run_id, round_index, client_id))
    except AuthenticationError:
        raise RecordAuthenticationError(
            f"record of client {client_id} for round {round_index} does not authenticate: wrong "
            "secret, or tampered bytes, or bound to another run, round or client") from None
    header = parse_record_header(plaintext, config)
    reference = None
    if not header.keyframe:
        if previous is None or previous.round_index != header.parent_round:
            raise BrokenChainError(
                f"round {round_index}'s record is a difference against round {header.parent_round}, "
                f"but the record opened before it is "
                f"{'none' if previous is None else 'round ' + str(previous.round_index)}")
        if header.parent_round >= round_index:
            raise MalformedRecordError("a record's parent must be an earlier round")
        reference = previous.update
    update, header = decode_record_plaintext(plaintext, reference=reference,
                                             seed=dither_seed(history_secret, run_id, round_index, client_id),
                                             config=config)
    with np.errstate(over="ignore", invalid="ignore"):  # a forged step can overflow: inf fails below
        norm = float(np.linalg.norm(update))
    if not norm <= config.max_norm:
        raise RecordBoundError(
            f"record of client {client_id} for round {round_index} decodes to norm {norm:.6g} > "
            f"clip_norm + norm_slack = {config.max_norm:.6g}; an honest record cannot")
    return _opened(round_index, update, header, config)


def open_record(sealed: bytes, *, history_secret: bytes, commitment: bytes, run_id: RunId,
                client_id: int, round_index: int, config: RecordConfig,
                previous: OpenedRecord | None = None) -> OpenedRecord:
    """Server side: open one record with a released secret.

    Verifies the secret against the stored commitment (HistorySecretError), derives the key,
    decrypts (RecordAuthenticationError), decodes (MalformedRecordError), adds the parent's
    reconstruction ``previous`` (BrokenChainError if it is not the parent) and checks the norm
    bound (RecordBoundError).
    """
    config = _check_config(config)
    round_index = _check_round(round_index, "round_index")
    verify_history_secret(run_id, client_id, history_secret, commitment)
    return _open_unverified(sealed, history_secret, run_id, client_id, round_index, config, previous)


def open_history(records: Iterable[tuple[int, bytes]], *, history_secret: bytes, commitment: bytes,
                 run_id: RunId, client_id: int, config: RecordConfig) -> Iterator[OpenedRecord]:
    """Server side: open a client's records lazily, in increasing round order, following the chain.

    records: (round_index, sealed bytes) pairs in strictly increasing round order, all the
        client's stored records (a differential record needs its parent just before it).
    The secret is checked against the commitment before this returns (HistorySecretError), so
    nothing is decrypted with a wrong secret. Holds one reconstruction at a time: O(d) memory.
    """
    config = _check_config(config)
    verify_history_secret(run_id, client_id, history_secret, commitment)
    return _open_chain(records, bytes(history_secret), run_id, client_id, config)


def _open_chain(records: Iterable[tuple[int, bytes]], history_secret: bytes, run_id: RunId,
                client_id: int, config: RecordConfig) -> Iterator[OpenedRecord]:
    previous: OpenedRecord | None = None
    for item in records:
        if not isinstance(item, tuple) or len(item) != 2:
            raise UnlearningInputError("records must yield (round_index, sealed bytes) pairs")
        round_index = _check_round(item[0], "a record's round_index")
        if previous is not None and round_index <= previous.round_index:
            raise UnlearningInputError(
                f"records must be in strictly increasing round order ({round_index} after {previous.round_index})")
        previous = _open_unverified(item[1], history_secret, run_id, client_id, round_index, config, previous)
        yield previous
