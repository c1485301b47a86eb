"""Opening databases: SQLite connection settings, URL and path handling, clear errors, and writers
that race on one run without breaking its order or its hash chains."""

import threading

import pytest
from sqlalchemy import text

from storage import Repository, open_database
from storage.engine import resolve_database_url
from storage.errors import (
    DatabaseConfigurationError,
    DuplicateError,
    RoundOrderError,
    StorageValueError,
)


def test_sqlite_connections_use_wal_foreign_keys_busy_timeout_and_secure_delete(tmp_path):
    with open_database(tmp_path / "settings.db", busy_timeout_ms=1234) as database:
        # Two connections: the settings are applied to every new connection, not just the first.
        with database.reading() as first, database.reading() as second:
            for session in (first, second):
                pragma = lambda name: session.execute(text(f"PRAGMA {name}")).scalar_one()  # noqa: E731
                assert pragma("journal_mode") == "wal"
                assert pragma("foreign_keys") == 1
                assert pragma("busy_timeout") == 1234
                assert pragma("synchronous") == 2  # FULL
                assert pragma("secure_delete") == 1


def test_foreign_keys_are_enforced(repo, database_url):
    from sqlalchemy import exc

    with pytest.raises(exc.IntegrityError), repo.database.transaction() as session:
        session.execute(
            text("INSERT INTO rounds (run_id, round_index, status, stage, cohort, survivors, dropouts, client_weights, "
                 "parameters, bytes_uploaded, started_at, finished_at, committed_at) VALUES (999, 0, 'completed', 's', "
                 "'[]', '[]', '{}', '{}', '{}', 0, '2026-01-01', '2026-01-01', '2026-01-01')")
        )


def test_paths_and_urls_resolve_as_documented(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_database_url(None).database == str(tmp_path / "fedvault.db")
    assert resolve_database_url("runs/../x.db").database == str(tmp_path / "x.db")
    assert resolve_database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert resolve_database_url("sqlite:////tmp/a.db").database == "/tmp/a.db"
    assert resolve_database_url(":memory:").database is None
    with pytest.raises(DatabaseConfigurationError, match="does not exist"):
        resolve_database_url(tmp_path / "missing" / "x.db")
    with pytest.raises(DatabaseConfigurationError, match="is a folder"):
        resolve_database_url(tmp_path)
    with pytest.raises(DatabaseConfigurationError, match="malformed"):
        resolve_database_url("://nonsense")
    with pytest.raises(DatabaseConfigurationError, match="empty"):
        resolve_database_url("  ")
    with pytest.raises(StorageValueError):
        resolve_database_url(42)


def test_an_in_memory_database_works_for_quick_experiments():
    with Repository.open(":memory:") as repository:
        run = repository.create_run({"x": 1})
        assert repository.get_run(run.id).config == {"x": 1}


def test_an_unreachable_server_is_a_clear_configuration_error():
    with pytest.raises(DatabaseConfigurationError, match="cannot open database"):
        open_database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_an_unknown_driver_is_a_clear_configuration_error():
    with pytest.raises(DatabaseConfigurationError, match="cannot use database URL"):
        open_database("nosuchdb+nodriver://host/db")


def test_the_location_is_shown_without_the_password():
    with pytest.raises(DatabaseConfigurationError) as error:
        open_database("postgresql+psycopg://user:secret@127.0.0.1:1/none?connect_timeout=2")
    assert "secret" not in str(error.value) and "***" in str(error.value)


def test_racing_writers_never_commit_the_same_round_twice(database_url, enrol_clients, make_round):
    # Each writer reads next_round_index() and then commits; the one that loses the race must get
    # DuplicateError/RoundOrderError, and the rounds and the audit chain must stay intact.
    setup = Repository.open(database_url)
    run = setup.create_run({})
    enrol_clients(setup, run.id, range(4))
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer() -> None:
        repository = Repository.open(database_url)
        try:
            for _ in range(6):
                index = repository.next_round_index(run.id)
                try:
                    repository.commit_round(run.id, make_round(index))
                    result = "committed"
                except (DuplicateError, RoundOrderError):
                    result = "lost race"
                with lock:
                    outcomes.append(result)
        finally:
            repository.close()

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rounds = setup.list_rounds(run.id)
    assert [r.round_index for r in rounds] == list(range(outcomes.count("committed")))
    assert len(outcomes) == 18
    assert setup.verify_audit_log(run.id).ok and setup.verify_ledger(run.id).ok
    committed = setup.audit_entries(run.id, event="round.committed")
    assert [e.round_index for e in committed] == [r.round_index for r in rounds]
    setup.close()


def test_a_new_sqlite_file_and_its_wal_are_private_whatever_the_umask(tmp_path):
    import os
    import stat

    previous = os.umask(0o022)  # SQLite alone would create the file 0644 under this umask
    try:
        path = tmp_path / "fedvault.db"
        with open_database(path) as database:
            Repository(database).create_run({"rounds": 1})
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        os.umask(previous)
    assert modes["fedvault.db"] == 0o600
    assert modes["fedvault.db-wal"] == 0o600 and modes["fedvault.db-shm"] == 0o600

