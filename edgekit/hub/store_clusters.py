"""The cluster lifecycle's tables over a :class:`~edgekit.hub.store.HubStore`: profile
versions, cluster generations and resource versions, the event log and fleet summaries.

Only SQL lives here; the rules are :mod:`edgekit.hub.domain_clusters`. Every write joins the
caller's transaction (:meth:`HubStore.transaction` is re-entrant), so a request commits as one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from edgekit.hub.records import ClusterRecord
from edgekit.hub.store import DEFAULT_UNREACHABLE_AFTER, HubStore
from edgekit.hub.store_hosts import cluster_record

__all__ = [
    "GROUP_KEYS",
    "ClusterTables",
    "EventRecord",
    "HolderRecord",
    "ProfileRecord",
    "SummaryRow",
]


@attrs.frozen
class ProfileRecord:
    """One published, immutable profile version."""

    name: str
    version: str
    content: Mapping[str, Any]
    digest: str
    created: float


@attrs.frozen
class HolderRecord:
    """Something that holds a cluster (a roll-out): while it does, the cluster stays."""

    holder: str
    reason: str
    since: float


@attrs.frozen
class EventRecord:
    """One change, with its revision (monotone, never reused)."""

    rev: int
    time: float
    kind: str
    type: str
    uid: str
    data: Mapping[str, Any]


@attrs.frozen
class SummaryRow:
    """One group of a fleet summary: its key values and host count."""

    key: Mapping[str, Any]
    count: int


def _effective_state(now: float, unreachable_after: float) -> tuple[str, list[Any]]:
    return (
        "(CASE WHEN (? - hosts.last_seen) > ? THEN 'unreachable' ELSE hosts.state END)",
        [now, unreachable_after],
    )


#: What a fleet summary can group by; ``tag:KEY`` groups by one host tag.
GROUP_KEYS = ("state", "site", "arch", "cluster", "phase")


class ClusterTables:
    """SQL for profiles, cluster lifecycle columns, events and summaries."""

    def __init__(self, store: HubStore) -> None:
        self.store = store
        self._db = store._db  # the store's one connection: same transactions
        self._sql = store.dialect

    # -- profiles ------------------------------------------------------------------------
    def get_profile(self, name: str, version: str) -> ProfileRecord | None:
        """One published version, or None."""
        row = self._db.execute(
            "SELECT * FROM profiles WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return None if row is None else self._profile(row)

    def list_profiles(self, name: str | None = None) -> list[ProfileRecord]:
        """Published versions, by name then publication order."""
        if name is None:
            rows = self._db.execute("SELECT * FROM profiles ORDER BY name, created").fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM profiles WHERE name = ? ORDER BY created", (name,)
            ).fetchall()
        return [self._profile(r) for r in rows]

    def add_profile(
        self, name: str, version: str, content: Mapping[str, Any], digest: str
    ) -> ProfileRecord:
        """Store a new version (the caller checked it is new)."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO profiles (name, version, content, digest, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, version, json.dumps(content, sort_keys=True), digest, time.time()),
            )
        record = self.get_profile(name, version)
        assert record is not None
        return record

    @staticmethod
    def _profile(row: Any) -> ProfileRecord:
        return ProfileRecord(
            row["name"], row["version"], json.loads(row["content"]), row["digest"], row["created"]
        )

    # -- clusters ------------------------------------------------------------------------
    def find_cluster(self, ident: str) -> ClusterRecord | None:
        """The cluster whose uid, else whose name, is ``ident``."""
        row = self._db.execute("SELECT * FROM clusters WHERE uid = ?", (ident,)).fetchone()
        if row is None:
            row = self._db.execute("SELECT * FROM clusters WHERE name = ?", (ident,)).fetchone()
        return None if row is None else cluster_record(row)

    def list_clusters(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        profile: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[ClusterRecord], int]:
        """Clusters matching every label (and the profile name), by name; a page and the total."""
        where: list[str] = []
        args: list[Any] = []
        for key, value in (labels or {}).items():
            where.append(self._sql.has_pair("clusters.labels"))
            args += [key, value]
        if profile is not None:
            where.append(f"{self._sql.json_text('spec', 'profile', 'name')} = ?")
            args.append(profile)
        clause = " WHERE " + " AND ".join(where) if where else ""
        rows = self._db.execute(
            "SELECT *, count(*) OVER () AS total FROM clusters"
            + clause
            + " ORDER BY name LIMIT ? OFFSET ?",
            [*args, self._sql.no_limit if limit is None else limit, offset],
        ).fetchall()
        total = int(rows[0]["total"]) if rows else self._count(clause, args)
        return [cluster_record(r) for r in rows], total

    def _count(self, clause: str, args: Sequence[Any]) -> int:
        # Only when the page is empty (past the end): the window count came with no row.
        return int(self._db.execute("SELECT count(*) FROM clusters" + clause, args).fetchone()[0])

    def set_labels(self, uid: str, labels: Mapping[str, str]) -> None:
        """Set a cluster's labels (part of its creation: no version bump)."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE clusters SET labels = ? WHERE uid = ?",
                (json.dumps(dict(labels), sort_keys=True), uid),
            )

    def save_cluster(
        self,
        uid: str,
        *,
        spec: Mapping[str, Any],
        vip: str | None,
        provider_image: str | None,
        labels: Mapping[str, str],
        generation: int,
        resource_version: int,
    ) -> None:
        """Store an accepted change of a cluster."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE clusters SET spec = ?, vip = ?, provider_image = ?, labels = ?,"
                " generation = ?, resource_version = ?, updated = ? WHERE uid = ?",
                (
                    json.dumps(dict(spec), sort_keys=True),
                    vip,
                    provider_image,
                    json.dumps(dict(labels), sort_keys=True),
                    generation,
                    resource_version,
                    time.time(),
                    uid,
                ),
            )

    def delete_cluster(self, uid: str) -> None:
        """Remove a cluster's row (its hosts were released first)."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM clusters WHERE uid = ?", (uid,))

    def add_holder(self, cluster_uid: str, holder: str, reason: str, now: float) -> None:
        """Record that ``holder`` holds the cluster (again: its reason is replaced)."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO cluster_holders (cluster_uid, holder, reason, since)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (cluster_uid, holder)"
                " DO UPDATE SET reason = excluded.reason",
                (cluster_uid, holder, reason, now),
            )

    def remove_holder(self, cluster_uid: str, holder: str) -> bool:
        """``holder`` no longer holds the cluster; False if it did not."""
        with self.store.transaction() as db:
            cursor = db.execute(
                "DELETE FROM cluster_holders WHERE cluster_uid = ? AND holder = ?",
                (cluster_uid, holder),
            )
            return bool(cursor.rowcount > 0)

    def holders(self, cluster_uid: str) -> list[HolderRecord]:
        """What holds the cluster, oldest first."""
        rows = self._db.execute(
            "SELECT holder, reason, since FROM cluster_holders WHERE cluster_uid = ?"
            " ORDER BY since, holder",
            (cluster_uid,),
        ).fetchall()
        return [HolderRecord(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    def member_uids(self, cluster_uid: str) -> list[str]:
        """The hosts that belong to a cluster, by uid."""
        rows = self._db.execute(
            "SELECT uid FROM hosts WHERE cluster_uid = ? ORDER BY uid", (cluster_uid,)
        ).fetchall()
        return [str(r[0]) for r in rows]

    def releasing_uids(self, cluster_uid: str) -> list[str]:
        """Hosts released from a cluster whose agent has not confirmed yet."""
        action = self._sql.json_text("desired", "action")
        cluster = self._sql.json_text("desired", "clusterUid")
        rows = self._db.execute(
            f"SELECT uid FROM hosts WHERE cluster_uid IS NULL AND {action} = 'release'"
            f" AND {cluster} = ? ORDER BY uid",
            (cluster_uid,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def assign(self, host_uid: str, cluster_uid: str | None, desired: Mapping[str, Any]) -> None:
        """Give a host its desired state (and cluster: None releases it; it stays ``in_use``
        until its agent confirms, so that nothing else claims it meanwhile)."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE hosts SET cluster_uid = ?, desired = ?, state = 'in_use' WHERE uid = ?",
                (cluster_uid, json.dumps(dict(desired), sort_keys=True), host_uid),
            )

    def record_status(
        self, host_uid: str, status: Mapping[str, Any], state: str, desired: Any, now: float
    ) -> None:
        """Store an agent's report, the host state it implies and its desired state (None
        clears it: a release the agent confirmed)."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE hosts SET status = ?, state = ?, desired = ?, last_seen = ? WHERE uid = ?",
                (
                    json.dumps(dict(status), sort_keys=True),
                    state,
                    None if desired is None else json.dumps(desired, sort_keys=True),
                    now,
                    host_uid,
                ),
            )

    def record_health(
        self, host_uid: str, health: Mapping[str, Any], state: str, agent_version: str | None
    ) -> None:
        """Store a host's health report (under ``status.health``) and the state it implies;
        it counts as a heartbeat."""
        with self.store.transaction() as db:
            db.execute(
                f"UPDATE hosts SET status = {self._sql.set_json_key('status', 'health')},"
                " state = ?, agent_version = COALESCE(?, agent_version), last_seen = ?"
                " WHERE uid = ?",
                (json.dumps(dict(health)), state, agent_version, time.time(), host_uid),
            )

    # -- events --------------------------------------------------------------------------
    def events_since(
        self, since: int, *, limit: int, kinds: Sequence[str] = ()
    ) -> list[EventRecord]:
        """Events after revision ``since``, oldest first."""
        where = "rev > ?"
        args: list[Any] = [since]
        if kinds:
            where += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        rows = self._db.execute(
            f"SELECT * FROM events WHERE {where} ORDER BY rev LIMIT ?", [*args, limit]
        ).fetchall()
        return [
            EventRecord(r["rev"], r["time"], r["kind"], r["type"], r["uid"], json.loads(r["data"]))
            for r in rows
        ]

    def revisions(self) -> tuple[int, int]:
        """(oldest kept, newest) revisions, as the open transaction sees them.

        The newest is that of the newest event this transaction sees (0 before the first):
        pruning always keeps the newest events, so it survives pruning and restarts. It is
        never read from the revision counter, which on PostgreSQL is a sequence, outside any
        snapshot: a revision handed to an event not committed yet would count there, and a
        client resuming from it would skip that event. In a
        :meth:`~edgekit.hub.store.HubStore.snapshot` a client resuming from it never skips
        an event committed after the snapshot began."""
        low, high = self._db.execute("SELECT min(rev), max(rev) FROM events").fetchone()
        if high is None:
            return 1, 0
        return int(low), int(high)

    # -- fleet summary -------------------------------------------------------------------
    def summary(
        self,
        group_by: Sequence[str],
        *,
        limit: int | None = None,
        offset: int = 0,
        now: float | None = None,
        unreachable_after: float = DEFAULT_UNREACHABLE_AFTER,
    ) -> tuple[list[SummaryRow], int, int]:
        """Host counts per group, in one query: the page of groups, the number of groups and
        the number of hosts (window functions carry both totals on every row)."""
        now = time.time() if now is None else now
        exprs: list[str] = []
        args: list[Any] = []
        for key in group_by:
            if key == "state":
                sql, more = _effective_state(now, unreachable_after)
                exprs.append(sql)
                args += more
            elif key == "site":
                exprs.append("hosts.site")
            elif key == "arch":
                exprs.append("hosts.arch")
            elif key == "cluster":
                exprs.append("clusters.name")
            elif key == "phase":
                exprs.append(self._sql.json_text("hosts.status", "phase"))
            else:  # tag:KEY, checked by the caller
                exprs.append(self._sql.json_key("hosts.tags"))
                args.append(self._sql.json_key_arg(key[4:]))
        cols = ", ".join(f"{e} AS g{i}" for i, e in enumerate(exprs))
        group = ", ".join(f"g{i}" for i in range(len(exprs)))
        select = (
            f"SELECT {cols + ', ' if cols else ''}count(*) AS n,"
            " count(*) OVER () AS groups, sum(count(*)) OVER () AS hosts"
            " FROM hosts LEFT JOIN clusters ON clusters.uid = hosts.cluster_uid"
        )
        if group:
            select += f" GROUP BY {group} ORDER BY {group}"
        select += " LIMIT ? OFFSET ?"
        no_limit = self._sql.no_limit
        rows = self._db.execute(
            select, [*args, no_limit if limit is None else limit, offset]
        ).fetchall()
        out = [
            SummaryRow({k: r[f"g{i}"] for i, k in enumerate(group_by)}, int(r["n"])) for r in rows
        ]
        if rows:
            return out, int(rows[0]["groups"]), int(rows[0]["hosts"] or 0)
        return out, 0, 0
