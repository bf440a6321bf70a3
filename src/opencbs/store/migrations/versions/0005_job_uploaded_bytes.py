"""backup jobs: the bytes each job wrote to its destination (UploadSize)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 18:00:00.000000

``uploaded_bytes`` is NULL for the jobs stored before (and for jobs of agents that do not send
it): their ``UploadSize`` is then the stored size of their new and updated content, as it was
computed before (``store.jobs.UPLOAD_SIZE``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite adds and drops a column in place since 3.35): a
# batch operation would copy ``backup_jobs`` on SQLite, which its entries' foreign keys refuse
# once it holds jobs.


def upgrade() -> None:
    op.add_column("backup_jobs", sa.Column("uploaded_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("backup_jobs", "uploaded_bytes")
