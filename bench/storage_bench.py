"""Storage benchmark: record throughput on SQLite and PostgreSQL, and the bits per parameter of
aggregate histories of a real model's updates against float32.

Part 1, sealed-record throughput. ``--rounds`` rounds of ``--clients`` sealed records of
``--record-bytes`` bytes each are committed through ``Repository.commit_round`` (one transaction
per round, with its aggregate, ledger entries and audit entry), then every client's history is
streamed back with ``iter_sealed_records``. The same bytes go through the raw driver (sqlite3 /
psycopg ``executemany``, one transaction per round, same durability settings) as the baseline;
the ratio is fedvault's cost over the bare minimum. SQLite and PostgreSQL run side by side.

Part 2, aggregate histories. An MLP (64-100-10, d = 7,510 parameters) is trained by FedAvg on
sklearn's bundled digits (``--clients`` IID clients, 5 local SGD steps per round); every client's
update of every round is kept. Each update is then encoded with fedvault's lattice codec
(secagg.codec, E8, rotated; dimension padded to m = 8,192) at a step calibrated to a target
per-coordinate MSE, the coordinates are summed over the clients as secure aggregation would, and
the per-round sums are stored with the ``zigzag-zstd`` codec. Reported: stored bits per model
parameter against the float32 mean update (32 bits) and against zstd-compressed float32, and the
empirical entropy of each round's summed coordinates (what an ideal coder of i.i.d. symbols with
that round's histogram would need), averaged over rounds.

Writes bench/out/storage_bench.json and prints the tables. ``--quick`` shrinks everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zstandard

from storage import AggregateWrite, ClientEnrolment, LedgerEntryWrite, Repository, RoundWrite, SealedRecordWrite
from storage.codecs import DEFAULT_ZSTD_LEVEL, RAW, ZIGZAG_ZSTD, decode_array, encode_array

POSTGRES_URL = os.environ.get("FEDVAULT_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
OUT = Path(__file__).resolve().parent / "out" / "storage_bench.json"


# --- part 1: record throughput -------------------------------------------------------------------


def _round(index: int, clients: int, records: list[bytes]) -> RoundWrite:
    now = datetime.now(UTC)
    cohort = tuple(range(clients))
    return RoundWrite(
        round_index=index,
        cohort=cohort,
        survivors=cohort,
        started_at=now,
        finished_at=now,
        aggregates=(AggregateWrite(np.zeros(64, np.int64)),),
        sealed_records=tuple(SealedRecordWrite(c, records[c], {"parent": index - 1}) for c in cohort),
        ledger_entries=tuple(
            LedgerEntryWrite(c, index, "distributed", {"name": "SkellamEvent", "mu": 1.0}, 0.1, 1e-5) for c in cohort
        ),
    )


def fedvault_throughput(url: str, rounds: int, clients: int, record_bytes: int) -> dict:
    """Records/s written (through commit_round) and read (iter_sealed_records streaming)."""
    payloads = [[os.urandom(record_bytes) for _ in range(clients)] for _ in range(rounds)]
    writes = [_round(index, clients, payloads[index]) for index in range(rounds)]  # encoded up front
    with Repository.open(url) as repository:
        run = repository.create_run({"bench": "storage"})
        repository.enrol_clients(
            run.id, [ClientEnrolment(c, os.urandom(32), os.urandom(32), 10.0, 1e-5) for c in range(clients)]
        )
        start = time.perf_counter()
        for write in writes:
            repository.commit_round(run.id, write)
        write_seconds = time.perf_counter() - start
        start = time.perf_counter()
        read = 0
        for client in range(clients):
            for record in repository.iter_sealed_records(run.id, client):
                read += 1
                assert record.ciphertext == payloads[record.round_index][client]
        read_seconds = time.perf_counter() - start
    total = rounds * clients
    assert read == total
    return {
        "records": total,
        "write_seconds": write_seconds,
        "read_seconds": read_seconds,
        "write_records_per_s": total / write_seconds,
        "read_records_per_s": total / read_seconds,
        "write_rounds_per_s": rounds / write_seconds,
    }


def raw_sqlite_throughput(path: str, rounds: int, clients: int, record_bytes: int) -> dict:
    """The baseline: the same blobs through sqlite3 directly, same WAL/FULL durability."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute(
        "CREATE TABLE records (round_index INTEGER, client_id INTEGER, ciphertext BLOB, "
        "PRIMARY KEY (client_id, round_index))"
    )
    payloads = [[os.urandom(record_bytes) for _ in range(clients)] for _ in range(rounds)]
    start = time.perf_counter()
    for index in range(rounds):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO records VALUES (?, ?, ?)", [(index, c, payloads[index][c]) for c in range(clients)]
        )
        connection.execute("COMMIT")
    write_seconds = time.perf_counter() - start
    start = time.perf_counter()
    read = 0
    for client in range(clients):
        for (blob,) in connection.execute(
            "SELECT ciphertext FROM records WHERE client_id = ? ORDER BY round_index", (client,)
        ):
            read += len(blob) > 0
    read_seconds = time.perf_counter() - start
    connection.close()
    total = rounds * clients
    return {"write_records_per_s": total / write_seconds, "read_records_per_s": total / read_seconds}


def raw_postgres_throughput(schema_url: str, schema: str, rounds: int, clients: int, record_bytes: int) -> dict:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(schema_url)
    payloads = [[os.urandom(record_bytes) for _ in range(clients)] for _ in range(rounds)]
    with psycopg.connect(host=url.host, port=url.port or 5432, user=url.username, dbname=url.database,
                         options=f"-csearch_path={schema}") as connection:
        connection.execute(
            "CREATE TABLE raw_records (round_index INTEGER, client_id INTEGER, ciphertext BYTEA, "
            "PRIMARY KEY (client_id, round_index))"
        )
        connection.commit()
        start = time.perf_counter()
        for index in range(rounds):
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO raw_records VALUES (%s, %s, %s)", [(index, c, payloads[index][c]) for c in range(clients)]
                )
            connection.commit()
        write_seconds = time.perf_counter() - start
        start = time.perf_counter()
        read = 0
        for client in range(clients):
            for (blob,) in connection.execute(
                "SELECT ciphertext FROM raw_records WHERE client_id = %s ORDER BY round_index", (client,)
            ):
                read += len(blob) > 0
        read_seconds = time.perf_counter() - start
    total = rounds * clients
    return {"write_records_per_s": total / write_seconds, "read_records_per_s": total / read_seconds}


def _postgres_schema():
    """(url, schema, drop) for a fresh schema on the test server, or None when unreachable."""
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(POSTGRES_URL)
        admin = psycopg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                                dbname=url.database, connect_timeout=3, autocommit=True)
    except Exception as error:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return None, str(error)
    schema = f"fedvault_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    schema_url = url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)

    def drop() -> None:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()

    return (schema_url, schema, drop), None


def bench_records(rounds: int, clients: int, record_bytes: int) -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        fedvault = fedvault_throughput(str(Path(folder) / "fedvault.db"), rounds, clients, record_bytes)
        raw = raw_sqlite_throughput(str(Path(folder) / "raw.db"), rounds, clients, record_bytes)
    results["sqlite"] = {"fedvault": fedvault, "raw_driver": raw}
    postgres, reason = _postgres_schema()
    if postgres is None:
        results["postgresql"] = {"skipped": f"PostgreSQL unreachable: {reason}"}
    else:
        schema_url, schema, drop = postgres
        try:
            fedvault = fedvault_throughput(schema_url, rounds, clients, record_bytes)
            raw = raw_postgres_throughput(schema_url, schema, rounds, clients, record_bytes)
        finally:
            drop()
        results["postgresql"] = {"fedvault": fedvault, "raw_driver": raw}
    return results


# --- part 2: aggregate histories of a real model --------------------------------------------------


def train_update_history(rounds: int, clients: int, hidden: int, seed: int) -> tuple[list[np.ndarray], int]:
    """FedAvg on digits; returns per round a (clients, d) float32 array of client updates."""
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    features, labels = load_digits(return_X_y=True)
    features = torch.tensor(features / 16.0, dtype=torch.float32)
    labels = torch.tensor(labels)
    order = generator.permutation(len(labels))
    shards = np.array_split(order, clients)
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    global_vector = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    history = []
    for _ in range(rounds):
        updates = []
        for shard in shards:
            torch.nn.utils.vector_to_parameters(global_vector.clone(), model.parameters())
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            for _ in range(5):
                batch = torch.tensor(generator.choice(shard, size=min(32, len(shard)), replace=False))
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(features[batch]), labels[batch]).backward()
                optimizer.step()
            local = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
            updates.append((local - global_vector).numpy().astype(np.float32))
        stacked = np.stack(updates)
        history.append(stacked)
        global_vector = global_vector + torch.from_numpy(stacked.mean(axis=0))
    torch.nn.utils.vector_to_parameters(global_vector, model.parameters())
    accuracy = float((model(features).argmax(1) == labels).float().mean())
    return history, accuracy


def _entropy_bits(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    probabilities = counts / values.size
    return float(-(probabilities * np.log2(probabilities)).sum())


def bench_aggregates(rounds: int, clients: int, targets: list[float], level: int) -> dict:
    from secagg.codec import CodecConfig, LatticeCodec

    history, accuracy = train_update_history(rounds, clients, hidden=100, seed=0)
    dimension = history[0].shape[1]
    clip_norm = float(max(np.linalg.norm(step, axis=1).max() for step in history)) * 1.001
    fp32_mean = b"".join(encode_array(step.mean(axis=0).astype(np.float32), RAW) for step in history)
    fp32_zstd = sum(
        len(zstandard.ZstdCompressor(level=level).compress(step.mean(axis=0).astype(np.float32).tobytes()))
        for step in history
    )
    stored_parameters = rounds * dimension
    rows = []
    for target in targets:
        # Calibrate the step on round 0: MSE per coordinate scales as step², so one correction suffices.
        def client_mse(step: float) -> float:
            codec = LatticeCodec(CodecConfig(lattice="E8", step=step, bits=32, clip_norm=clip_norm))
            errors = [codec.decode(codec.encode(u, bytes(32), i), bytes(32), i, dimension) - u
                      for i, u in enumerate(history[0])]
            return float(np.mean(np.square(errors)))

        step = (12 * target) ** 0.5
        for _ in range(2):
            step *= (target / client_mse(step)) ** 0.5
        mse = client_mse(step)
        codec = LatticeCodec(CodecConfig(lattice="E8", step=step, bits=32, clip_norm=clip_norm))
        blobs, sums, per_client_bytes = [], [], 0
        mse_total = 0.0
        for index, updates in enumerate(history):
            seed = index.to_bytes(32, "big")
            coordinates = np.stack([codec.encode(u, seed, c) for c, u in enumerate(updates)])
            per_client_bytes += sum(len(encode_array(z, ZIGZAG_ZSTD, level=level)) for z in coordinates)
            total = coordinates.sum(axis=0)
            blob = encode_array(total, ZIGZAG_ZSTD, level=level)
            assert np.array_equal(decode_array(blob), total)
            mean = codec.decode_sum(total.astype(np.uint32), seed, list(range(clients)), dimension) / clients
            mse_total += float(np.mean((mean - updates.mean(axis=0)) ** 2))
            blobs.append(blob)
            sums.append(total)
        stored = sum(len(b) for b in blobs)
        bits = 8 * stored / stored_parameters
        rows.append(
            {
                "target_coordinate_mse": target,
                "step": step,
                "measured_client_mse": mse,
                "mean_update_mse": mse_total / rounds,
                "coordinates_per_round": int(sums[0].size),
                "max_abs_summed_coordinate": int(max(np.abs(s).max() for s in sums)),
                # Per round, then averaged: the rounds' scales differ, so one histogram over all
                # rounds would overstate what an ideal per-round coder needs.
                "entropy_bits_per_coordinate": float(np.mean([_entropy_bits(total) for total in sums])),
                "stored_bits_per_coordinate": 8 * stored / (rounds * sums[0].size),
                "stored_bits_per_parameter": bits,
                "ratio_vs_fp32": 32.0 / bits,
                "ratio_vs_fp32_zstd": (8 * fp32_zstd / stored_parameters) / bits,
                "per_client_bits_per_parameter": 8 * per_client_bytes / (stored_parameters * clients),
            }
        )
    return {
        "model": "MLP 64-100-10 on sklearn digits, FedAvg, 5 local SGD steps (lr 0.1, batch 32)",
        "parameters": dimension,
        "rounds": rounds,
        "clients": clients,
        "final_train_accuracy": accuracy,
        "lattice": "E8, rotated (secagg.codec)",
        "zstd_level": level,
        "fp32_bits_per_parameter": 8 * len(fp32_mean) / stored_parameters,
        "fp32_zstd_bits_per_parameter": 8 * fp32_zstd / stored_parameters,
        "settings": rows,
    }


# --- report ---------------------------------------------------------------------------------------


def print_tables(result: dict) -> None:
    records = result["records"]
    print(f"\nSealed records: {result['config']['rounds']} rounds x {result['config']['clients']} clients x "
          f"{result['config']['record_bytes']} B")
    print(f"{'backend':<11} {'path':<10} {'write rec/s':>12} {'read rec/s':>12} {'write vs raw':>13} {'read vs raw':>12}")
    for backend in ("sqlite", "postgresql"):
        entry = records[backend]
        if "skipped" in entry:
            print(f"{backend:<11} skipped: {entry['skipped']}")
            continue
        fedvault, raw = entry["fedvault"], entry["raw_driver"]
        print(f"{backend:<11} {'fedvault':<10} {fedvault['write_records_per_s']:>12.0f} {fedvault['read_records_per_s']:>12.0f} "
              f"{fedvault['write_records_per_s'] / raw['write_records_per_s']:>13.2f} "
              f"{fedvault['read_records_per_s'] / raw['read_records_per_s']:>12.2f}")
        print(f"{'':<11} {'raw driver':<10} {raw['write_records_per_s']:>12.0f} {raw['read_records_per_s']:>12.0f}")
    aggregates = result["aggregates"]
    print(f"\nAggregate history: {aggregates['model']}, d={aggregates['parameters']}, "
          f"{aggregates['rounds']} rounds x {aggregates['clients']} clients; "
          f"fp32 = {aggregates['fp32_bits_per_parameter']:.2f} bits/param, "
          f"fp32+zstd = {aggregates['fp32_zstd_bits_per_parameter']:.2f}")
    print(f"{'coord MSE':>10} {'mean MSE':>10} {'H bits/coord':>12} {'bits/coord':>10} {'bits/param':>10} "
          f"{'vs fp32':>8} {'vs fp32+zstd':>12} {'client bits/param':>17}")
    for row in aggregates["settings"]:
        print(f"{row['measured_client_mse']:>10.1e} {row['mean_update_mse']:>10.1e} {row['entropy_bits_per_coordinate']:>12.2f} "
              f"{row['stored_bits_per_coordinate']:>10.2f} {row['stored_bits_per_parameter']:>10.2f} "
              f"{row['ratio_vs_fp32']:>7.1f}x {row['ratio_vs_fp32_zstd']:>11.1f}x {row['per_client_bits_per_parameter']:>17.2f}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (about 20 s)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds for both parts (default 50, quick 8)")
    parser.add_argument("--clients", type=int, default=None, help="clients per round (default 20, quick 10)")
    parser.add_argument("--record-bytes", type=int, default=2048, help="sealed record size in bytes (default 2048)")
    parser.add_argument("--level", type=int, default=DEFAULT_ZSTD_LEVEL, help="zstd level for the aggregates")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON output path")
    args = parser.parse_args(argv)
    rounds = args.rounds or (8 if args.quick else 50)
    clients = args.clients or (10 if args.quick else 20)
    targets = [1e-4, 1e-6] if args.quick else [1e-4, 1e-5, 1e-6, 1e-8]
    result = {
        "benchmark": "storage",
        "config": {"rounds": rounds, "clients": clients, "record_bytes": args.record_bytes, "quick": args.quick,
                   "targets": targets},
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "records": bench_records(rounds, clients, args.record_bytes),
        "aggregates": bench_aggregates(min(rounds, 30), clients, targets, args.level),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print_tables(result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
