"""Alembic migration environment and revisions of the fedvault schema (package data)."""
