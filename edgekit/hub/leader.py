"""Which hub process runs the singletons (the roll-out controller) when several share one
PostgreSQL database: the one holding a session-level advisory lock.

The lock lives on a connection of its own, so it is released the moment its holder dies
(SIGKILL, OOM, a lost network: PostgreSQL ends the session and frees its locks), and the
other replicas, which try it at every tick, take over within one tick. The leader checks it
still holds the lock before every controller step, so a replica that lost its connection
stops driving before another starts. Each step is one transaction under the writer lock,
reading the roll-out's state as committed: the new leader goes on from the last committed
step, and no cluster is updated twice.

On SQLite (one process per file) the one hub is always the leader.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.hub.controller import RolloutController
from edgekit.hub.dialects import WRITER_LOCK
from edgekit.hub.domain import Hub
from edgekit.hub.migrations import parse_url

__all__ = ["CONTROLLER_LOCK", "LeaderController", "Leadership"]

log = logging.getLogger("edgekit.hub")

#: The advisory lock (session level) the roll-out controller's replica holds.
CONTROLLER_LOCK = WRITER_LOCK + 1


class Leadership:
    """Whether this process may run the hub's singletons; :meth:`held` tries to become it."""

    def __init__(self, url: str) -> None:
        kind, target = parse_url(url)
        # libpq takes the URL without SQLAlchemy's driver name.
        self._conninfo = None if kind == "sqlite" else target.replace("+psycopg", "", 1)
        self._conn: Any = None
        self._holding = False

    def held(self) -> bool:
        """True while this process holds the lock (taking it when it is free)."""
        if self._conninfo is None:
            return True
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._holding = False
                self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            if self._holding:
                self._conn.execute("SELECT 1")  # the session (and so the lock) is alive
                return True
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (CONTROLLER_LOCK,))
            self._holding = bool(row.fetchone()[0])
            if self._holding:
                log.info("this hub runs the roll-out controller (it holds the leader lock)")
            return self._holding
        except psycopg.Error as exc:
            if self._holding:
                log.warning("lost the roll-out controller's leader lock: %s", exc)
            self.close()
            return False

    def close(self) -> None:
        """Give the lock up (closing its session)."""
        self._holding = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # a session the server already ended
                log.debug("closing the leader lock's connection failed", exc_info=True)
            self._conn = None


class LeaderController(RolloutController):
    """The roll-out controller, stepping only on the replica that holds the leader lock."""

    def __init__(self, hub: Hub, **options: Any) -> None:
        super().__init__(hub, **options)
        self.leadership = Leadership(hub.store.url)

    def tick(self) -> bool:
        """One step of every active roll-out, if this replica leads; else nothing."""
        if not self.leadership.held():
            return False
        return super().tick()

    async def run(self) -> None:
        """Tick until cancelled; the leader lock is given up when it ends."""
        try:
            await super().run()
        finally:
            self.leadership.close()
