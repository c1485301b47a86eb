"""Mask PRG and bit-packing throughput, fedvault against Flower's approach in the same run.

fedvault: AES-256-CTR keyed through HKDF (``secagg.prg``), keystream into a reused buffer, fused
numba add-and-reduce; exact b-bit packing (``secagg.bitpack``).
Flower (flwr 1.28 ``secaggplus_utils.pseudo_rand_gen``, re-implemented here from its description):
the 32-byte seed XOR-folded to 32 bits seeds numpy's MT19937, ``randint(0, 2**b - 1)`` draws
int64 values, each neighbour's mask is added into a fresh int64 array, and vectors travel as int64
``.npy`` (8 bytes per coordinate).

All timings are single-threaded wall clock, the median of repeated runs after one warm-up.

    python bench/prg_bench.py            # full size: m in {1e5, 1e6}, b in {16, 24}
    python bench/prg_bench.py --quick    # m = 1e5 only, fewer repeats

Writes bench/out/prg_bench.json and prints a table. ``measure_mask_expansion`` and
``measure_bitpack`` are importable (bench/secagg_bench.py reuses them).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from secagg.bitpack import pack_bits, unpack_bits
from secagg.prg import add_mask, expand_mask

_OUT = Path(__file__).resolve().parent / "out" / "prg_bench.json"
_INFO = b"bench/prg"


def _median_seconds(function: Callable[[], object], *, min_total_s: float = 0.3, min_runs: int = 5) -> float:
    """Median wall time of ``function`` over at least ``min_runs`` runs and ``min_total_s`` seconds."""
    function()  # warm-up: numba compilation/cache load, first-touch page faults, scratch allocation
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - started < min_total_s:
        begin = time.perf_counter()
        function()
        samples.append(time.perf_counter() - begin)
    return statistics.median(samples)


def flower_mask(seed: bytes, bits: int, length: int) -> np.ndarray:
    """Flower's mask: XOR-fold the seed to 32 bits, seed MT19937, randint(0, 2**b - 1) as int64."""
    folded = 0
    for offset in range(0, len(seed), 4):
        folded ^= int.from_bytes(seed[offset : offset + 4], "little")
    generator = np.random.RandomState(folded)  # the baseline being measured, never used for secrets
    return generator.randint(0, 2**bits - 1, length, dtype=np.int64)


def _flower_npy_bytes(vector: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, vector, allow_pickle=False)
    return buffer.getvalue()


def _flower_npy_load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _row(operation: str, length: int, bits: int, ours_s: float, flower_s: float, **extra) -> dict:
    return {
        "operation": operation,
        "length": length,
        "bits": bits,
        "fedvault_seconds": ours_s,
        "fedvault_coords_per_s": length / ours_s,
        "flower_seconds": flower_s,
        "flower_coords_per_s": length / flower_s,
        "speedup": flower_s / ours_s,
        **extra,
    }


def measure_mask_expansion(
    lengths: Sequence[int] = (10**5, 10**6), bits: Sequence[int] = (16, 24), *, min_total_s: float = 0.3
) -> list[dict]:
    """Per-neighbour mask cost: ``expand`` (mask only) and ``expand+add`` (into the masked vector).

    Returns one dict per (operation, length, bits) with seconds and coordinates/s for fedvault
    and for Flower's approach, and ``speedup`` = Flower time / fedvault time.
    """
    seed = os.urandom(32)
    rows = []
    for length in lengths:
        for width in bits:
            ours = _median_seconds(lambda: expand_mask(seed, _INFO, length, width), min_total_s=min_total_s)
            theirs = _median_seconds(lambda: flower_mask(seed, width, length), min_total_s=min_total_s)
            rows.append(_row("expand", length, width, ours, theirs))

            accumulator = np.zeros(length, dtype=np.uint32)
            ours = _median_seconds(lambda: add_mask(accumulator, seed, _INFO, width), min_total_s=min_total_s)
            flower_vector = np.zeros(length, dtype=np.int64)
            # Flower's parameters_addition builds a new int64 array per neighbour.
            theirs = _median_seconds(
                lambda: np.add(flower_vector, flower_mask(seed, width, length)), min_total_s=min_total_s
            )
            rows.append(_row("expand+add", length, width, ours, theirs))
    return rows


def measure_bitpack(
    lengths: Sequence[int] = (10**5, 10**6), bits: Sequence[int] = (16, 24), *, min_total_s: float = 0.3
) -> list[dict]:
    """Serialization of a masked vector: fedvault b-bit packing against Flower's int64 ``.npy``.

    Returns one dict per (operation in {pack, unpack}, length, bits) with coordinates/s, bytes per
    coordinate for each side, and ``speedup`` = Flower time / fedvault time.
    """
    rng = np.random.default_rng(0)  # benchmark data only, nothing secret
    rows = []
    for length in lengths:
        for width in bits:
            values = rng.integers(0, 2**width, length, dtype=np.uint64).astype(np.uint32)
            as_int64 = values.astype(np.int64)
            packed = pack_bits(values, width)
            npy = _flower_npy_bytes(as_int64)
            sizes = {
                "fedvault_bytes_per_coord": len(packed) / length,
                "flower_bytes_per_coord": len(npy) / length,
            }
            ours = _median_seconds(lambda: pack_bits(values, width), min_total_s=min_total_s)
            theirs = _median_seconds(lambda: _flower_npy_bytes(as_int64), min_total_s=min_total_s)
            rows.append(_row("pack", length, width, ours, theirs, **sizes))
            ours = _median_seconds(lambda: unpack_bits(packed, width, length), min_total_s=min_total_s)
            theirs = _median_seconds(lambda: _flower_npy_load(npy), min_total_s=min_total_s)
            rows.append(_row("unpack", length, width, ours, theirs, **sizes))
    return rows


def _environment() -> dict:
    import cryptography
    import numba

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "cryptography": cryptography.__version__,
        "threads": 1,
    }


def _print_table(rows: list[dict]) -> None:
    header = f"{'operation':<11} {'m':>9} {'b':>3} {'fedvault coords/s':>18} {'flower coords/s':>16} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['operation']:<11} {row['length']:>9} {row['bits']:>3} "
            f"{row['fedvault_coords_per_s']:>18.3e} {row['flower_coords_per_s']:>16.3e} {row['speedup']:>7.1f}x"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="m = 1e5 only and shorter timing loops")
    parser.add_argument("--out", type=Path, default=_OUT, help="JSON output path (default: %(default)s)")
    arguments = parser.parse_args(argv)
    lengths = (10**5,) if arguments.quick else (10**5, 10**6)
    min_total_s = 0.1 if arguments.quick else 0.3
    started = time.time()
    masks = measure_mask_expansion(lengths, (16, 24), min_total_s=min_total_s)
    packing = measure_bitpack(lengths, (16, 24), min_total_s=min_total_s)
    report = {
        "benchmark": "prg_bench",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "started_unix": started,
        "environment": _environment(),
        "mask_expansion": masks,
        "bitpack": packing,
    }
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(report, indent=2) + "\n")
    print("Mask PRG, per neighbour (single thread)")
    _print_table(masks)
    print("\nMasked-vector serialization (fedvault b-bit packing vs Flower int64 .npy)")
    _print_table(packing)
    print(f"\nwrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
