"""Schema 9: failed authentications (``auth_failures``), so every hub replica on one
PostgreSQL counts the failures of all (:mod:`edgekit.hub.store_throttle`).

One row per failure and throttle key (``source:ADDR`` or ``target:NAME``), stamped with
wall-clock time (replicas are different processes) and the replica that saw it. Rows older
than the throttle window are deleted as failures are recorded, and a key keeps at most its
limit of rows, so the table stays small. Created with Alembic's operations on both databases.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        # INTEGER PRIMARY KEY: the rowid on SQLite, a serial on PostgreSQL; it orders the
        # rows of one key whose stamps are equal when the oldest are pruned.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
    )
    op.create_index("auth_failures_key", "auth_failures", ["key", "at"])
    op.create_index("auth_failures_at", "auth_failures", ["at"])
