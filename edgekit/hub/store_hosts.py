"""The hub's hosts and clusters: registration, credentials, heartbeats and status reports
(the ``hosts`` table), and the clusters hosts are assigned to (``clusters``).

A mixin of :class:`~edgekit.hub.store.HubStore` (which provides the connection and the
re-entrant transaction), kept apart so that the store stays one responsibility a module.
Only SQL lives here; the rules are :mod:`edgekit.hub.domain`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from edgekit.errors import Problem
from edgekit.hub.dialects import DbConnection, NeedsWriter, SqlDialect
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.records import (
    DEFAULT_UNREACHABLE_AFTER,
    ClusterRecord,
    HostFields,
    HostRecord,
    HostSecrets,
    PoolAssignment,
)
from edgekit.hub.security import hash_secret

__all__ = ["HostStore", "cluster_record"]


def _host(row: Any) -> HostRecord:
    return HostRecord(
        uid=row["uid"],
        token_uid=row["token_uid"],
        site=row["site"],
        address=row["address"],
        mac=row["mac"],
        arch=row["arch"],
        tags=json.loads(row["tags"]),
        agent_version=row["agent_version"],
        state=row["state"],
        registered=row["registered"],
        last_seen=row["last_seen"],
        cluster_uid=row["cluster_uid"],
        desired=json.loads(row["desired"]) if row["desired"] else None,
        status=json.loads(row["status"]) if row["status"] else None,
    )


def cluster_record(row: Any) -> ClusterRecord:
    """A ``clusters`` row (``SELECT *``) as its record: the one place a row becomes one."""
    return ClusterRecord(
        uid=row["uid"],
        name=row["name"],
        vip=row["vip"],
        provider_image=row["provider_image"],
        spec=json.loads(row["spec"]),
        created=row["created"],
        generation=row["generation"],
        resource_version=row["resource_version"],
        labels=json.loads(row["labels"]),
        updated=row["updated"],
    )


class HostStore:
    """Hosts and clusters; mixed into :class:`~edgekit.hub.store.HubStore`."""

    _db: DbConnection
    dialect: SqlDialect
    #: True inside the store's read-only snapshot (the store sets it).
    _read_only: bool

    def transaction(self) -> AbstractContextManager[DbConnection]:
        """One write transaction (the store provides it)."""
        raise NotImplementedError  # pragma: no cover

    def unordered(self) -> AbstractContextManager[DbConnection]:
        """One write transaction that records no event (the store provides it)."""
        raise NotImplementedError  # pragma: no cover

    # -- registration and hosts --------------------------------------------------------
    def host_secrets(self, uid: str) -> HostSecrets | None:
        """What proves a registered host's identity (hashes only), or None."""
        row = self._db.execute(
            "SELECT credential_hash, previous_credential_hash, reset_pending, bundle_digest"
            " FROM hosts WHERE uid = ?",
            (uid,),
        ).fetchone()
        if row is None:
            return None
        return HostSecrets(row[0], row[1], bool(row[2]), row[3])

    def credential_in_use(self, credential_hash: str) -> bool:
        """Whether a host's current or previous credential has this hash."""
        row = self._db.execute(
            "SELECT 1 FROM hosts WHERE credential_hash = ? OR previous_credential_hash = ?",
            (credential_hash, credential_hash),
        ).fetchone()
        return row is not None

    def add_host(
        self,
        fields: HostFields,
        *,
        token_uid: str,
        site: str | None,
        credential_hash: str,
        bundle_digest: str | None = None,
        now: float,
    ) -> HostRecord:
        """Insert a newly registered host and count it against its token."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO hosts (uid, token_uid, site, address, mac, arch, tags,"
                " agent_version, credential_hash, state, registered, last_seen, bundle_digest)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'registered', ?, ?, ?)",
                (
                    fields.uid,
                    token_uid,
                    site,
                    fields.address,
                    fields.mac,
                    fields.arch,
                    json.dumps(dict(fields.tags), sort_keys=True),
                    fields.agent_version,
                    credential_hash,
                    now,
                    now,
                    bundle_digest,
                ),
            )
            db.execute("UPDATE tokens SET host_count = host_count + 1 WHERE uid = ?", (token_uid,))
        host = self.get_host(fields.uid)
        assert host is not None
        return host

    def update_registration(
        self,
        fields: HostFields,
        *,
        credential_hash: str,
        previous_credential_hash: str | None,
        bundle_digest: str | None = None,
        now: float,
    ) -> HostRecord:
        """Store a re-registration: new fields and credential; clears an admin reset."""
        with self.transaction() as db:
            db.execute(
                "UPDATE hosts SET address = ?, mac = ?, arch = ?, tags = ?, agent_version = ?,"
                " credential_hash = ?, previous_credential_hash = ?, reset_pending = 0,"
                " bundle_digest = ?, last_seen = ? WHERE uid = ?",
                (
                    fields.address,
                    fields.mac,
                    fields.arch,
                    json.dumps(dict(fields.tags), sort_keys=True),
                    fields.agent_version,
                    credential_hash,
                    previous_credential_hash,
                    bundle_digest,
                    now,
                    fields.uid,
                ),
            )
        host = self.get_host(fields.uid)
        assert host is not None
        return host

    def reset_host(self, uid: str, unusable_hash: str) -> HostRecord | None:
        """Revoke a host's credentials (replaced by ``unusable_hash``, whose secret nobody
        holds) and let its next registration in its site go without proof; None if unknown."""
        with self.transaction() as db:
            db.execute(
                "UPDATE hosts SET credential_hash = ?, previous_credential_hash = NULL,"
                " reset_pending = 1, bundle_digest = NULL WHERE uid = ?",
                (unusable_hash, uid),
            )
        return self.get_host(uid)

    def host_for_credential(self, credential: str) -> HostRecord | None:
        """The host whose current credential this is, or None.

        Using the current credential ends the grace of the previous one (kept after a
        rotation only so that a re-registration whose answer was lost can be retried).
        """
        digest = hash_secret(credential)
        row = self._db.execute(
            "SELECT * FROM hosts WHERE credential_hash = ?", (digest,)
        ).fetchone()
        if row is None:
            return None
        if row["previous_credential_hash"] is not None:
            if self._read_only:
                raise NeedsWriter("the first use of a rotated credential ends the old one's grace")
            with self.transaction() as db:
                db.execute(
                    "UPDATE hosts SET previous_credential_hash = NULL WHERE uid = ?", (row["uid"],)
                )
        return _host(row)

    def get_host(self, uid: str) -> HostRecord | None:
        """The host with this uid, or None."""
        row = self._db.execute("SELECT * FROM hosts WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else _host(row)

    def heartbeat(self, uid: str, *, address: str | None, now: float | None = None) -> HostRecord:
        """Record that a host is alive (and its current address, when it sent one).

        A host's first heartbeat moves it from ``registered`` to ``ready``.
        """
        now = time.time() if now is None else now
        # Nearly every heartbeat changes only last_seen and address, which record no event:
        # no writer lock for those (see HubStore.unordered). The first one changes the state.
        with self.unordered() as db:
            seen = db.execute(
                "UPDATE hosts SET last_seen = ?, address = COALESCE(?, address)"
                " WHERE uid = ? AND state <> 'registered'",
                (now, address, uid),
            ).rowcount
            host = self.get_host(uid) if seen else None
        if host is None:
            with self.transaction() as db:
                db.execute(
                    "UPDATE hosts SET last_seen = ?, address = COALESCE(?, address),"
                    " state = CASE state WHEN 'registered' THEN 'ready' ELSE state END"
                    " WHERE uid = ?",
                    (now, address, uid),
                )
                host = self.get_host(uid)
        if host is None:
            raise HubError(Refusal.NOT_FOUND, "HostNotFound", f"host {uid!r} is not registered")
        return host

    def report_status(
        self, uid: str, status: Mapping[str, Any], *, now: float | None = None
    ) -> HostRecord:
        """Store what a host's agent applied (it counts as a heartbeat too).

        ``failed`` makes the host ``unhealthy``; ``applied`` makes it ``in_use`` when it is
        in a cluster, else ``ready``.
        """
        now = time.time() if now is None else now
        phase = str(status.get("state"))
        with self.transaction() as db:
            db.execute(
                "UPDATE hosts SET status = ?, last_seen = ?, state = CASE"
                " WHEN ? = 'failed' THEN 'unhealthy'"
                " WHEN ? = 'applied' AND cluster_uid IS NOT NULL THEN 'in_use'"
                " WHEN ? = 'applied' THEN 'ready'"
                " ELSE state END WHERE uid = ?",
                (json.dumps(dict(status), sort_keys=True), now, phase, phase, phase, uid),
            )
        host = self.get_host(uid)
        if host is None:
            raise HubError(Refusal.NOT_FOUND, "HostNotFound", f"host {uid!r} is not registered")
        return host

    def delete_host(self, uid: str) -> bool:
        """Delete a host that is not part of a cluster; frees its token's slot."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT token_uid, cluster_uid FROM hosts WHERE uid = ?", (uid,)
            ).fetchone()
            if row is None:
                return False
            if row["cluster_uid"] is not None:
                raise HubError(
                    Refusal.CONFLICT,
                    "HostInCluster",
                    f"host {uid!r} belongs to cluster {row['cluster_uid']!r}; delete the "
                    "cluster first",
                )
            db.execute("DELETE FROM hosts WHERE uid = ?", (uid,))
            db.execute(
                "UPDATE tokens SET host_count ="
                " CASE WHEN host_count > 0 THEN host_count - 1 ELSE 0 END WHERE uid = ?",
                (row["token_uid"],),
            )
        return True

    def search_hosts(
        self,
        *,
        states: Iterable[str] = (),
        sites: Iterable[str] = (),
        tags: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        now: float | None = None,
        unreachable_after: float = DEFAULT_UNREACHABLE_AFTER,
    ) -> tuple[list[HostRecord], int]:
        """Hosts matching every given filter, by uid; returns one page and the total count.

        ``states`` match the effective state (see :meth:`HostRecord.effective_state`).
        """
        now = time.time() if now is None else now
        where: list[str] = []
        args: list[Any] = []
        states, sites = sorted(set(states)), sorted(set(sites))
        if states:
            where.append(
                "(CASE WHEN (? - last_seen) > ? THEN 'unreachable' ELSE state END)"
                f" IN ({','.join('?' * len(states))})"
            )
            args += [now, unreachable_after, *states]
        if sites:
            where.append(f"site IN ({','.join('?' * len(sites))})")
            args += sites
        for key, value in (tags or {}).items():
            where.append(self.dialect.has_pair("hosts.tags"))
            args += [key, value]
        clause = " WHERE " + " AND ".join(where) if where else ""
        total = int(self._db.execute("SELECT count(*) FROM hosts" + clause, args).fetchone()[0])
        page = " ORDER BY uid LIMIT ? OFFSET ?"
        rows = self._db.execute(
            "SELECT * FROM hosts" + clause + page,
            [*args, self.dialect.no_limit if limit is None else limit, offset],
        ).fetchall()
        return [_host(r) for r in rows], total

    def count_hosts(self) -> tuple[int, int]:
        """(rows, distinct uids) in the hosts table: a check that nothing was duplicated."""
        row = self._db.execute("SELECT count(*), count(DISTINCT uid) FROM hosts").fetchone()
        return int(row[0]), int(row[1])

    # -- clusters ----------------------------------------------------------------------
    def create_cluster(
        self,
        name: str,
        *,
        vip: str | None,
        provider_image: str | None,
        pools: Sequence[PoolAssignment],
        spec: Mapping[str, Any],
        profile: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> ClusterRecord:
        """Store a cluster and give each of its hosts its desired state, all or nothing."""
        now = time.time() if now is None else now
        uid = uuid.uuid4().hex
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM clusters WHERE name = ?", (name,)).fetchone():
                raise HubError(
                    Refusal.CONFLICT, "ClusterExists", f"a cluster named {name!r} exists"
                )
            problems: list[Problem] = []
            for p, pool in enumerate(pools):
                for h, host_uid in enumerate(pool.host_uids):
                    path = f"$.spec.machinePoolConfig[{p}].cloudConfig.edgeHosts[{h}].hostUid"
                    row = db.execute(
                        "SELECT cluster_uid FROM hosts WHERE uid = ?", (host_uid,)
                    ).fetchone()
                    if row is None:
                        problems.append(Problem(path, f"host {host_uid!r} is not registered"))
                    elif row["cluster_uid"] is not None:
                        problems.append(
                            Problem(
                                path,
                                f"host {host_uid!r} already belongs to cluster "
                                f"{row['cluster_uid']!r}",
                            )
                        )
            if problems:
                raise HubError(
                    Refusal.INVALID, "InvalidCluster", "the cluster is invalid", problems
                )
            db.execute(
                "INSERT INTO clusters (uid, name, vip, provider_image, spec, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (uid, name, vip, provider_image, json.dumps(dict(spec), sort_keys=True), now),
            )
            for pool in pools:
                for host_uid in pool.host_uids:
                    desired = {
                        "clusterUid": uid,
                        "clusterName": name,
                        "role": "control-plane" if pool.control_plane else "worker",
                        "pool": pool.name,
                        "providerImage": provider_image,
                        "vip": vip,
                        "profile": dict(profile) if profile else None,
                        "generation": 1,
                    }
                    db.execute(
                        "UPDATE hosts SET cluster_uid = ?, desired = ?, state = 'in_use'"
                        " WHERE uid = ?",
                        (uid, json.dumps(desired, sort_keys=True), host_uid),
                    )
        cluster = self.get_cluster(uid)
        assert cluster is not None
        return cluster

    def get_cluster(self, uid: str) -> ClusterRecord | None:
        """The cluster with this uid, or None."""
        row = self._db.execute("SELECT * FROM clusters WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else cluster_record(row)

    def list_clusters(self) -> list[ClusterRecord]:
        """Every cluster, oldest first."""
        rows = self._db.execute("SELECT * FROM clusters ORDER BY created, uid").fetchall()
        return [cluster_record(r) for r in rows]
