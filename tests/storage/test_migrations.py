"""Migrations and `fedvault db`: an empty database gets exactly the models' schema, `db current`
reports head, an out-of-date schema is refused with the command to run, and `db upgrade` fixes it."""

import json
import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, text

import storage.migrate as migrate
from cli.main import fedvault
from storage import open_database
from storage.errors import SchemaMissingError, SchemaOutOfDateError, SchemaUnknownError
from storage.schema import Base

HEAD = "0001_initial"

SECOND_REVISION = '''
"""test-only revision: adds runs.note"""
import sqlalchemy as sa
from alembic import op

revision = "0002_test_note"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("note")
'''


def _invoke(*args, env=None):
    return CliRunner().invoke(fedvault, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def newer_fedvault(tmp_path, monkeypatch):
    """Pretend a newer fedvault is installed: the real migrations plus one more revision."""
    migrations = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0002_test_note.py").write_text(SECOND_REVISION)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", migrations)
    migrate._script_directory.cache_clear()
    yield "0002_test_note"
    migrate._script_directory.cache_clear()


def test_the_packaged_migrations_have_one_head():
    assert migrate.head_revision() == HEAD
    assert migrate.known_revisions() == {HEAD}
    assert (Path(migrate.MIGRATIONS_DIR) / "script.py.mako").is_file()


def test_an_empty_database_gets_exactly_the_models_schema(database_url):
    with open_database(database_url) as database:
        status = migrate.schema_status(database)
        assert (status.current, status.is_head) == (HEAD, True)
        with database.reading() as session:
            context = MigrationContext.configure(session.connection(), opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            tables = set(inspect(session.connection()).get_table_names())
        assert set(Base.metadata.tables) <= tables


def test_db_upgrade_then_current_reports_head(database_url):
    result = _invoke("db", "upgrade", "--db", database_url)
    assert result.exit_code == 0, result.output
    assert f"empty -> {HEAD}" in result.output
    again = _invoke("db", "upgrade", "--db", database_url)
    assert "already at revision" in again.output
    current = _invoke("db", "current", "--db", database_url)
    assert current.exit_code == 0 and f"revision {HEAD} (head)" in current.output
    report = json.loads(_invoke("db", "current", "--db", database_url, "--json").output)
    assert report["revision"] == HEAD and report["head"] == HEAD and report["is_head"] is True


def test_db_reads_the_database_from_the_environment(tmp_path):
    path = tmp_path / "from-env.db"
    result = _invoke("db", "upgrade", env={"FEDVAULT_DB": str(path)})
    assert result.exit_code == 0 and path.exists()
    report = json.loads(_invoke("db", "current", "--json", env={"FEDVAULT_DB": str(path)}).output)
    assert report["is_head"] is True and report["database"] == str(path)


def test_db_current_on_a_missing_file_reports_no_schema_and_creates_nothing(tmp_path):
    path = tmp_path / "absent.db"
    report = json.loads(_invoke("db", "current", "--db", str(path), "--json").output)
    assert (report["revision"], report["is_head"]) == (None, False)
    assert "fedvault db upgrade --db" in _invoke("db", "current", "--db", str(path)).output
    assert not path.exists()


def _help(*command):
    return " ".join(_invoke(*command, "--help").output.split())  # unwrap click's line wrapping


def test_every_db_option_has_help_text():
    for command in ("upgrade", "current"):
        output = _help("db", command)
        assert "--db PATH|URL" in output and "FEDVAULT_DB" in output and "SQLAlchemy URL" in output
        assert "default: fedvault.db" in output
    assert "newest this fedvault knows" in _help("db", "upgrade")
    assert "machine-readable JSON" in _help("db", "current")


def test_a_cli_error_is_one_line_and_exit_code_2(tmp_path):
    result = CliRunner().invoke(fedvault, ["db", "upgrade", "--db", str(tmp_path / "no" / "such" / "x.db")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("fedvault: error: folder") and result.output.count("\n") == 1


def test_without_create_an_empty_database_is_refused_with_the_command_named(database_url, tmp_path):
    with pytest.raises(SchemaMissingError, match=r"fedvault db upgrade --db "):
        open_database(database_url, create=False)
    if "://" not in database_url:
        assert not Path(database_url).exists()


def test_an_out_of_date_schema_is_refused_until_db_upgrade(database_url, newer_fedvault):
    with open_database(database_url, check_schema=False) as database:
        migrate.upgrade_database(database, HEAD)  # a database written by the older fedvault
    with pytest.raises(SchemaOutOfDateError) as refused:
        open_database(database_url)
    message = str(refused.value)
    assert f"schema revision {HEAD}" in message and newer_fedvault in message
    assert "run `fedvault db upgrade --db " in message
    report = json.loads(_invoke("db", "current", "--db", database_url, "--json").output)
    assert (report["revision"], report["head"], report["is_head"]) == (HEAD, newer_fedvault, False)

    upgraded = _invoke("db", "upgrade", "--db", database_url)
    assert f"{HEAD} -> {newer_fedvault}" in upgraded.output
    with open_database(database_url) as database, database.reading() as session:
        assert "note" in {c["name"] for c in inspect(session.connection()).get_columns("runs")}


def test_a_revision_this_fedvault_does_not_know_is_refused(database_url):
    with open_database(database_url) as database, database.transaction() as session:
        session.execute(text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
    with pytest.raises(SchemaUnknownError, match="newer fedvault"):
        open_database(database_url)


def test_fedvault_tables_without_a_migration_version_are_refused(database_url):
    with open_database(database_url) as database, database.transaction() as session:
        session.execute(text("DROP TABLE alembic_version"))
    with pytest.raises(SchemaUnknownError, match="no migration version"):
        open_database(database_url)
