"""storage statistics: measurements of each backup set destination

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-12 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "storage_stats",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("set_id", sa.BigInteger(), nullable=False),
        sa.Column("destination_id", sa.BigInteger(), nullable=False),
        sa.Column("measured_at", sa.BigInteger(), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("data_size", sa.BigInteger(), nullable=False),
        sa.Column("data_count", sa.BigInteger(), nullable=False),
        sa.Column("retain_size", sa.BigInteger(), nullable=False),
        sa.Column("retain_count", sa.BigInteger(), nullable=False),
        sa.Column("snapshot_count", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["destinations.id"],
            name=op.f("fk_storage_stats_destination_id_destinations"),
        ),
        sa.ForeignKeyConstraint(
            ["set_id"], ["backup_sets.id"], name=op.f("fk_storage_stats_set_id_backup_sets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_stats")),
        sa.UniqueConstraint("destination_id", "measured_at", name="uq_storage_stats_measurement"),
    )
    with op.batch_alter_table("storage_stats", schema=None) as batch_op:
        batch_op.create_index("ix_storage_stats_set_time", ["set_id", "measured_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("storage_stats", schema=None) as batch_op:
        batch_op.drop_index("ix_storage_stats_set_time")
    op.drop_table("storage_stats")
