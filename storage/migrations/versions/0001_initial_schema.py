"""Initial schema: runs, clients, rounds, aggregates, checkpoints, sealed records, privacy ledger,
deletion requests, and the hash-chained audit log with its per-run head.

The audit log and the ledger are append-only: triggers refuse UPDATE and DELETE on them, so a
mistaken or malicious statement through the application fails loudly. Someone with DDL rights can
still drop the triggers; the hash chains (``storage.audit``) are what detect that kind of change.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_TABLES = ("audit_log", "ledger_entries")


def upgrade() -> None:
    op.create_table('runs',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=200), nullable=True),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed')", name=op.f('ck_runs_status')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    op.create_table('audit_heads',
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('sequence', sa.Integer(), nullable=False),
        sa.Column('entry_hash', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_audit_heads_run_id_runs')),
        sa.PrimaryKeyConstraint('run_id', name=op.f('pk_audit_heads'))
    )
    op.create_table('audit_log',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('sequence', sa.Integer(), nullable=False),
        sa.Column('event', sa.String(length=64), nullable=False),
        sa.Column('round_index', sa.Integer(), nullable=True),
        sa.Column('client_id', sa.Integer(), nullable=True),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('prev_hash', sa.String(length=64), nullable=False),
        sa.Column('entry_hash', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_audit_log_run_id_runs')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
        sa.UniqueConstraint('run_id', 'sequence', name=op.f('uq_audit_log_run_id_sequence'))
    )
    op.create_table('checkpoints',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('round_index', sa.Integer(), nullable=False),
        sa.Column('model_version', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('codec', sa.String(length=32), nullable=False),
        sa.Column('parameter_count', sa.BigInteger(), nullable=False),
        sa.Column('byte_size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('details', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("source IN ('initial', 'training', 'unlearning')", name=op.f('ck_checkpoints_source')),
        sa.CheckConstraint('round_index >= -1', name=op.f('ck_checkpoints_round_index_range')),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_checkpoints_run_id_runs')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoints')),
        sa.UniqueConstraint('run_id', 'model_version', name=op.f('uq_checkpoints_run_id_model_version'))
    )
    op.create_index(op.f('ix_checkpoints_run_id_round_index'), 'checkpoints', ['run_id', 'round_index'])
    op.create_table('clients',
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('identity_public_key', sa.LargeBinary(), nullable=False),
        sa.Column('history_commitment', sa.LargeBinary(), nullable=False),
        sa.Column('enrolled_at', sa.DateTime(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('deleted_at', sa.DateTime(), nullable=True),
        sa.Column('epsilon_budget', sa.Float(), nullable=False),
        sa.Column('delta', sa.Float(), nullable=False),
        sa.CheckConstraint("status IN ('active', 'deleted')", name=op.f('ck_clients_status')),
        sa.CheckConstraint('client_id >= 0', name=op.f('ck_clients_client_id_non_negative')),
        sa.CheckConstraint('delta >= 0 AND delta < 1', name=op.f('ck_clients_delta_range')),
        sa.CheckConstraint('epsilon_budget > 0', name=op.f('ck_clients_epsilon_budget_positive')),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_clients_run_id_runs')),
        sa.PrimaryKeyConstraint('run_id', 'client_id', name=op.f('pk_clients'))
    )
    op.create_table('rounds',
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('round_index', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('stage', sa.String(length=64), nullable=False),
        sa.Column('cohort', sa.JSON(), nullable=False),
        sa.Column('survivors', sa.JSON(), nullable=False),
        sa.Column('dropouts', sa.JSON(), nullable=False),
        sa.Column('client_weights', sa.JSON(), nullable=False),
        sa.Column('parameters', sa.JSON(), nullable=False),
        sa.Column('bytes_uploaded', sa.BigInteger(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=False),
        sa.Column('committed_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('completed', 'aborted')", name=op.f('ck_rounds_status')),
        sa.CheckConstraint('bytes_uploaded >= 0', name=op.f('ck_rounds_bytes_uploaded_non_negative')),
        sa.CheckConstraint('round_index >= 0', name=op.f('ck_rounds_round_index_non_negative')),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_rounds_run_id_runs')),
        sa.PrimaryKeyConstraint('run_id', 'round_index', name=op.f('pk_rounds'))
    )
    op.create_table('aggregates',
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('round_index', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('codec', sa.String(length=32), nullable=False),
        sa.Column('element_count', sa.BigInteger(), nullable=False),
        sa.Column('byte_size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('blob', sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("kind IN ('lattice_sum', 'mean_update')", name=op.f('ck_aggregates_kind')),
        sa.ForeignKeyConstraint(['run_id', 'round_index'], ['rounds.run_id', 'rounds.round_index'], name=op.f('fk_aggregates_run_id_round_index_rounds')),
        sa.PrimaryKeyConstraint('run_id', 'round_index', 'name', name=op.f('pk_aggregates'))
    )
    op.create_table('checkpoint_tensors',
        sa.Column('checkpoint_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('blob', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], name=op.f('fk_checkpoint_tensors_checkpoint_id_checkpoints'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('checkpoint_id', 'position', name=op.f('pk_checkpoint_tensors'))
    )
    op.create_table('deletion_requests',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('details', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint("state IN ('requested', 'opened', 'unlearned', 'shredded', 'failed')", name=op.f('ck_deletion_requests_state')),
        sa.ForeignKeyConstraint(['run_id', 'client_id'], ['clients.run_id', 'clients.client_id'], name=op.f('fk_deletion_requests_run_id_client_id_clients')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_deletion_requests'))
    )
    # At most one open deletion request per client (partial unique index).
    still_open = sa.text("state NOT IN ('shredded', 'failed')")
    op.create_index(
        'uq_deletion_requests_open_per_client', 'deletion_requests', ['run_id', 'client_id'],
        unique=True, sqlite_where=still_open, postgresql_where=still_open,
    )
    op.create_table('ledger_entries',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.Integer(), nullable=False),
        sa.Column('sequence', sa.Integer(), nullable=False),
        sa.Column('round_index', sa.Integer(), nullable=False),
        sa.Column('stream', sa.String(length=32), nullable=False),
        sa.Column('event', sa.JSON(), nullable=False),
        sa.Column('epsilon_after', sa.Float(), nullable=False),
        sa.Column('delta', sa.Float(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('prev_hash', sa.String(length=64), nullable=False),
        sa.Column('entry_hash', sa.String(length=64), nullable=False),
        sa.CheckConstraint("stream IN ('update-ldp', 'dp-sgd', 'distributed')", name=op.f('ck_ledger_entries_stream')),
        sa.CheckConstraint('delta >= 0 AND delta < 1', name=op.f('ck_ledger_entries_delta_range')),
        sa.CheckConstraint('epsilon_after >= 0', name=op.f('ck_ledger_entries_epsilon_after_non_negative')),
        sa.ForeignKeyConstraint(['run_id', 'client_id'], ['clients.run_id', 'clients.client_id'], name=op.f('fk_ledger_entries_run_id_client_id_clients')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries')),
        sa.UniqueConstraint('run_id', 'client_id', 'sequence', name=op.f('uq_ledger_entries_run_id_client_id_sequence'))
    )
    op.create_table('sealed_records',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('round_index', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.Integer(), nullable=False),
        sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
        sa.Column('record_size', sa.Integer(), nullable=False),
        sa.Column('parameter_count', sa.BigInteger(), nullable=True),
        sa.Column('metadata', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint('record_size >= 0', name=op.f('ck_sealed_records_record_size_non_negative')),
        sa.ForeignKeyConstraint(['run_id', 'client_id'], ['clients.run_id', 'clients.client_id'], name=op.f('fk_sealed_records_run_id_client_id_clients')),
        sa.ForeignKeyConstraint(['run_id', 'round_index'], ['rounds.run_id', 'rounds.round_index'], name=op.f('fk_sealed_records_run_id_round_index_rounds')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sealed_records')),
        sa.UniqueConstraint('run_id', 'client_id', 'round_index', name=op.f('uq_sealed_records_run_id_client_id_round_index'))
    )
    _create_append_only_triggers()


def _create_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION fedvault_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION fedvault_refuse_change()"
            )


def _drop_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_{action}")
    elif dialect == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS fedvault_refuse_change()")


def downgrade() -> None:
    _drop_append_only_triggers()
    for table in (
        "sealed_records",
        "ledger_entries",
        "deletion_requests",
        "checkpoint_tensors",
        "aggregates",
        "rounds",
        "clients",
        "checkpoints",
        "audit_log",
        "audit_heads",
        "runs",
    ):
        op.drop_table(table)
