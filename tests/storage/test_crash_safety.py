"""Crash safety: a writer process is SIGKILLed at random points, many times. After every kill the
database is intact (SQLite: PRAGMA integrity_check), holds only whole rounds, and the next writer
continues from last_committed_round + 1."""

import importlib.util
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from storage import Repository

WRITER_PATH = Path(__file__).with_name("crash_writer.py")
_spec = importlib.util.spec_from_file_location("crash_writer", WRITER_PATH)
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)


def _check_whole_rounds(database_url: str, run_id: int) -> int | None:
    """Assert every invariant of a consistent history; return the last committed round."""
    if "://" not in database_url:
        with sqlite3.connect(database_url) as raw:  # opening it replays or discards the WAL
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    with Repository.open(database_url) as repository:
        rounds = repository.list_rounds(run_id)
        indices = [r.round_index for r in rounds]
        assert indices == list(range(len(rounds))), "rounds must be contiguous from 0"
        for index in indices:
            aggregates = repository.load_aggregates(run_id, index)
            assert set(aggregates) == {"update", "mean"}
            assert np.array_equal(aggregates["update"].values, writer.lattice_sum(index))
            assert np.all(aggregates["mean"].values == index)
        for client in writer.SURVIVORS:
            records = list(repository.iter_sealed_records(run_id, client))
            assert [r.round_index for r in records] == indices
            assert all(r.ciphertext == writer.record_bytes(r.round_index, client) for r in records)
            ledger = repository.ledger_entries(run_id, client_id=client)
            assert [(e.sequence, e.round_index) for e in ledger] == [(i, i) for i in indices]
        assert list(repository.iter_sealed_records(run_id, 4)) == []  # the dropped client
        committed = repository.audit_entries(run_id, event="round.committed")
        assert [e.round_index for e in committed] == indices
        expected_checkpoints = [i for i in indices if (i + 1) % writer.CHECKPOINT_EVERY == 0]
        assert [c.round_index for c in repository.list_checkpoints(run_id)] == expected_checkpoints
        assert repository.verify_audit_log(run_id).ok
        assert repository.verify_ledger(run_id).ok
        return repository.last_committed_round(run_id)


def _kill_repeatedly(database_url: str, kills: int, seed: int) -> None:
    with Repository.open(database_url) as repository:
        run_id = repository.create_run({"purpose": "crash test"}).id
        from storage import ClientEnrolment

        repository.enrol_clients(
            run_id, [ClientEnrolment(c, bytes([c]) * 32, bytes([c + 1]) * 32, 10.0, 1e-5) for c in writer.COHORT]
        )
    rng = random.Random(seed)  # fixed seed: the kill points are random but the test is reproducible
    last = None
    killed_after_commits = 0
    for _ in range(kills):
        process = subprocess.Popen(
            [sys.executable, str(WRITER_PATH), database_url, str(run_id)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = process.stdout.readline()
        assert ready.startswith("ready "), process.stderr.read()
        assert int(ready.split()[1]) == (0 if last is None else last + 1), "the writer must resume after the last round"
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        output = process.stdout.read()
        process.stdout.close()
        process.stderr.close()
        assert process.returncode == -signal.SIGKILL
        killed_after_commits += "committed" in output
        last = _check_whole_rounds(database_url, run_id)
    assert last is not None and last + 1 >= kills, "the writers made progress between kills"
    assert killed_after_commits >= kills // 2, "most kills must land while rounds are being written"


def test_sigkill_never_leaves_a_torn_round_in_sqlite(tmp_path):
    _kill_repeatedly(str(tmp_path / "crash.db"), kills=15, seed=20260101)


@pytest.mark.postgres
def test_sigkill_never_leaves_a_torn_round_in_postgresql(postgres_url):
    _kill_repeatedly(postgres_url, kills=5, seed=20260102)
