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
        most (keys failing within a window) x (their limit) rows, plus for a moment one
        per replica recording at the same time (see below). May raise
        :class:`~edgekit.hub.dialects.StoreUnavailable`."""
        # Replicas record at the same moment for the same keys (a source and a target, in
        # any order) without the writer lock. A plain DELETE locks the rows it deletes one
        # by one and waits for a row another transaction holds: two prunes over
        # overlapping rows, each holding one the other wants, deadlock on PostgreSQL. So a
        # prune locks only rows nobody holds (SKIP LOCKED, the dialect's `skip_locked`) and
        # never waits: no lock wait, no deadlock (an INSERT waits for no row either).
        #
        # Skipping only removes rows from what the plain DELETE would delete, never adds
        # any: no row it would keep is deleted. A skipped row is locked by another
        # replica's prune (the only statement that locks these rows), which is deleting
        # it: it is gone when that one commits. Should that one roll back (its connection
        # lost), the row stays until the next failure of its key or, at the latest, the
        # first failure recorded after the row leaves the window. So skipping
        # under-deletes only while another prune runs, and it cannot accumulate: the
        # table stays bounded. (With or without skipping, a key may hold more rows than its
        # limit for a moment, at most one per concurrent replica: a new row is invisible
        # to the others' prunes until it commits; the key's next failure removes them.)
        # SQLite has one writer at a time and nothing to skip.
        skip = self.store.dialect.skip_locked
        with self.store.unordered() as db:
            db.execute(
                "DELETE FROM auth_failures WHERE id IN "
                f"(SELECT id FROM auth_failures WHERE at <= ?{skip})",
                (at - window,),
            )
            for key, limit in keys:
                db.execute(
                    "INSERT INTO auth_failures (key, at, origin) VALUES (?, ?, ?)",
                    (key, at, self.origin),
                )
                db.execute(
                    "DELETE FROM auth_failures WHERE id IN "
                    "(SELECT id FROM auth_failures WHERE key = ? AND id NOT IN "
                    "(SELECT id FROM auth_failures WHERE key = ? "
                    f"ORDER BY at DESC, id DESC LIMIT ?){skip})",
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
