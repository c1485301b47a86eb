"""SecAgg+ protocol costs: classic SecAgg (k = n - 1) against the Harary graph, side by side.

For every n in {50, 100, 200}, m in {1e5, 1e6} and dropout in {0, 10, 30}% a complete round runs
with real clients and a real server exchanging wire bytes (secagg.client / secagg.server), once
with the complete graph and once with the SecAgg+ Harary graph. Dropped clients share keys and
then go silent before their masked input, the costly case: the server must rebuild their mask keys
and cancel the pairwise masks their surviving neighbours added. Measured in one thread as process
CPU time (less inflated than wall time by other jobs on a shared machine; the unmask's wall time
is recorded too):

- client masking: one client's handling of the masked-input request (open k sealed shares, k
  X25519 agreements, k + 1 mask expansions, bit packing); median over the clients of the round;
- server unmask: closing the unmask stage (Shamir reconstruction of every survivor's self-mask
  seed and every dropped client's mask key, key check, self and pairwise mask removal). Masked
  inputs are summed as they arrive; that streaming cost is reported separately per input.

The Harary column uses the §1.4 table (graph.default_parameters) for the round's dropout rate: the
5%/5% column at 0% dropout, the 5%/33% column at 10% and 30% (the 5% column's t = 6 of 13 holders
would abort often at 30%). n = 50 is below the size where the default falls back to the complete
graph, so there it uses the n = 100 row.
The classic column uses k = n - 1 and a majority threshold. The sum is checked exactly every time.
The issue's target configuration (n = 100, m = 1e6, 10% dropout, Harary) is rerun three times.

Also reprinted, from the sibling benchmarks: mask expansion and bit packing (bench/prg_bench.py)
and lattice encode/decode throughput (bench/lattice_bench.py); plus upload bits per coordinate
against Flower's 64.

    python bench/secagg_bench.py            # full size (about 10-15 minutes on 2 shared cores)
    python bench/secagg_bench.py --quick    # n in {50, 100}, m = 1e5, protocol and upload (~1 min)

Writes bench/out/secagg_bench.json and prints tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The sibling benchmarks' measurements (bench/ is on sys.path when this file runs as a script).
import lattice_bench
import prg_bench
from secagg.client import SecAggClient
from secagg.codec import plan_bits
from secagg.config import INSTANCE_NONCE_LENGTH, RoundConfig
from secagg.graph import COMPLETE_GRAPH_BELOW, default_parameters
from secagg.keys import IdentityKey
from secagg.server import SecAggServer
from secagg.stages import MASKED_INPUT, UNMASK
from secagg.wire import HEADER_LENGTH

_OUT = Path(__file__).resolve().parent / "out" / "secagg_bench.json"
BITS = 20
FLOWER_BITS_PER_COORDINATE = 64
#: Issue #2 target: server unmask for n = 100, m = 1e6, 10% dropout, SecAgg+ graph, one core.
TARGET = {"n": 100, "m": 10**6, "dropout": 0.10, "graph": "harary", "server_unmask_seconds": 0.5}


def harary_parameters(n: int, dropout: float) -> tuple[int, int]:
    """The §1.4 defaults for the dropout the round is designed for (at least the 5% column); below
    the complete-graph cutoff the smallest tabulated row (n = 100) is used."""
    return default_parameters(max(n, COMPLETE_GRAPH_BELOW), dropout=max(dropout, 0.05))


def classic_parameters(n: int) -> tuple[int, int]:
    return n - 1, n // 2 + 1


def run_round(n: int, m: int, neighbours_k: int, threshold: int, dropout: float, seed: int) -> dict:
    """One full round, streamed client by client (O(m) memory on the server side); timings in s."""
    rng = np.random.default_rng(seed)  # benchmark inputs and dropout choice only; nothing secret
    ids = tuple(range(1, n + 1))
    config = RoundConfig(0, os.urandom(INSTANCE_NONCE_LENGTH), ids, neighbours_k, threshold, BITS, m)
    identities = {i: IdentityKey.generate() for i in ids}
    identity_keys = {i: key.public_bytes for i, key in identities.items()}
    clients = {i: SecAggClient(i, identities[i], identity_keys) for i in ids}
    server = SecAggServer(config, identity_keys)
    dropped = {int(i) for i in rng.choice(ids, size=round(dropout * n), replace=False)}
    expected = np.zeros(m, dtype=np.uint32)

    for _ in range(2):  # advertise keys, share keys: nobody drops before masking
        for client_id, request in server.broadcast().items():
            server.receive(client_id, clients[client_id].handle(request))
        server.advance()

    masking, receiving, masked_bytes = [], [], 0
    for client_id, request in server.broadcast().items():
        if client_id in dropped:
            continue
        vector = rng.integers(0, 2**BITS, m, dtype=np.uint32)
        np.add(expected, vector, out=expected)
        clients[client_id].set_input(vector)
        started = time.process_time()
        reply = clients[client_id].handle(request)
        masking.append(time.process_time() - started)
        masked_bytes = len(reply)
        started = time.process_time()
        server.receive(client_id, reply)
        receiving.append(time.process_time() - started)
    server.advance()
    assert server.stage == UNMASK

    for client_id, request in server.broadcast().items():
        server.receive(client_id, clients[client_id].handle(request))
    started, started_wall = time.process_time(), time.perf_counter()
    server.advance()
    unmask_seconds, unmask_wall = time.process_time() - started, time.perf_counter() - started_wall

    result = server.result
    np.bitwise_and(expected, np.uint32(2**BITS - 1), out=expected)
    if not np.array_equal(result.sum, expected) or result.dropped[MASKED_INPUT] != frozenset(dropped):
        raise AssertionError(f"secure sum mismatch for n={n} m={m} k={neighbours_k} dropout={dropout}")
    graph = server.graph
    pairwise_removals = sum(len(graph.neighbours(d) & result.survivors) for d in dropped)
    return {
        "n": n,
        "m": m,
        "dropout": dropout,
        "neighbours_k": neighbours_k,
        "threshold": threshold,
        "dropped": len(dropped),
        "client_masking_seconds_median": statistics.median(masking),
        "client_masking_seconds_max": max(masking),
        "server_receive_masked_input_seconds_median": statistics.median(receiving),
        "server_unmask_seconds": unmask_seconds,
        "server_unmask_wall_seconds": unmask_wall,
        "mask_expansions_at_unmask": len(result.survivors) + pairwise_removals,
        "masked_input_bytes": masked_bytes,
        "sum_exact": True,
    }


def measure_protocol(sizes: Sequence[int], lengths: Sequence[int], dropouts: Sequence[float]) -> list[dict]:
    rows = []
    for m in lengths:
        for n in sizes:
            for dropout in dropouts:
                row = {"n": n, "m": m, "dropout": dropout}
                for graph, parameters in (
                    ("classic", classic_parameters(n)),
                    ("harary", harary_parameters(n, dropout)),
                ):
                    row[graph] = run_round(n, m, *parameters, dropout, seed=n * 1000 + round(100 * dropout))
                for quantity in ("client_masking_seconds_median", "server_unmask_seconds"):
                    row[f"{quantity}_ratio_classic_over_harary"] = row["classic"][quantity] / row["harary"][quantity]
                rows.append(row)
                print(_protocol_line(row), flush=True)
    return rows


def measure_upload(sizes: Sequence[int], dimension: int, clip_norm: float = 1.0, step: float = 1e-3) -> list[dict]:
    """Bits per coordinate of the masked input (header included) against Flower's 64, and the
    issue's bound ceil(log2 n) + (bits of one client's coordinate range) + 1."""
    rows = []
    for lattice in ("Z", "D4", "E8"):
        single = plan_bits(clip_norm, step, lattice, 1, dimension)
        for n in sizes:
            bits = plan_bits(clip_norm, step, lattice, n, dimension)
            message_bytes = HEADER_LENGTH + 9 + math.ceil(dimension * bits / 8)
            bound = math.ceil(math.log2(n)) + single + 1
            rows.append(
                {
                    "lattice": lattice,
                    "n": n,
                    "coordinates": dimension,
                    "bits": bits,
                    "one_client_bits": single,
                    "bound_bits": bound,
                    "within_bound": bits <= bound,
                    "message_bits_per_coordinate": 8 * message_bytes / dimension,
                    "flower_bits_per_coordinate": FLOWER_BITS_PER_COORDINATE,
                    "ratio_vs_flower": 8 * message_bytes / dimension / FLOWER_BITS_PER_COORDINATE,
                }
            )
    return rows


def _protocol_header() -> str:
    return (
        f"{'n':>4} {'m':>8} {'drop':>5} | {'client masking s':^28} | {'server unmask s':^28} | {'harary k,t':>10}\n"
        f"{'':>4} {'':>8} {'':>5} | {'classic':>9} {'harary':>9} {'ratio':>7} | {'classic':>9} {'harary':>9} {'ratio':>7} |"
    )


def _protocol_line(row: dict) -> str:
    classic, harary = row["classic"], row["harary"]
    return (
        f"{row['n']:>4} {row['m']:>8.0e} {row['dropout']:>5.0%} | "
        f"{classic['client_masking_seconds_median']:>9.4f} {harary['client_masking_seconds_median']:>9.4f} "
        f"{row['client_masking_seconds_median_ratio_classic_over_harary']:>6.1f}x | "
        f"{classic['server_unmask_seconds']:>9.4f} {harary['server_unmask_seconds']:>9.4f} "
        f"{row['server_unmask_seconds_ratio_classic_over_harary']:>6.1f}x | "
        f"{harary['neighbours_k']:>5},{harary['threshold']:<4}"
    )


def _print_peer_rows(rows: list[dict]) -> None:
    print(f"{'operation':<11} {'m':>9} {'b':>3} {'fedvault coords/s':>18} {'Flower coords/s':>16} {'speedup':>8}")
    for row in rows:
        print(
            f"{row['operation']:<11} {row['length']:>9} {row['bits']:>3} {row['fedvault_coords_per_s']:>18.3e} "
            f"{row['flower_coords_per_s']:>16.3e} {row['speedup']:>7.1f}x"
        )


def _environment() -> dict:
    import cryptography
    import numba

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "cryptography": cryptography.__version__,
        "threads": 1,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n in {50, 100}, m = 1e5, protocol and upload only")
    parser.add_argument("--out", type=Path, default=_OUT, help="JSON output path (default: %(default)s)")
    arguments = parser.parse_args(argv)
    sizes = (50, 100) if arguments.quick else (50, 100, 200)
    lengths = (10**5,) if arguments.quick else (10**5, 10**6)
    started = time.time()

    print("SecAgg+ round, one thread, process CPU seconds: classic (k = n-1) vs Harary graph;")
    print("dropped clients go silent after sharing keys; the exact sum is checked in every run")
    print(_protocol_header())
    protocol = measure_protocol(sizes, lengths, (0.0, 0.1, 0.3))
    upload = measure_upload(sizes, 10**6)
    report = {
        "benchmark": "secagg_bench",
        "command": " ".join(["bench/secagg_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_unix": started,
        "environment": _environment(),
        "bits": BITS,
        "protocol": protocol,
        "upload": upload,
    }
    if not arguments.quick:
        # The target configuration again, three fresh rounds: the median is less exposed to
        # other jobs on a shared machine than the single run in the table.
        k, t = harary_parameters(TARGET["n"], TARGET["dropout"])
        runs = [
            run_round(TARGET["n"], TARGET["m"], k, t, TARGET["dropout"], seed=seed) for seed in (11, 12, 13)
        ]
        cpu = statistics.median(run["server_unmask_seconds"] for run in runs)
        wall = statistics.median(run["server_unmask_wall_seconds"] for run in runs)
        report["target"] = {
            **TARGET,
            "neighbours_k": k,
            "threshold": t,
            "measured_cpu_seconds_median_of_3": cpu,
            "measured_wall_seconds_median_of_3": wall,
            "met": cpu <= TARGET["server_unmask_seconds"],
        }

    if not arguments.quick:
        report["mask_expansion"] = prg_bench.measure_mask_expansion((10**5, 10**6), (16, 24))
        report["bitpack"] = prg_bench.measure_bitpack((10**5, 10**6), (16, 24))
        report["lattice"] = lattice_bench.measure_lattices()
        print("\nMask PRG per neighbour, and masked-vector serialization (bench/prg_bench.py)")
        _print_peer_rows(report["mask_expansion"] + report["bitpack"])
        print("\nLattice encode/decode throughput (bench/lattice_bench.py)")
        lattice_bench.print_table(report["lattice"])

    print("\nUpload of one masked input, m = 1e6, clip 1, step 1e-3 (bits/coordinate incl. header)")
    print(f"{'lattice':>7} {'n':>4} {'b':>3} {'bound':>5} {'bits/coord':>10} {'Flower':>6} {'ratio':>6}")
    for row in upload:
        print(
            f"{row['lattice']:>7} {row['n']:>4} {row['bits']:>3} {row['bound_bits']:>5} "
            f"{row['message_bits_per_coordinate']:>10.3f} {row['flower_bits_per_coordinate']:>6} "
            f"{row['ratio_vs_flower']:>6.3f}"
        )
    if "target" in report:
        target = report["target"]
        print(
            f"\ntarget: server unmask n=100, m=1e6, 10% dropout, Harary (k={target['neighbours_k']}, "
            f"t={target['threshold']}) <= 0.5 s on one core: median of 3 rounds "
            f"{target['measured_cpu_seconds_median_of_3']:.3f} s CPU, "
            f"{target['measured_wall_seconds_median_of_3']:.3f} s wall "
            f"({'met' if target['met'] else 'NOT met'})"
        )
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
