"""Fixtures for the storage tests: every repository test runs on SQLite and on PostgreSQL.

PostgreSQL: the server on 127.0.0.1:5432 (trust auth), database ``test``; each test gets a fresh,
uniquely named schema (dropped afterwards), selected through ``search_path`` in the URL. Override
the server with FEDVAULT_TEST_POSTGRES_URL. When the server is unreachable the PostgreSQL
variants are skipped with the connection error as the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.engine import make_url

from storage import (
    AggregateWrite,
    CheckpointWrite,
    ClientEnrolment,
    LedgerEntryWrite,
    Repository,
    RoundWrite,
    SealedRecordWrite,
)

POSTGRES_URL = os.environ.get("FEDVAULT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _admin_connection():
    import psycopg

    url = make_url(POSTGRES_URL)
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        dbname=url.database or "test",
        connect_timeout=3,
        autocommit=True,
    )


@pytest.fixture(scope="session")
def postgres_admin():
    """An autocommit psycopg connection to the test server, or skip with the reason."""
    import psycopg

    try:
        connection = _admin_connection()
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string(hide_password=True)} unreachable: {error}")
    yield connection
    connection.close()


@pytest.fixture
def postgres_url(postgres_admin) -> Iterator[str]:
    """A URL whose default schema is a fresh, empty schema, dropped after the test."""
    schema = f"fedvault_test_{uuid.uuid4().hex[:12]}"
    postgres_admin.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        postgres_admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    """A path or URL of an empty database, on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "fedvault.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def repo(database_url) -> Iterator[Repository]:
    repository = Repository.open(database_url)
    yield repository
    repository.close()


T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def enrol(repository: Repository, run_id: int, client_ids, *, epsilon_budget: float = 8.0) -> list:
    return repository.enrol_clients(
        run_id,
        [ClientEnrolment(c, bytes([c % 256]) * 32, bytes([255 - c % 256]) * 32, epsilon_budget, 1e-5) for c in client_ids],
    )


def aggregate_values(round_index: int, length: int = 300) -> np.ndarray:
    """A deterministic function of the round, so a torn or swapped blob is detectable."""
    return (np.arange(length, dtype=np.int64) % 23 - 11) * (round_index + 1)


def round_write(
    round_index: int,
    cohort=(0, 1, 2, 3),
    *,
    survivors=None,
    checkpoint: bool = False,
    records: bool = True,
    ledger: bool = True,
    length: int = 300,
    status: str = "completed",
) -> RoundWrite:
    """A complete round: two aggregates, sealed records and ledger charges for the survivors."""
    cohort = tuple(cohort)
    survivors = tuple(cohort[:-1] if survivors is None else survivors)
    dropped = tuple(sorted(set(cohort) - set(survivors)))
    aggregates = ()
    if status == "completed":
        aggregates = (
            AggregateWrite(aggregate_values(round_index, length)),
            AggregateWrite(np.full(length, 0.25 * round_index, dtype=np.float32), kind="mean_update", name="mean"),
        )
    return RoundWrite(
        round_index=round_index,
        cohort=cohort,
        survivors=survivors,
        started_at=T0 + timedelta(minutes=round_index),
        finished_at=T0 + timedelta(minutes=round_index, seconds=30),
        status=status,
        stage="completed" if status == "completed" else "masked_input",
        dropouts={"masked_input": dropped} if dropped else {},
        client_weights={c: 1.0 + c for c in survivors},
        parameters={"bits": 16, "lattice": "E8", "step": 0.03},
        bytes_uploaded=1000 * len(cohort),
        aggregates=aggregates,
        checkpoint=CheckpointWrite({"w": np.full((4, 5), round_index, np.float32), "b": np.zeros(5, np.float32)})
        if checkpoint
        else None,
        sealed_records=tuple(
            SealedRecordWrite(c, bytes([round_index % 256, c % 256]) * 64, {"parent": round_index - 1, "seed_id": c}, parameter_count=length)
            for c in survivors
        )
        if records
        else (),
        ledger_entries=tuple(
            LedgerEntryWrite(c, round_index, "distributed", {"name": "SkellamEvent", "mu": 2.5, "l2_sensitivity": 1.0},
                             0.25 * (round_index + 1), 1e-5)
            for c in survivors
        )
        if ledger
        else (),
    )


@pytest.fixture
def make_round() -> Callable[..., RoundWrite]:
    """``make_round(index, cohort=(0, 1, 2, 3), survivors=..., checkpoint=False, ...)``."""
    return round_write


@pytest.fixture
def aggregate_values_of() -> Callable[..., np.ndarray]:
    """The lattice-sum aggregate ``make_round`` stores for a round index."""
    return aggregate_values


@pytest.fixture
def enrol_clients() -> Callable[..., list]:
    """``enrol_clients(repo, run_id, ids)``: enrol clients with fixed keys."""
    return enrol


@pytest.fixture
def enrolled_run(repo):
    """A run with clients 0..4 enrolled; returns its id."""
    run = repo.create_run({"rounds": 10, "clients": 5}, name="test")
    enrol(repo, run.id, range(5))
    return run.id
