"""Alembic's environment for the hub store: it runs on the connection the store passes in
``config.attributes["connection"]`` (the store migrates itself when it opens; there is no
alembic.ini)."""

from __future__ import annotations

from alembic import context

from edgekit.hub.dialects import WRITER_LOCK

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Replicas starting together: one migrates, the others wait and find it done.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")
    context.run_migrations()
