"""Hub replicas on one PostgreSQL database, for the tests that run several at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgekit.hub import HubServer
from edgekit.hub.security import new_secret
from edgekit.testing import PostgresServer


@contextmanager
def replicas(
    postgres: PostgresServer, count: int, **options: Any
) -> Iterator[tuple[str, list[HubServer]]]:
    """``count`` hub servers (not started: a test may start them in its own order) on a new
    database of ``postgres``, sharing one API key; all closed and the database dropped on
    exit. Yields the database URL and the servers."""
    url = postgres.database()
    key = new_secret("eka_")
    servers = [HubServer(url, api_key=key, access_log=False, **options) for _ in range(count)]
    try:
        yield url, servers
    finally:
        for server in servers:
            server.close()
        postgres.drop(url)
