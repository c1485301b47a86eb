"""Lattice coding benchmark: encode/decode throughput (fused numba kernels vs the numpy reference,
side by side), MSE per coordinate vs theory, and the bit width each lattice needs at n = 100.

Run:  python bench/lattice_bench.py            (10**6 coordinates per lattice)
      python bench/lattice_bench.py --quick    (2**17 coordinates; a smoke run)
Writes bench/out/lattice_bench.json and prints a table. Single thread; times are process CPU
time, best of several repeats, so that other load on a shared machine inflates them less.

Columns:
- kernel encode/decode: ``secagg.lattice_kernels`` (numba) vs the numpy reference computing the
  same values, given the PRG's uniforms (the quantizer proper);
- end-to-end encode/decode: ``DitheredQuantizer.encode`` / ``.decode`` including the AES-CTR
  dither stream from ``secagg.prg`` (the same for both backends);
- rotation: ``secagg.rotation`` rotate/unrotate (fast Walsh–Hadamard) on the same length;
- MSE: measured per-coordinate mean squared error at Δ = 1 over the theory G(Λ)·V^{2/n};
- bits at n = 100 (clip C = 1, d = 2**20, step chosen so every lattice has the MSE of Z at
  Δ = 1e−3): the per-coordinate headroom rule (declearn, on |z_k| <= gain·(C/Δ + 2ρ) — the skew of
  the §2.1 basis counts), the Voronoi norm rule the codec uses (never wraps), and the codec's plan
  with rotation and overflow probability 1e−6 (``secagg.codec.plan_bits``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from secagg import lattice_kernels, prg
from secagg.codec import plan_bits
from secagg.context import encode_parts
from secagg.lattice import LATTICE_NAMES, get_lattice, sequential_matmul
from secagg.modular import norm_bits, required_bits
from secagg.quantizer import DitheredQuantizer
from secagg.rotation import rotate, unrotate

SEED = bytes(range(32))
INFO = encode_parts("bench/lattice", "update")
OUT = Path(__file__).resolve().parent / "out" / "lattice_bench.json"

CLIENTS = 100
DIMENSION = 2**20
CLIP_NORM = 1.0
Z_STEP = 1e-3


def _best_cpu_seconds(function, repeats: int) -> float:
    function()  # warm up (numba compilation, page faults)
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return max(best, 1e-9)


def _reference_encode(lattice, x, uniforms, scale):
    n = lattice.dimension
    u = sequential_matmul(uniforms.reshape(-1, n), lattice.generator)
    dither = u - lattice.nearest_point(u)
    return lattice.to_coordinates(lattice.nearest_point(x.reshape(-1, n) * scale + dither)).reshape(-1)


def _reference_decode(lattice, z, uniforms, step):
    n = lattice.dimension
    u = sequential_matmul(uniforms.reshape(-1, n), lattice.generator)
    dither = u - lattice.nearest_point(u)
    return step * (lattice.from_coordinates(z.reshape(-1, n)) - dither).reshape(-1)


def _kernel_decode(lattice, z, uniforms, step):
    return lattice_kernels.decode_blocks(lattice, z, lattice_kernels.dither_blocks(lattice, uniforms), step)


def _bits_at_equal_mse(name: str) -> dict:
    lattice = get_lattice(name)
    # Same MSE per coordinate as Z at Δ = 1e−3: Δ_Λ²·G(Λ)·V^{2/n} = Δ_Z²/12.
    step = Z_STEP * math.sqrt((1.0 / 12.0) / lattice.second_moment_per_coordinate)
    gain = float(np.max(np.linalg.norm(lattice.generator_inverse, axis=0)))
    per_client_point = CLIP_NORM / step + 2.0 * lattice.covering_radius
    return {
        "step": step,
        "bits_coordinate_headroom": required_bits(math.ceil(gain * per_client_point), CLIENTS),
        "bits_voronoi_headroom": norm_bits(CLIENTS * per_client_point, lattice.packing_radius),
        "bits_planned_rotated": plan_bits(CLIP_NORM, step, name, CLIENTS, DIMENSION),
    }


def measure_lattices(coordinates: int = 10**6, repeats: int = 5) -> list[dict]:
    """One row per lattice: throughputs (coordinates/s) numba vs numpy, MSE vs theory, bits.

    Args:
        coordinates: vector length per measurement (rounded down to a multiple of 8).
        repeats: timed repeats per measurement (best CPU time is kept).
    """
    coordinates -= coordinates % 8
    rng = np.random.default_rng(0)  # benchmark data only
    x = rng.normal(scale=3.0, size=coordinates)
    rows = []
    for name in LATTICE_NAMES:
        lattice = get_lattice(name)
        fast = DitheredQuantizer(lattice, 1.0, backend="numba")
        reference = DitheredQuantizer(lattice, 1.0, backend="numpy")
        uniforms = prg.uniform_floats(SEED, INFO, fast.coordinates(coordinates))  # the quantizer's dither stream
        z = fast.encode(x, SEED, INFO)
        assert np.array_equal(z, reference.encode(x, SEED, INFO)), "backends disagree"
        decoded = fast.decode(z, SEED, INFO, coordinates)
        mse = float(np.mean((decoded - x) ** 2))
        timings = {
            "kernel_encode_numba": lambda: lattice_kernels.encode_blocks(lattice, x, uniforms, 1.0),
            "kernel_encode_numpy": lambda: _reference_encode(lattice, x, uniforms, 1.0),
            "kernel_decode_numba": lambda: _kernel_decode(lattice, z, uniforms, 1.0),
            "kernel_decode_numpy": lambda: _reference_decode(lattice, z, uniforms, 1.0),
            "encode_numba": lambda: fast.encode(x, SEED, INFO),
            "encode_numpy": lambda: reference.encode(x, SEED, INFO),
            "decode_numba": lambda: fast.decode(z, SEED, INFO, coordinates),
            "decode_numpy": lambda: reference.decode(z, SEED, INFO, coordinates),
        }
        row = {"lattice": name, "coordinates": coordinates}
        for key, function in timings.items():
            row[key + "_per_s"] = coordinates / _best_cpu_seconds(function, repeats)
        for stage in ("kernel_encode", "kernel_decode", "encode", "decode"):
            row[stage + "_speedup"] = row[stage + "_numba_per_s"] / row[stage + "_numpy_per_s"]
        row["mse_per_coordinate"] = mse
        row["mse_theory"] = lattice.second_moment_per_coordinate
        row["mse_ratio"] = mse / lattice.second_moment_per_coordinate
        row.update(_bits_at_equal_mse(name))
        rows.append(row)
    return rows


def measure_rotation(coordinates: int = 10**6, repeats: int = 5) -> dict:
    """Randomized Hadamard rotate/unrotate throughput (coordinates/s of the unpadded input)."""
    x = np.random.default_rng(1).normal(size=coordinates)  # benchmark data only
    rotated = rotate(x, SEED, INFO)
    return {
        "coordinates": coordinates,
        "padded": int(rotated.shape[0]),
        "rotate_per_s": coordinates / _best_cpu_seconds(lambda: rotate(x, SEED, INFO), repeats),
        "unrotate_per_s": coordinates / _best_cpu_seconds(lambda: unrotate(rotated, SEED, INFO, coordinates), repeats),
    }


def print_table(rows: list[dict]) -> None:
    """Print ``measure_lattices`` rows (millions of coordinates per second)."""
    print(
        f"{'lattice':>7} | {'kernel enc numba/numpy':>22} {'x':>5} | {'kernel dec numba/numpy':>22} {'x':>5} | "
        f"{'encode numba/numpy':>18} {'x':>5} | {'decode numba/numpy':>18} {'x':>5} | {'MSE/theory':>10} | "
        f"{'bits coord/voronoi/plan':>23}"
    )
    for row in rows:
        cells = []
        for stage, width in (("kernel_encode", 22), ("kernel_decode", 22), ("encode", 18), ("decode", 18)):
            pair = f"{row[stage + '_numba_per_s'] / 1e6:.1f}/{row[stage + '_numpy_per_s'] / 1e6:.1f} M/s"
            cells.append(f"{pair:>{width}} {row[stage + '_speedup']:>5.1f}")
        bits = f"{row['bits_coordinate_headroom']}/{row['bits_voronoi_headroom']}/{row['bits_planned_rotated']}"
        print(f"{row['lattice']:>7} | " + " | ".join(cells) + f" | {row['mse_ratio']:>10.4f} | {bits:>23}")


# The names bench/secagg_bench.py imports.
measure_throughput = measure_lattices
print_throughput = print_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2**17 coordinates, 2 repeats (smoke run)")
    parser.add_argument("--coordinates", type=int, default=10**6, help="coordinates per measurement")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON output path")
    arguments = parser.parse_args(argv)
    coordinates, repeats = (2**17, 2) if arguments.quick else (arguments.coordinates, 5)
    rows = measure_lattices(coordinates, repeats)
    rotation = measure_rotation(coordinates, repeats)
    print_table(rows)
    print(
        f"rotation d={rotation['coordinates']} (padded {rotation['padded']}): rotate "
        f"{rotation['rotate_per_s'] / 1e6:.1f} M/s, unrotate {rotation['unrotate_per_s'] / 1e6:.1f} M/s"
    )
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"quick": arguments.quick, "rows": rows, "rotation": rotation}
    arguments.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
