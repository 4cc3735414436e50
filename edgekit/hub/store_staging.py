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

__all__ = ["Progress", "StagedRow", "StagedTables"]


@attrs.frozen
class Progress:
    """Where one cluster's staged update is."""

    generation: int
    max_unavailable: int
    held: int  # hosts still held back
    in_flight: int
    failed: int


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
        self._sql = store.dialect

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
                "INSERT INTO staged_desired"
                " (host_uid, cluster_uid, generation, position, max_unavailable, desired)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host_uid) DO UPDATE SET"
                " cluster_uid = excluded.cluster_uid, generation = excluded.generation,"
                " position = excluded.position, max_unavailable = excluded.max_unavailable,"
                " desired = excluded.desired",
                [
                    (uid, cluster_uid, generation, i, max_unavailable, json.dumps(dict(d)))
                    for i, (uid, d) in enumerate(hosts)
                ],
            )

    def staged(self, cluster_uid: str, limit: int = -1) -> list[StagedRow]:
        """A cluster's held-back hosts, next first."""
        rows = self._db.execute(
            "SELECT * FROM staged_desired WHERE cluster_uid = ? ORDER BY position LIMIT ?",
            (cluster_uid, self._sql.no_limit if limit < 0 else limit),
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

    def progress(self) -> dict[str, Progress]:
        """Every cluster with held-back hosts -> where its staged update is, in one query
        (each cluster's hosts through the ``hosts_cluster`` index).

        In flight: hosts given the staged generation with an upgrade that have not reported
        it ``healthy`` (``upgrade: none`` takes nothing down); failed: those of them that
        reported ``failed`` or ``rolled-back`` for it."""
        sql = self._sql
        observed = sql.json_num("h.status", "observedGeneration")
        attempted = sql.json_num("h.status", "attemptedGeneration")
        phase = sql.json_text("h.status", "phase")
        # CASE WHEN c THEN 1 ELSE 0 END sums as SQLite's sum(c) does (NULL counts nothing);
        # PostgreSQL cannot sum booleans. The GROUP BY names every column of s (one row per
        # cluster already), which PostgreSQL needs.
        rows = self._db.execute(
            "SELECT s.cluster_uid, s.generation, s.max_unavailable, s.held,"
            f" coalesce(sum(CASE WHEN NOT (coalesce({observed}, 0) >= s.generation"
            f"   AND {phase} = 'healthy') THEN 1 ELSE 0 END), 0),"
            f" coalesce(sum(CASE WHEN {phase} IN ('failed', 'rolled-back')"
            f"   AND coalesce({attempted}, 0) >= s.generation THEN 1 ELSE 0 END), 0)"
            " FROM (SELECT cluster_uid, max(generation) AS generation,"
            "   min(max_unavailable) AS max_unavailable, count(*) AS held"
            "   FROM staged_desired GROUP BY cluster_uid) s"
            " LEFT JOIN hosts h ON h.cluster_uid = s.cluster_uid"
            f"   AND {sql.json_num('h.desired', 'generation')} = s.generation"
            f"   AND coalesce({sql.json_text('h.desired', 'upgrade')}, 'none') != 'none'"
            " GROUP BY s.cluster_uid, s.generation, s.max_unavailable, s.held"
        ).fetchall()
        return {
            str(r[0]): Progress(int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows
        }
