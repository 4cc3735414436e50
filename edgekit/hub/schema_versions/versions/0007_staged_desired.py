"""Schema 7: desired states a roll-out's ``maxUnavailable`` holds back (``staged_desired``,
:mod:`edgekit.hub.store_staging`).

SQLite runs the table's SQL as the edgekit that introduced it did (``WITHOUT ROWID``), so
a file made then and one upgraded now are the same; PostgreSQL creates it with Alembic's
operations. Both reflect to one schema (tests/test_hub_postgres.py).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edgekit.hub.sql_clusters import statements
from edgekit.hub.sql_rollouts import STAGING_MIGRATION

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in statements(STAGING_MIGRATION):
            op.execute(statement)
        return
    op.create_table(
        "staged_desired",
        sa.Column(
            "host_uid", sa.Text, sa.ForeignKey("hosts.uid", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "cluster_uid",
            sa.Text,
            sa.ForeignKey("clusters.uid", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("max_unavailable", sa.BigInteger, nullable=False),
        sa.Column("desired", sa.Text, nullable=False),
    )
    op.create_index("staged_desired_cluster", "staged_desired", ["cluster_uid", "position"])
