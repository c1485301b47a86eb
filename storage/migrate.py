"""Schema migrations (Alembic), driven programmatically so they work from an installed package.

The migration scripts live in ``storage/migrations`` (shipped as package data); no ``alembic.ini``
is needed. ``fedvault db upgrade`` and ``fedvault db current`` are thin wrappers over
:func:`upgrade_database` and :func:`schema_status`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, exc, inspect, text

from storage.errors import (
    DatabaseConfigurationError,
    SchemaMissingError,
    SchemaOutOfDateError,
    SchemaUnknownError,
    StorageValueError,
)
from storage.schema import Base

if TYPE_CHECKING:
    from storage.engine import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant: serializes concurrent first-time schema creation on PostgreSQL.
_POSTGRES_MIGRATION_LOCK = 0x66766D67  # "fvmg"


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands relative to this fedvault's migrations.

    ``current`` is None for a database without a fedvault schema.
    """

    current: str | None
    head: str
    known: bool

    @property
    def is_head(self) -> bool:
        return self.current == self.head

    @property
    def is_empty(self) -> bool:
        return self.current is None


@dataclass(frozen=True)
class UpgradeResult:
    """The revision before and after :func:`upgrade_database` (equal when nothing was to do)."""

    previous: str | None
    current: str

    @property
    def changed(self) -> bool:
        return self.previous != self.current


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@functools.cache
def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest migration revision this fedvault knows."""
    heads = _script_directory().get_heads()
    if len(heads) != 1:  # a packaging error, not a user error
        raise RuntimeError(f"fedvault migrations must have exactly one head, found {heads}")
    return heads[0]


def known_revisions() -> frozenset[str]:
    """Every revision in this fedvault's migration history."""
    return frozenset(script.revision for script in _script_directory().walk_revisions())


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _status(connection: Connection) -> SchemaStatus:
    current = _current_revision(connection)
    if current is None:
        ours = set(Base.metadata.tables) & set(inspect(connection).get_table_names())
        if ours:
            raise SchemaUnknownError(
                f"database has fedvault tables ({', '.join(sorted(ours))}) but no migration "
                "version; it was not created by fedvault's migrations"
            )
    return SchemaStatus(current=current, head=head_revision(), known=current is None or current in known_revisions())


def schema_status(database: Database) -> SchemaStatus:
    """The database's current revision against this fedvault's head (reads only)."""
    try:
        with database.reading() as session:
            return _status(session.connection())
    except exc.OperationalError as error:
        raise _unreachable(database, error) from None


def check_connection(database: Database) -> None:
    """Raise DatabaseConfigurationError unless the database accepts a connection."""
    try:
        with database.reading() as session:
            session.execute(text("SELECT 1"))
    except exc.OperationalError as error:
        raise _unreachable(database, error) from None


def ensure_schema(database: Database, *, create: bool) -> SchemaStatus:
    """Check the schema is at head; create it in an empty database when ``create`` is true.

    Raises SchemaMissingError (empty, not allowed to create), SchemaOutOfDateError (older revision;
    the message names ``fedvault db upgrade --db ...``) or SchemaUnknownError (a revision this
    fedvault does not know, e.g. written by a newer version).
    """
    status = schema_status(database)
    if status.is_head:
        return status
    if not status.known:
        raise SchemaUnknownError(
            f"database {database.location} is at schema revision {status.current}, which this "
            f"fedvault (head {status.head}) does not know; was it written by a newer fedvault?"
        )
    if status.is_empty:
        if not create:
            raise SchemaMissingError(
                f"database {database.location} has no fedvault schema; create it with "
                f"`{database.upgrade_command}`"
            )
        upgrade_database(database)
        return schema_status(database)
    raise SchemaOutOfDateError(
        f"database {database.location} has schema revision {status.current} but this fedvault "
        f"needs {status.head}; run `{database.upgrade_command}` first"
    )


def upgrade_database(database: Database, revision: str = "head") -> UpgradeResult:
    """Apply the migrations up to ``revision`` in one transaction (all or nothing).

    Safe against a concurrent upgrade of the same database: SQLite serializes on its write lock,
    PostgreSQL on an advisory lock, and the revision is re-read under the lock.
    """
    if not isinstance(revision, str) or not revision:
        raise StorageValueError("revision must be a non-empty string such as 'head'")
    if revision != "head" and revision not in known_revisions():
        raise StorageValueError(f"unknown schema revision {revision!r}; this fedvault's head is {head_revision()}")
    try:
        with database.transaction() as session:
            connection = session.connection()
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK})
            previous = _status(connection).current
            if previous is not None and previous not in known_revisions():
                raise SchemaUnknownError(
                    f"database {database.location} is at schema revision {previous}, unknown to this fedvault"
                )
            config = alembic_config()
            # env.py runs the migrations on this connection, inside this transaction.
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            current = _current_revision(connection)
    except exc.OperationalError as error:
        raise _unreachable(database, error) from None
    assert current is not None
    return UpgradeResult(previous=previous, current=current)


def _unreachable(database: Database, error: exc.OperationalError) -> DatabaseConfigurationError:
    reason = " ".join(str(error.orig).split()) if error.orig is not None else str(error)
    return DatabaseConfigurationError(f"cannot open database {database.location}: {reason}")
