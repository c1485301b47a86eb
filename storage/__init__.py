"""Persistence: SQLAlchemy schema, engines (SQLite by default, any URL), repositories, blob codecs.
Imports nothing else of fedvault's."""
