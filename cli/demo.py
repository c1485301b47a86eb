"""``fedvault demo``: one secure-aggregation round of lattice-coded random updates, end to end.

Each simulated client clips a random float update, encodes it with the lattice codec, and takes
part in a full SecAgg+ round (real keys, shares, masks and wire bytes, scripted dropouts). The
command then checks that the secure sum is exact: equal to the plaintext sum of the survivors'
lattice integers mod 2**b, lifting back to that integer sum, and decoding to the sum of the
survivors' individual decodes. It reports the bytes each client uploaded and the time per stage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import click
import numpy as np

from secagg.codec import CodecConfig, LatticeCodec, plan_bits
from secagg.errors import ConfigurationError
from secagg.graph import default_parameters
from secagg.lattice import LATTICE_NAMES, get_lattice
from secagg.modular import voronoi_lift, wrap
from secagg.simulate import simulate_round
from secagg.stages import ADVERTISE_KEYS, MASKED_INPUT, SHARE_KEYS, STAGES, UNMASK

#: Flower's SecAgg+ sends masked vectors as int64 .npy arrays (docs/ALGORITHMS.md §1.8).
FLOWER_BITS_PER_COORDINATE = 64
_SPREAD = "spread"
# 'spread' drops clients at the most telling stage first: after sharing keys, before masking,
# which makes the server rebuild their mask keys and cancel their pairwise masks.
_SPREAD_ORDER = (MASKED_INPUT, UNMASK, SHARE_KEYS, ADVERTISE_KEYS)
# A float64 decode of the same integers summed in another order differs only by rounding.
_FLOAT_TOLERANCE = 1e-9


def _random_updates(rng: np.random.Generator, clients: int, dimension: int, clip_norm: float):
    """Random directions with norms uniform in [0.2, 0.99]·C: already clipped. Demo data only."""
    updates = {}
    for client_id in range(1, clients + 1):
        direction = rng.standard_normal(dimension)
        updates[client_id] = direction / np.linalg.norm(direction) * clip_norm * rng.uniform(0.2, 0.99)
    return updates


def _dropout_plan(
    rng: np.random.Generator, ids: list[int], dropout: float, stage: str
) -> dict[str, set[int]]:
    count = round(dropout * len(ids))
    dropped = [int(i) for i in rng.choice(ids, size=count, replace=False)] if count else []
    if stage != _SPREAD:
        return {stage: set(dropped)} if dropped else {}
    plan: dict[str, set[int]] = {}
    for index, client_id in enumerate(dropped):
        plan.setdefault(_SPREAD_ORDER[index % len(_SPREAD_ORDER)], set()).add(client_id)
    return plan


def run_demo(
    *,
    clients: int,
    dimension: int,
    dropout: float,
    dropout_stage: str,
    lattice: str,
    step: float,
    clip_norm: float,
    bits: int | None,
    neighbours: int | None,
    threshold: int | None,
    seed: int,
) -> dict:
    """Run the demo round and return its report as a JSON-ready dict (see the command's help)."""
    if clients < 2:
        raise ConfigurationError(f"--clients must be at least 2, got {clients}")
    if dimension < 1:
        raise ConfigurationError(f"--dimension must be at least 1, got {dimension}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigurationError(f"--dropout must be a fraction in [0, 1), got {dropout}")
    if (neighbours is None) != (threshold is None):
        raise ConfigurationError("give both --neighbours and --threshold, or neither for the defaults")
    rng = np.random.default_rng(seed)  # public demo data and dropout choice only; no secrets
    planned_bits = plan_bits(clip_norm, step, lattice, clients, dimension)
    bits = planned_bits if bits is None else bits
    codec = LatticeCodec(CodecConfig(lattice=lattice, step=step, bits=bits, clip_norm=clip_norm))
    codec.check_bits(clients, dimension)  # BitWidthError naming the knob if --bits is too small
    if neighbours is None:
        neighbours, threshold = default_parameters(clients, dropout=max(dropout, 0.05))
    round_seed = os.urandom(32)  # public per-round seed: rotation and dithers
    application_config = json.dumps(
        {
            "codec": dataclasses.asdict(codec.config),
            "round_seed": round_seed.hex(),
            "dimension": dimension,
        },
        sort_keys=True,
    ).encode()

    updates = _random_updates(rng, clients, dimension, clip_norm)
    started = time.perf_counter()
    coordinates = {i: codec.encode(update, round_seed, i) for i, update in updates.items()}
    encode_seconds = time.perf_counter() - started
    inputs = {client_id: wrap(z, bits) for client_id, z in coordinates.items()}
    plan = _dropout_plan(rng, sorted(updates), dropout, dropout_stage)

    outcome = simulate_round(
        inputs,
        bits,
        neighbours_k=neighbours,
        threshold=threshold,
        dropouts=plan,
        application_config=application_config,
    )
    result = outcome.result
    survivors = sorted(result.survivors)
    started = time.perf_counter()
    secure = codec.decode_sum(result.sum, round_seed, survivors, dimension)
    decode_seconds = time.perf_counter() - started

    integer_sum = np.sum([coordinates[i] for i in survivors], axis=0, dtype=np.int64)
    sum_matches_integers = bool(np.array_equal(result.sum, wrap(integer_sum, bits)))
    lift_matches_integers = bool(
        np.array_equal(voronoi_lift(result.sum, bits, get_lattice(lattice)), integer_sum)
    )
    individual = np.sum([codec.decode(coordinates[i], round_seed, i, dimension) for i in survivors], axis=0)
    decode_gap = float(np.max(np.abs(secure - individual)))
    true_sum = np.sum([updates[i] for i in survivors], axis=0)
    relative_error = float(np.linalg.norm(secure - true_sum) / np.linalg.norm(true_sum))

    m = outcome.config.vector_length
    masked_bytes = [outcome.upload_bytes[i][MASKED_INPUT] for i in survivors]
    total_upload = [sum(outcome.upload_bytes[i].values()) for i in survivors]
    payload_bytes = math.ceil(m * bits / 8)
    flower_bytes = dimension * FLOWER_BITS_PER_COORDINATE // 8
    return {
        "clients": clients,
        "dimension": dimension,
        "coordinates": m,
        "lattice": lattice,
        "step": step,
        "clip_norm": clip_norm,
        "bits": bits,
        "planned_bits": planned_bits,
        "neighbours_k": neighbours,
        "threshold": threshold,
        "dropped": {stage: sorted(ids) for stage, ids in result.dropped.items()},
        "survivors": len(survivors),
        "checks": {
            "secure_sum_equals_integer_sum_mod_2b": sum_matches_integers,
            "lift_equals_integer_sum": lift_matches_integers,
            "decode_equals_sum_of_individual_decodes": decode_gap <= _FLOAT_TOLERANCE,
            "max_abs_decode_difference": decode_gap,
        },
        "relative_error_vs_unquantized_sum": relative_error,
        "upload": {
            "masked_input_bytes_per_client": int(np.mean(masked_bytes)),
            "masked_input_payload_bytes": payload_bytes,
            "masked_input_header_bytes": int(np.mean(masked_bytes)) - payload_bytes,
            "all_stages_bytes_per_client_mean": float(np.mean(total_upload)),
            "bits_per_coordinate": bits,
            "bits_per_update_entry": 8 * payload_bytes / dimension,
            "flower_bytes_for_same_update": flower_bytes,
            "flower_bits_per_coordinate": FLOWER_BITS_PER_COORDINATE,
            "ratio_vs_flower": payload_bytes / flower_bytes,
        },
        "timings_seconds": {
            "encode_per_client": encode_seconds / clients,
            "decode_sum": decode_seconds,
            **{
                stage: {
                    "server": timing.server_seconds,
                    "client_mean": timing.client_seconds_mean,
                    "client_max": timing.client_seconds_max,
                }
                for stage, timing in outcome.timings.items()
            },
        },
    }


def _ok(flag: bool) -> str:
    return "OK" if flag else "FAILED"


def _print_report(report: dict) -> None:
    checks, upload, timings = report["checks"], report["upload"], report["timings_seconds"]
    dropped = ", ".join(f"{stage}: {len(ids)}" for stage, ids in report["dropped"].items() if ids)
    click.echo(
        f"SecAgg+ round: {report['clients']} clients, d = {report['dimension']} -> "
        f"m = {report['coordinates']} {report['lattice']} coordinates at b = {report['bits']} bits "
        f"(k = {report['neighbours_k']}, t = {report['threshold']})"
    )
    click.echo(f"dropped: {dropped or 'none'}; {report['survivors']} survivors in the sum")
    click.echo("exact-sum check")
    rows = (
        ("secure sum == survivors' lattice integers mod 2**b", checks["secure_sum_equals_integer_sum_mod_2b"], ""),
        ("lifted secure sum == integer sum", checks["lift_equals_integer_sum"], ""),
        (
            "decode(secure sum) == sum of individual decodes",
            checks["decode_equals_sum_of_individual_decodes"],
            f" (max |diff| {checks['max_abs_decode_difference']:.1e})",
        ),
    )
    for text, passed, detail in rows:
        click.echo(f"  {text:<52}{_ok(passed)}{detail}")
    error = 100 * report["relative_error_vs_unquantized_sum"]
    click.echo(f"  quantization error vs the float sum: {error:.2f}% (relative L2)")
    click.echo("upload per client")
    click.echo(
        f"  masked input: {upload['masked_input_bytes_per_client']:,} B ({upload['bits_per_coordinate']} "
        f"bits/coordinate, {upload['bits_per_update_entry']:.2f} bits/update entry)"
    )
    click.echo(
        f"  Flower SecAgg+ (int64): {upload['flower_bytes_for_same_update']:,} B -> "
        f"{100 * upload['ratio_vs_flower']:.1f}% of Flower's upload"
    )
    click.echo(f"  all four stages: {upload['all_stages_bytes_per_client_mean']:,.0f} B")
    click.echo("timings (s)                 server   client mean   client max")
    for stage in STAGES:
        if stage in timings:
            row = timings[stage]
            click.echo(
                f"  {stage:<24}{row['server']:>8.3f}{row['client_mean']:>14.4f}{row['client_max']:>13.4f}"
            )
    click.echo(
        f"  encode per client: {timings['encode_per_client']:.4f}   decode sum: {timings['decode_sum']:.4f}"
    )


_POSITIVE = click.FloatRange(min=0.0, min_open=True)


@click.command("demo")
@click.option(
    "--clients", default=20, show_default=True, type=click.IntRange(min=2),
    help="Number of simulated clients.",
)
@click.option(
    "--dimension", default=100_000, show_default=True, type=click.IntRange(min=1),
    help="Length d of each client's float update.",
)
@click.option(
    "--dropout", default=0.1, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
    help="Fraction of clients that drop out during the round.",
)
@click.option(
    "--dropout-stage", default=_SPREAD, show_default=True, type=click.Choice([_SPREAD, *STAGES]),
    help="Stage at which the dropped clients go silent; 'spread' deals them out over the four "
    "stages, masked_input first.",
)
@click.option(
    "--lattice", default="E8", show_default=True, type=click.Choice(LATTICE_NAMES),
    help="Lattice of the dithered quantizer.",
)
@click.option(
    "--step", default=1e-3, show_default=True, type=_POSITIVE,
    help="Quantizer step (update units); smaller is more accurate and needs more bits.",
)
@click.option(
    "--clip", "clip_norm", default=1.0, show_default=True, type=_POSITIVE,
    help="L2 norm bound of every update.",
)
@click.option(
    "--bits", default=None, type=click.IntRange(1, 32),
    help="Bits per coordinate b (default: the smallest that cannot overflow, from plan_bits).",
)
@click.option(
    "--neighbours", default=None, type=click.IntRange(min=1),
    help="Neighbour-graph degree k (default: the docs/ALGORITHMS.md §1.4 table; n-1 is classic SecAgg). "
    "Needs --threshold.",
)
@click.option(
    "--threshold", default=None, type=click.IntRange(min=2),
    help="Shamir reconstruction threshold t (default: from the table). Needs --neighbours.",
)
@click.option(
    "--seed", default=0, show_default=True, type=int,
    help="Seed of the random demo updates and of the dropout choice (never of keys or masks).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object instead of a table.")
def demo(
    clients: int,
    dimension: int,
    dropout: float,
    dropout_stage: str,
    lattice: str,
    step: float,
    clip_norm: float,
    bits: int | None,
    neighbours: int | None,
    threshold: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Run one SecAgg+ round over lattice-coded random updates and check the sum is exact.

    Keys, Shamir shares, masks and wire messages are all real; only the network is simulated.
    Exits with status 1 if any exact-sum check fails.
    """
    report = run_demo(
        clients=clients,
        dimension=dimension,
        dropout=dropout,
        dropout_stage=dropout_stage,
        lattice=lattice,
        step=step,
        clip_norm=clip_norm,
        bits=bits,
        neighbours=neighbours,
        threshold=threshold,
        seed=seed,
    )
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report)
    checks = report["checks"]
    if not all(value for key, value in checks.items() if key != "max_abs_decode_difference"):
        raise SystemExit(1)
