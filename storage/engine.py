"""Opening the database: a SQLite file by default, any SQLAlchemy URL otherwise.

SQLite connections are set up for a long-running writer and concurrent readers:

- ``journal_mode=WAL``: readers never block the writer and a crashed writer leaves the last
  committed transaction intact (the WAL is replayed or ignored as a whole).
- ``synchronous=FULL``: a commit is on disk before ``commit_round`` returns, so a round the
  coordinator reported as committed survives a power cut, not only a process crash.
- ``foreign_keys=ON`` (off by default in SQLite), ``busy_timeout`` (wait, not fail, on a lock),
  and ``secure_delete=ON`` so shredded sealed records are overwritten with zeros, not just unlinked.
- Write transactions start with ``BEGIN IMMEDIATE``: the write lock is taken up front, so two
  writers queue on the busy timeout instead of deadlocking on a read-to-write lock upgrade.

PostgreSQL (``postgresql://...`` is read as ``postgresql+psycopg://...``) and other engines get
the default transaction semantics; the repository takes row locks where it extends a hash chain.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from storage.errors import DatabaseConfigurationError, SchemaMissingError, StorageValueError

#: Used when neither a path nor a URL is given: a file in the working directory.
DEFAULT_DATABASE = "fedvault.db"
#: The environment variable the CLI reads for ``--db``.
DATABASE_ENV_VAR = "FEDVAULT_DB"
DEFAULT_BUSY_TIMEOUT_MS = 30_000
SQLITE_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
_WRITE_OPTION = "fedvault_write_transaction"


def resolve_database_url(url_or_path: str | os.PathLike[str] | None) -> URL:
    """The SQLAlchemy URL for a path, a URL, ``":memory:"`` or None (``fedvault.db`` here).

    Anything containing ``://`` is a URL; anything else is a file path (``~`` expanded, made
    absolute). Raises DatabaseConfigurationError for a malformed URL or a missing parent folder.
    """
    if url_or_path is None:
        url_or_path = DEFAULT_DATABASE
    if not isinstance(url_or_path, (str, os.PathLike)):
        raise StorageValueError(f"database must be a path or URL string, got {type(url_or_path).__name__}")
    text = os.fspath(url_or_path)
    if not text.strip():
        raise DatabaseConfigurationError("database path or URL is empty")
    if text == ":memory:":
        return make_url("sqlite://")
    if "://" in text:
        try:
            url = make_url(text)
        except exc.ArgumentError as error:
            raise DatabaseConfigurationError(f"malformed database URL {text!r}: {error}") from None
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver fedvault ships
        return url
    path = Path(text).expanduser().resolve()
    if not path.parent.is_dir():
        raise DatabaseConfigurationError(f"folder {path.parent} for database file {path.name} does not exist")
    if path.is_dir():
        raise DatabaseConfigurationError(f"database path {path} is a folder, not a file")
    return URL.create("sqlite+pysqlite", database=str(path))


def display_url(url: URL) -> str:
    """The URL with any password hidden, safe to print and log."""
    return url.render_as_string(hide_password=True)


class Database:
    """An open database: the engine and the two kinds of session fedvault uses.

    ``reading()`` is a read-only snapshot (one transaction); ``transaction()`` is a write
    transaction that commits when the block ends and rolls back if it raises. Close with
    :meth:`dispose` or use the object as a context manager.
    """

    def __init__(self, engine: Engine, *, location: str) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(**{_WRITE_OPTION: True})
        #: What the user passed (path or password-hidden URL), for messages and ``db`` commands.
        self.location = location

    @property
    def url(self) -> str:
        """The engine's URL with the password hidden."""
        return display_url(self.engine.url)

    @property
    def dialect(self) -> str:
        """``"sqlite"``, ``"postgresql"``, ..."""
        return self.engine.dialect.name

    @property
    def upgrade_command(self) -> str:
        """The shell command that brings this database's schema up to date."""
        return f"fedvault db upgrade --db {shlex.quote(self.location)}"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction: committed at the end of the block, rolled back on an exception."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session over one consistent snapshot; rolled back at the end."""
        # Closing the session rolls its transaction back; nothing read here is ever committed.
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"


def create_database_engine(
    url: URL,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    sqlite_synchronous: str = "FULL",
) -> Engine:
    """A SQLAlchemy engine for ``url`` with fedvault's connection settings (see module doc)."""
    if not (isinstance(busy_timeout_ms, int) and busy_timeout_ms >= 0):
        raise StorageValueError(f"busy_timeout_ms must be a non-negative int, got {busy_timeout_ms!r}")
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS_MODES:
        raise StorageValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS_MODES}")
    is_sqlite = url.get_backend_name() == "sqlite"
    in_memory = is_sqlite and url.database in (None, "", ":memory:")
    options: dict[str, object] = {}
    if in_memory:
        # One connection shared by the pool: every new connection would be a new, empty database.
        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif not is_sqlite:
        options.update(pool_pre_ping=True)
        if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
            # Fail in seconds, not after the operating system's TCP timeout, when the server is down.
            options.update(connect_args={"connect_timeout": 10})
    try:
        engine = create_engine(url, **options)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        raise DatabaseConfigurationError(f"cannot use database URL {display_url(url)}: {error}") from None
    if is_sqlite:
        _configure_sqlite(engine, busy_timeout_ms, sqlite_synchronous, wal=not in_memory)
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, synchronous: str, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API objects
        # Take transaction control away from pysqlite so BEGIN is emitted exactly as below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA secure_delete = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # noqa: ANN001
        immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_private_database_file(path: Path) -> bool:
    """Create an empty SQLite file at ``path`` with mode 0600 (O_CREAT|O_EXCL|O_NOFOLLOW) before
    SQLite opens it, so the database (history records, ledger, enrolled keys) is never created
    under a permissive umask; SQLite gives its -wal and -shm files the main file's mode. An
    existing file is left as it is (False). ``path`` is already resolved (``resolve_database_url``
    follows links on purpose: a database may live on another disk)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    os.close(descriptor)
    return True


def open_database(
    url_or_path: str | os.PathLike[str] | None = None,
    *,
    create: bool = True,
    check_schema: bool = True,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    sqlite_synchronous: str = "FULL",
) -> Database:
    """Open (and by default create) a fedvault database.

    ``url_or_path``: a SQLAlchemy URL (``postgresql+psycopg://user@host/db``), a file path, or
    None for ``fedvault.db`` in the working directory. With ``create`` an empty database gets the
    current schema through the migrations; without it an empty database raises
    SchemaMissingError (and a missing SQLite file is not created). A schema at an older migration always raises SchemaOutOfDateError naming
    ``fedvault db upgrade --db ...``; ``check_schema=False`` skips the check (for the ``db``
    commands themselves). Raises DatabaseConfigurationError when the database cannot be reached.
    """
    from storage import migrate  # the migrations import the schema; keep engine import-light

    url = resolve_database_url(url_or_path)
    if url_or_path is None:
        location = DEFAULT_DATABASE
    elif "://" in os.fspath(url_or_path):
        location = display_url(url)
    else:
        location = os.fspath(url_or_path)
    is_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if is_file and not create and not Path(url.database).exists():
        # Connecting would create an empty file; without permission to create, leave none behind.
        raise SchemaMissingError(
            f"database file {location} does not exist; create it with "
            f"`fedvault db upgrade --db {shlex.quote(location)}`"
        )
    if is_file and create:
        create_private_database_file(Path(url.database))
    engine = create_database_engine(url, busy_timeout_ms=busy_timeout_ms, sqlite_synchronous=sqlite_synchronous)
    database = Database(engine, location=location)
    try:
        if check_schema:
            migrate.ensure_schema(database, create=create)
        else:
            migrate.check_connection(database)
    except BaseException:
        database.dispose()
        raise
    return database
