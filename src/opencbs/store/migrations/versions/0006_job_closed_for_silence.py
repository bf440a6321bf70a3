"""backup jobs: whether the server closed a job for its agent's silence

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 19:00:00.000000

``closed_for_silence`` is true for a job the server's sweeper closed as
``BS_BACKUP_NOT_FINISHED`` because its agent sent no heartbeat, batch or progress for the
heartbeat timeout (a killed agent, or a machine asleep). Such a job runs again when its agent
speaks again (``store.jobs.reopen_if_silent``): a laptop that wakes up finishes its job and
delivers its whole report. A job finished by its agent is never reopened.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Plain ALTER TABLE on both databases, as in 0005.


def upgrade() -> None:
    op.add_column(
        "backup_jobs",
        sa.Column("closed_for_silence", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("backup_jobs", "closed_for_silence")
