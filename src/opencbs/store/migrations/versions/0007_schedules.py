"""schedules, missed-backup claims, backups started from the server, agents' last poll

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 20:00:00.000000

Issue 16 (unattended backups): ``schedules`` (a backup set's schedules, cbs-api.md §13, with
the next slot the missed-backup sweep checks), ``missed_slots`` (one row per slot recorded as
``BS_STOP_MISSED_BACKUP``: the claim that makes it once), ``run_requests`` (RunBackup.do) and
``backup_users.last_seen_ms`` (the agent's last poll: ListUsers ``Online``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("backup_users", sa.Column("last_seen_ms", sa.BigInteger(), nullable=True))
    op.create_table(
        "schedules",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("set_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("next_check_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["set_id"], ["backup_sets.id"], name="fk_schedules_set_id_backup_sets"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
    )
    op.create_index("ix_schedules_set", "schedules", ["set_id", "position"])
    op.create_index("ix_schedules_next_check", "schedules", ["next_check_ms"])
    op.create_table(
        "missed_slots",
        sa.Column("schedule_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("slot_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("set_id", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", "slot_ms", name="pk_missed_slots"),
    )
    op.create_table(
        "run_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("set_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("requested_at", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", sa.BigInteger(), nullable=True),
        sa.Column("job_id", sa.String(length=19), nullable=True),
        sa.ForeignKeyConstraint(
            ["set_id"], ["backup_sets.id"], name="fk_run_requests_set_id_backup_sets"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["backup_users.id"], name="fk_run_requests_user_id_backup_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_run_requests"),
    )
    op.create_index("ix_run_requests_user_status", "run_requests", ["user_id", "status"])
    op.create_index("ix_run_requests_set_status", "run_requests", ["set_id", "status"])


def downgrade() -> None:
    op.drop_table("run_requests")
    op.drop_table("missed_slots")
    op.drop_index("ix_schedules_next_check", table_name="schedules")
    op.drop_index("ix_schedules_set", table_name="schedules")
    op.drop_table("schedules")
    op.drop_column("backup_users", "last_seen_ms")
