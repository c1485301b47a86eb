"""``fedvault db``: create or upgrade the database schema, and show where it stands."""

from __future__ import annotations

import json
import shlex

import click

from cli.options import database_option, json_option
from storage.engine import open_database
from storage.errors import SchemaMissingError
from storage import migrate

@click.group("db")
def db() -> None:
    """Manage the fedvault database schema (Alembic migrations).

    A new SQLite file gets the schema automatically on first use; run `fedvault db upgrade`
    after installing a newer fedvault, or to prepare a PostgreSQL database.
    """


@db.command("upgrade")
@database_option
@click.option(
    "--revision",
    default="head",
    show_default=True,
    help="Schema revision to upgrade to; 'head' is the newest this fedvault knows.",
)
def upgrade(db: str, revision: str) -> None:
    """Create the schema in an empty database, or migrate an older one, in one transaction."""
    with open_database(db, create=True, check_schema=False) as handle:
        result = migrate.upgrade_database(handle, revision)
    if result.changed:
        before = result.previous or "empty"
        click.echo(f"upgraded {handle.location}: {before} -> {result.current}")
    else:
        click.echo(f"{handle.location} is already at revision {result.current}")


@db.command("current")
@database_option
@json_option
def current(db: str, as_json: bool) -> None:
    """Show the database's schema revision and whether it is the newest (head)."""
    try:
        with open_database(db, create=False, check_schema=False) as handle:
            status = migrate.schema_status(handle)
            location, revision, known = handle.location, status.current, status.known
    except SchemaMissingError:
        # A SQLite file that does not exist yet: report it without creating it.
        location, revision, known = db, None, True
    head = migrate.head_revision()
    if as_json:
        report = {"database": location, "revision": revision, "head": head, "is_head": revision == head, "known": known}
        click.echo(json.dumps(report))
        return
    if revision is None:
        click.echo(f"{location}: no fedvault schema (head is {head}); run `fedvault db upgrade --db {shlex.quote(location)}`")
    elif revision == head:
        click.echo(f"{location}: revision {revision} (head)")
    elif known:
        click.echo(f"{location}: revision {revision}, out of date (head is {head}); run `fedvault db upgrade --db {shlex.quote(location)}`")
    else:
        click.echo(f"{location}: revision {revision}, unknown to this fedvault (head is {head})")
