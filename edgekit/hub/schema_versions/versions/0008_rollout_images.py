"""Schema 8: the provider image a roll-out moves each cluster to, and the one it had
(``rollout_clusters.from_provider_image`` / ``to_provider_image``), so a rollback puts the
image back with the profile version. Both NULL when the roll-out changes no image.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN of a nullable column: one statement on both databases, no table rewrite.
    op.add_column("rollout_clusters", sa.Column("from_provider_image", sa.Text, nullable=True))
    op.add_column("rollout_clusters", sa.Column("to_provider_image", sa.Text, nullable=True))
