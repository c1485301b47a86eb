"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

from storage.engine import DATABASE_ENV_VAR, DEFAULT_DATABASE

DATABASE_HELP = (
    "Database: a file path (SQLite) or an SQLAlchemy URL such as "
    "postgresql+psycopg://user@host:5432/name."
)


def database_option(function):
    """--db PATH|URL (env FEDVAULT_DB), passed as ``db``."""
    return click.option(
        "--db", "db", metavar="PATH|URL", envvar=DATABASE_ENV_VAR, show_envvar=True,
        default=DEFAULT_DATABASE, show_default=True, help=DATABASE_HELP,
    )(function)


def json_option(function):
    """--json: machine-readable output on stdout, passed as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, default=False,
                        help="Print machine-readable JSON instead of tables.")(function)
