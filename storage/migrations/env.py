"""Alembic environment for fedvault.

Run programmatically by ``storage.migrate``: the caller puts an open connection (already inside a
transaction) in ``config.attributes["connection"]`` and the migrations run on it, so an upgrade
commits or rolls back as one unit. ``sqlalchemy.url`` is honoured for the plain ``alembic`` CLI.
"""

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from storage.schema import Base

config = context.config
target_metadata = Base.metadata


def _configure(**options) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables in later revisions.
        render_as_batch=True,
        compare_type=True,
        **options,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=NullPool)
    with engine.connect() as own_connection:
        _configure(connection=own_connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
