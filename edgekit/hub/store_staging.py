"""SQL of staged desired states (migration 7): the hosts of a cluster update that
``maxUnavailable`` holds back. Only SQL lives here; the rules are
:mod:`edgekit.hub.staging`.

Every write joins the caller's transaction (:meth:`HubStore.transaction` is re-entrant), so
a staged row and the cluster update that made it, or a row's removal and the desired state
it hands to its host, commit together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from edgekit.hub.store import HubStore

__all__ = ["StagedRow", "StagedTables"]


@attrs.frozen
class StagedRow:
    """One host still to be given its new desired state."""

    host_uid: str
    cluster_uid: str
    generation: int
    position: int
    max_unavailable: int
    desired: Mapping[str, Any]


class StagedTables:
    """SQL for ``staged_desired``."""

    def __init__(self, store: HubStore) -> None:
        self.store = store
        self._db = store._db  # the store's one connection: same transactions

    def stage(
        self,
        cluster_uid: str,
        generation: int,
        max_unavailable: int,
        hosts: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        """Hold back ``hosts`` ``(uid, desired)``, in the order given."""
        with self.store.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO staged_desired"
                " (host_uid, cluster_uid, generation, position, max_unavailable, desired)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (uid, cluster_uid, generation, i, max_unavailable, json.dumps(dict(d)))
                    for i, (uid, d) in enumerate(hosts)
                ],
            )

    def staged(self, cluster_uid: str, limit: int = -1) -> list[StagedRow]:
        """A cluster's held-back hosts, next first."""
        rows = self._db.execute(
            "SELECT * FROM staged_desired WHERE cluster_uid = ? ORDER BY position LIMIT ?",
            (cluster_uid, limit),
        ).fetchall()
        return [
            StagedRow(
                r["host_uid"],
                r["cluster_uid"],
                r["generation"],
                r["position"],
                r["max_unavailable"],
                json.loads(r["desired"]),
            )
            for r in rows
        ]

    def clear(self, cluster_uid: str) -> list[StagedRow]:
        """Drop a cluster's held-back hosts (a newer update replaces them); the dropped."""
        rows = self.staged(cluster_uid)
        if rows:
            with self.store.transaction() as db:
                db.execute("DELETE FROM staged_desired WHERE cluster_uid = ?", (cluster_uid,))
        return rows

    def take(self, host_uid: str) -> None:
        """The host got its desired state: it is no longer held back."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM staged_desired WHERE host_uid = ?", (host_uid,))

    def in_flight(self, cluster_uid: str, generation: int) -> tuple[int, int]:
        """(hosts given ``generation`` that have not reported it ``healthy``, of those the
        ones that reported ``failed`` or ``rolled-back`` for it), in one query.

        A host given a desired state without an upgrade (``upgrade: none``) takes nothing
        down and is not counted."""
        row = self._db.execute(
            "SELECT"
            " coalesce(sum(NOT (coalesce(json_extract(status, '$.observedGeneration'), 0) >= ?"
            "   AND json_extract(status, '$.phase') = 'healthy')), 0),"
            " coalesce(sum(json_extract(status, '$.phase') IN ('failed', 'rolled-back')"
            "   AND coalesce(json_extract(status, '$.attemptedGeneration'), 0) >= ?), 0)"
            " FROM hosts WHERE cluster_uid = ?"
            " AND json_extract(desired, '$.generation') = ?"
            " AND coalesce(json_extract(desired, '$.upgrade'), 'none') != 'none'",
            (generation, generation, cluster_uid, generation),
        ).fetchone()
        return int(row[0]), int(row[1])

    def staged_clusters(self) -> set[str]:
        """Every cluster with held-back hosts."""
        rows = self._db.execute("SELECT DISTINCT cluster_uid FROM staged_desired").fetchall()
        return {str(r[0]) for r in rows}

    def counts(self, cluster_uids: Sequence[str]) -> dict[str, int]:
        """cluster uid -> hosts held back, for the given clusters (bounded IN lists)."""
        out: dict[str, int] = {}
        for i in range(0, len(cluster_uids), 500):
            chunk = list(cluster_uids[i : i + 500])
            rows = self._db.execute(
                "SELECT cluster_uid, count(*) FROM staged_desired"
                f" WHERE cluster_uid IN ({','.join('?' * len(chunk))}) GROUP BY cluster_uid",
                chunk,
            ).fetchall()
            out.update({str(r[0]): int(r[1]) for r in rows})
        return out
