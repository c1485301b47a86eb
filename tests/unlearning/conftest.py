"""A stored run built directly through storage (no training), for the deletion-flow tests.

Every number the flow reads is known: each client's contributed update per round, the survivor
weights, the stored mean updates and checkpoints, and real sealed MEDU records built by
``unlearning.records.build_record`` exactly as a client runtime builds them. The database is
built once per session and copied (SQLite backup API) into each test, so the tests that compare
final model bits start from identical stores.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pytest

from secagg.keys import IdentityKey
from storage import AggregateWrite, CheckpointWrite, ClientEnrolment, Repository, RoundWrite, SealedRecordWrite
from unlearning.records import RecordChain, build_record
from unlearning.run_records import run_record_config
from unlearning.secrets import generate_history_secret, history_commitment

CLIENTS = 4
ROUNDS = 6
DIMENSION = 96
CLIP = 1.0
STEP = 0.02
DROPPED = {1: 2, 4: 0}  # round -> the client whose update missed that round's sum
UNRECORDED = {(3, 1)}  # (round, client): a survivor whose record the server never got


@dataclass
class SyntheticRun:
    """What the test knows about the stored run."""

    path: str
    run_id: int
    identities: dict[int, IdentityKey]
    secrets: dict[int, bytes]
    updates: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (round, client) -> Δ
    survivors: dict[int, list[int]] = field(default_factory=dict)
    recorded: set[tuple[int, int]] = field(default_factory=set)

    def open(self) -> Repository:
        return Repository.open(self.path)

    @staticmethod
    def record_config():
        return record_config()


RUN_CONFIG = {"server_learning_rate": 1.0, "history": True, "history_bits_per_entry": 6.0,
              "history_lattice": "Z", "history_max_records": None, "clients": CLIENTS, "rounds": ROUNDS}
ROUND_PARAMETERS = {"dimension": DIMENSION, "clip_norm": CLIP, "lattice": "Z", "step": STEP, "bits": 16,
                    "noise": "none", "mechanism": "skellam", "noise_scale": 0.0}


def record_config():
    return run_record_config(dimension=DIMENSION, clip_norm=CLIP, bits_per_entry=6.0, lattice="Z",
                             codec_lattice="Z", step=STEP, noise_mode="none", noise_mechanism="skellam",
                             noise_parameter=0.0)


def _clipped(rng: np.random.Generator, direction: np.ndarray) -> np.ndarray:
    update = direction + 0.5 * rng.normal(size=DIMENSION)
    return update / max(1.0, float(np.linalg.norm(update)) / (0.9 * CLIP))


def build_synthetic_run(path: str, seed: int = 0) -> SyntheticRun:
    rng = np.random.default_rng(seed)
    repository = Repository.open(path)
    run_id = repository.create_run(RUN_CONFIG).id
    identities = {c: IdentityKey.generate() for c in range(CLIENTS)}
    secrets = {c: generate_history_secret() for c in range(CLIENTS)}
    repository.enrol_clients(run_id, [
        ClientEnrolment(c, identities[c].public_bytes, history_commitment(run_id, c, secrets[c]), 10.0, 1e-5)
        for c in range(CLIENTS)])
    run = SyntheticRun(path, run_id, identities, secrets)
    model = rng.normal(size=DIMENSION).astype(np.float32)
    repository.save_checkpoint(run_id, CheckpointWrite({"flat": model}, codec="raw", source="initial", round_index=-1))
    directions = {c: rng.normal(size=DIMENSION) for c in range(CLIENTS)}
    chains = {c: RecordChain() for c in range(CLIENTS)}
    config = record_config()
    now = datetime.now(UTC)
    for t in range(ROUNDS):
        survivors = [c for c in range(CLIENTS) if DROPPED.get(t) != c]
        run.survivors[t] = survivors
        records = []
        total = np.zeros(DIMENSION)
        for c in survivors:
            update = _clipped(rng, directions[c])
            run.updates[(t, c)] = update
            total += update
            if (t, c) in UNRECORDED:
                continue
            built = build_record(update, history_secret=secrets[c], run_id=run_id, client_id=c, round_index=t,
                                 config=config, chain=chains[c])
            chains[c] = built.chain
            records.append(SealedRecordWrite(c, built.sealed, {"format_version": 1}, DIMENSION))
            run.recorded.add((t, c))
        mean = (total / len(survivors)).astype(np.float32)
        model = model + np.float32(1.0) * mean  # the coordinator's float32 step
        checkpoint = CheckpointWrite({"flat": model}, codec="raw") if t == 2 else None  # later rounds replay
        repository.commit_round(run_id, RoundWrite(
            round_index=t, cohort=list(range(CLIENTS)), survivors=survivors, started_at=now, finished_at=now,
            client_weights={c: 1.0 / len(survivors) for c in survivors},
            parameters={**ROUND_PARAMETERS, "round_seed": os.urandom(32).hex()},
            aggregates=(AggregateWrite(mean, kind="mean_update", name="mean_update"),),
            checkpoint=checkpoint, sealed_records=records))
    repository.close()
    return run


def copy_database(source: str, target: str) -> None:
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)


@pytest.fixture(scope="session")
def synthetic_template(tmp_path_factory) -> SyntheticRun:
    directory = tmp_path_factory.mktemp("synthetic-run")
    return build_synthetic_run(str(directory / "template.db"))


@pytest.fixture
def synthetic_run(synthetic_template, tmp_path) -> SyntheticRun:
    """A fresh copy of the template run for one test."""
    path = str(tmp_path / "run.db")
    copy_database(synthetic_template.path, path)
    return SyntheticRun(path, synthetic_template.run_id, synthetic_template.identities, synthetic_template.secrets,
                        synthetic_template.updates, synthetic_template.survivors, synthetic_template.recorded)
