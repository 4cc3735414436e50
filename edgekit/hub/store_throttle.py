"""The failed authentications every hub replica records (table ``auth_failures``, schema 9),
for :class:`edgekit.hub.throttle.AuthThrottle`.

Writes record no event (no trigger watches the table), so they use
:meth:`~edgekit.hub.store.HubStore.unordered`: on PostgreSQL no writer lock, and a flood
of wrong secrets never queues behind, or delays, the hub's ordered writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from edgekit.hub.store import HubStore

__all__ = ["FailureLog", "RemoteFailures"]


@attrs.frozen
class RemoteFailures:
    """The failures of one key that other replicas recorded within the window."""

    count: int
    oldest: float


class FailureLog:
    """Records failures and reads back those of the other replicas."""

    def __init__(self, store: HubStore, origin: str) -> None:
        self.store = store
        #: This replica's mark on its rows: it counts its own failures in memory at once.
        self.origin = origin

    def record(self, keys: Sequence[tuple[str, int]], at: float, window: float) -> None:
        """One failure at ``at`` for each ``(key, limit)``; prunes rows older than
        ``window`` and the oldest rows of each key beyond its limit, so the table holds at
        most (keys failing within a window) x (their limit) rows. May raise
        :class:`~edgekit.hub.dialects.StoreUnavailable`."""
        with self.store.unordered() as db:
            db.execute("DELETE FROM auth_failures WHERE at <= ?", (at - window,))
            for key, limit in keys:
                db.execute(
                    "INSERT INTO auth_failures (key, at, origin) VALUES (?, ?, ?)",
                    (key, at, self.origin),
                )
                db.execute(
                    "DELETE FROM auth_failures WHERE key = ? AND id NOT IN "
                    "(SELECT id FROM auth_failures WHERE key = ? "
                    "ORDER BY at DESC, id DESC LIMIT ?)",
                    (key, key, limit),
                )

    def others(self, since: float, max_keys: int) -> dict[str, RemoteFailures]:
        """The failures other replicas recorded after ``since``, per key: the ``max_keys``
        keys that failed last (one query; bounded memory). May raise
        :class:`~edgekit.hub.dialects.StoreUnavailable`."""
        rows = self.store._db.execute(
            "SELECT key, COUNT(*), MIN(at) FROM auth_failures WHERE at > ? AND origin <> ? "
            "GROUP BY key ORDER BY MAX(at) DESC LIMIT ?",
            (since, self.origin, max_keys),
        ).fetchall()
        return {str(r[0]): RemoteFailures(int(r[1]), float(r[2])) for r in rows}
