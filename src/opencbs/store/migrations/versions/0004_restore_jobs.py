"""restore jobs: each restore an agent reports (GetRestoreJobReport, ListRestoreJobStatus)

Revision ID: 0004
Revises: 0003
Create Date: 2027-02-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "restore_jobs",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("set_id", sa.BigInteger(), nullable=False),
        sa.Column("destination_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(length=19), nullable=False),
        sa.Column("mode", sa.String(length=1), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=False),
        sa.Column("end_time", sa.BigInteger(), nullable=True),
        sa.Column("from_ip", sa.String(length=64), nullable=False),
        sa.Column("run_version", sa.String(length=64), nullable=False),
        sa.Column("backup_job_id", sa.String(length=64), nullable=False),
        sa.Column("snapshot_id", sa.String(length=64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("overwrite", sa.String(length=16), nullable=False),
        sa.Column("file_count", sa.BigInteger(), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("dir_count", sa.BigInteger(), nullable=False),
        sa.Column("link_count", sa.BigInteger(), nullable=False),
        sa.Column("kept_count", sa.BigInteger(), nullable=False),
        sa.Column("failed_count", sa.BigInteger(), nullable=False),
        sa.Column("damaged_count", sa.BigInteger(), nullable=False),
        sa.Column("warn_count", sa.BigInteger(), nullable=False),
        sa.Column("error_count", sa.BigInteger(), nullable=False),
        sa.Column("logs", sa.JSON(), nullable=False),
        sa.Column("current_file_name", sa.Text(), nullable=False),
        sa.Column("progress_time", sa.BigInteger(), nullable=True),
        sa.Column("restored_file_count", sa.BigInteger(), nullable=False),
        sa.Column("total_file_count", sa.BigInteger(), nullable=False),
        sa.Column("restored_size", sa.BigInteger(), nullable=False),
        sa.Column("total_file_size", sa.BigInteger(), nullable=False),
        sa.Column("last_activity", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["destinations.id"],
            name=op.f("fk_restore_jobs_destination_id_destinations"),
        ),
        sa.ForeignKeyConstraint(
            ["set_id"], ["backup_sets.id"], name=op.f("fk_restore_jobs_set_id_backup_sets")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_restore_jobs")),
        sa.UniqueConstraint("set_id", "job_id", name="uq_restore_jobs_identity"),
    )
    with op.batch_alter_table("restore_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_restore_jobs_start", ["start_time"], unique=False)
        batch_op.create_index("ix_restore_jobs_running", ["status", "last_activity"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("restore_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_restore_jobs_running")
        batch_op.drop_index("ix_restore_jobs_start")
    op.drop_table("restore_jobs")
