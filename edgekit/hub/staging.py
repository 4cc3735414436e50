"""Per-host ``maxUnavailable``: a cluster update that gives its new desired state to at most
``max_unavailable`` hosts at a time, control plane first.

A host is *in flight* from the moment it is given a desired state with an upgrade until it
reports that generation ``healthy``. :meth:`Staging.split` (called by the cluster lifecycle's
update, in its transaction) hands out the first ``max_unavailable`` and stores the rest, in
order, in ``staged_desired``; :meth:`Staging.advance` (called by the roll-out controller on
each tick, so a paused roll-out starts nothing new) hands the next ones out as in-flight
hosts report healthy, and none while one reports ``failed`` or ``rolled-back`` for that
generation: a failure stops the cluster. Each hand-out removes the host's staged row in the
same transaction as it writes its desired state, so a hub killed at any point neither gives
a host its desired state twice nor forgets one. What is in flight is read from the hosts'
own desired and reported generations, so nothing of this is kept in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgekit.hub.store_clusters import ClusterTables
from edgekit.hub.store_staging import Progress, StagedRow, StagedTables

__all__ = ["CONTENT_KEYS", "Staging"]

#: What a host runs, in its desired state (the rest says how to get there).
CONTENT_KEYS = ("clusterUid", "role", "pool", "providerImage", "vip", "profile", "values")


class Staging:
    """Staged desired states of cluster updates, over one hub's tables."""

    def __init__(self, tables: ClusterTables) -> None:
        self.tables = tables
        self.staged = StagedTables(tables.store)

    def clear(self, cluster_uid: str) -> list[StagedRow]:
        """Drop what a cluster holds back (its newer update, or the end of its roll-out)."""
        return self.staged.clear(cluster_uid)

    def split(
        self,
        cluster_uid: str,
        generation: int,
        hosts: Sequence[tuple[str, dict[str, Any], tuple[bool, int]]],
        max_unavailable: int | None,
        *,
        dropped: Sequence[StagedRow] = (),
        current: Callable[[str], Mapping[str, Any] | None] = lambda uid: None,
    ) -> None:
        """Give ``hosts`` ``(uid, desired, (is control plane, pool index))`` their desired
        states: all at once without ``max_unavailable``, else the first ``max_unavailable``
        (control plane first, then by pool and uid) now and the others as
        :meth:`advance` lets them.

        ``dropped`` are hosts an earlier staged update never reached (:meth:`clear` returned
        them): one whose current desired state already describes what this update asks
        (a rollback to the version it still runs) is given the new generation at once with
        ``upgrade: none``, since nothing of it goes down."""
        never_reached = {r.host_uid for r in dropped}
        now: list[tuple[str, dict[str, Any]]] = []
        disruptive: list[tuple[tuple[bool, int, str], str, dict[str, Any]]] = []
        for uid, desired, (control, pool) in hosts:
            before = current(uid) if uid in never_reached else None
            if before is not None and all(before.get(k) == desired.get(k) for k in CONTENT_KEYS):
                now.append((uid, {**desired, "action": "update", "upgrade": "none"}))
            elif desired.get("upgrade", "none") == "none":
                now.append((uid, desired))
            else:
                disruptive.append(((not control, pool, uid), uid, desired))
        disruptive.sort(key=lambda d: d[0])
        ordered = [(uid, desired) for _, uid, desired in disruptive]
        if max_unavailable is None:
            now += ordered
            ordered = []
        else:
            now += ordered[:max_unavailable]
            ordered = ordered[max_unavailable:]
        for uid, desired in now:
            self.tables.assign(uid, cluster_uid, desired)
        if ordered:
            assert max_unavailable is not None
            self.staged.stage(cluster_uid, generation, max_unavailable, ordered)

    def progress(self) -> dict[str, Progress]:
        """Every cluster with held-back hosts -> its progress (one query for all)."""
        return self.staged.progress()

    def advance(self, cluster_uid: str, progress: Progress | None = None) -> list[str]:
        """Give the next held-back hosts of a cluster their desired states, as many as the
        in-flight ones leave room for, none while one failed; the uids given. ``progress``:
        the cluster's, as :meth:`progress` just read it (else it is read)."""
        if progress is None:
            progress = self.staged.progress().get(cluster_uid)
        if progress is None or progress.failed:
            return []
        room = progress.max_unavailable - progress.in_flight
        if room <= 0:
            return []
        given = []
        with self.tables.store.transaction():
            for row in self.staged.staged(cluster_uid, room):
                self.tables.assign(row.host_uid, cluster_uid, row.desired)
                self.staged.take(row.host_uid)
                given.append(row.host_uid)
        return given

    def held_back(self, cluster_uid: str) -> int:
        """Hosts of a cluster still held back."""
        return len(self.staged.staged(cluster_uid))
