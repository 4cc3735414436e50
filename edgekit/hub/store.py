"""The hub's SQLite store: one writer connection, WAL journal, short transactions.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A commit is
appended to the WAL before the call returns, so once the hub has answered a request the
change survives the hub process being killed (SIGKILL, OOM, crash); only a power loss or
kernel crash can drop the last few commits, because NORMAL does not fsync the WAL on every
commit. Pass ``synchronous="FULL"`` for power-loss durability at a lower write rate.

The store is not thread-safe by design: the server calls it from its one event-loop thread,
which makes every transaction (including the ``max_hosts`` check) trivially atomic.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import attrs

from edgekit.errors import EdgekitError, Problem
from edgekit.hub.security import hash_secret, new_secret
from edgekit.model.hosts import HostState

__all__ = [
    "DEFAULT_UNREACHABLE_AFTER",
    "HOST_STATES",
    "SCHEMA_VERSION",
    "ApiError",
    "ClusterRecord",
    "HostRecord",
    "HubStore",
    "PoolAssignment",
    "StoreError",
    "TokenRecord",
]

SCHEMA_VERSION = 1

# Migrations: MIGRATIONS[n] takes a database at user_version n to n + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE tokens (
        uid TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        project TEXT,
        site TEXT,
        secret_hash TEXT NOT NULL UNIQUE,
        expiry REAL NOT NULL,
        max_hosts INTEGER,
        active INTEGER NOT NULL DEFAULT 1,
        host_count INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE hosts (
        uid TEXT PRIMARY KEY,
        token_uid TEXT NOT NULL,
        site TEXT,
        address TEXT,
        mac TEXT,
        arch TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        agent_version TEXT,
        credential_hash TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        registered REAL NOT NULL,
        last_seen REAL NOT NULL,
        cluster_uid TEXT,
        desired TEXT,
        status TEXT
    );
    CREATE INDEX hosts_site ON hosts (site);
    CREATE INDEX hosts_state ON hosts (state);
    CREATE TABLE clusters (
        uid TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        vip TEXT,
        provider_image TEXT,
        spec TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
)
assert len(MIGRATIONS) == SCHEMA_VERSION

#: The host states of :class:`edgekit.model.HostState`. ``unreachable`` is never stored: it
#: is computed from ``last_seen`` when a host is read.
HOST_STATES: tuple[str, ...] = tuple(s.value for s in HostState)
#: Seconds without a heartbeat after which a host counts as unreachable.
DEFAULT_UNREACHABLE_AFTER = 600.0


class StoreError(EdgekitError):
    """The hub's database cannot be opened or is from a newer edgekit."""


class ApiError(Exception):
    """A request the hub refuses; the server turns it into ``{"code", "message", "problems"}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        problems: Sequence[Problem] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = tuple(problems)


@attrs.frozen
class TokenRecord:
    """A registration token as stored (never with its secret)."""

    uid: str
    name: str
    project: str | None
    site: str | None
    expiry: float
    max_hosts: int | None
    active: bool
    host_count: int
    created: float

    def state(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at time ``now``."""
        if not self.active:
            return "revoked"
        return "expired" if self.expiry <= now else "active"


@attrs.frozen
class HostRecord:
    """A registered edge host as stored (never with its credential)."""

    uid: str
    token_uid: str
    site: str | None
    address: str | None
    mac: str | None
    arch: str | None
    tags: Mapping[str, str]
    agent_version: str | None
    state: str
    registered: float
    last_seen: float
    cluster_uid: str | None
    desired: Mapping[str, Any] | None
    status: Mapping[str, Any] | None

    def effective_state(self, now: float, unreachable_after: float) -> str:
        """The stored state, or ``unreachable`` when the host has been silent too long."""
        if now - self.last_seen > unreachable_after:
            return HostState.UNREACHABLE.value
        return self.state


@attrs.frozen
class ClusterRecord:
    """A cluster formed from registered hosts."""

    uid: str
    name: str
    vip: str | None
    provider_image: str | None
    spec: Mapping[str, Any]
    created: float


@attrs.frozen
class PoolAssignment:
    """One machine pool of a new cluster: its hosts and their role."""

    name: str
    control_plane: bool
    host_uids: tuple[str, ...]


def _token(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        uid=row["uid"],
        name=row["name"],
        project=row["project"],
        site=row["site"],
        expiry=row["expiry"],
        max_hosts=row["max_hosts"],
        active=bool(row["active"]),
        host_count=row["host_count"],
        created=row["created"],
    )


def _host(row: sqlite3.Row) -> HostRecord:
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


def _cluster(row: sqlite3.Row) -> ClusterRecord:
    return ClusterRecord(
        uid=row["uid"],
        name=row["name"],
        vip=row["vip"],
        provider_image=row["provider_image"],
        spec=json.loads(row["spec"]),
        created=row["created"],
    )


class HubStore:
    """All hub state in one SQLite file."""

    def __init__(
        self, path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    ) -> None:
        self.path = Path(path)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so each write
        # transaction takes the write lock up front and never deadlocks on upgrade.
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"hub database {self.path}: cannot use WAL mode (got {mode})")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"hub database {self.path} cannot be opened: {exc}") from exc

    # -- plumbing ----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"hub database {self.path} has schema version {version}; this edgekit knows up to "
                f"{SCHEMA_VERSION}: upgrade edgekit",
            )
        for step in range(version, SCHEMA_VERSION):
            with self._write() as db:
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={step + 1}")

    @property
    def schema_version(self) -> int:
        """The database's ``PRAGMA user_version``."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- settings ----------------------------------------------------------------------
    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None."""
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting, replacing any earlier value."""
        with self._write() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- tokens ------------------------------------------------------------------------
    def create_token(
        self,
        name: str,
        *,
        expiry: float,
        project: str | None = None,
        site: str | None = None,
        max_hosts: int | None = None,
        now: float | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token and its secret; only the secret's hash is stored."""
        now = time.time() if now is None else now
        secret = new_secret("ekt_")
        uid = uuid.uuid4().hex
        with self._write() as db:
            db.execute(
                "INSERT INTO tokens (uid, name, project, site, secret_hash, expiry, max_hosts,"
                " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, name, project, site, hash_secret(secret), expiry, max_hosts, now),
            )
        token = self.get_token(uid)
        assert token is not None
        return token, secret

    def get_token(self, uid: str) -> TokenRecord | None:
        """The token with this uid, or None."""
        row = self._db.execute("SELECT * FROM tokens WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else _token(row)

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        rows = self._db.execute("SELECT * FROM tokens ORDER BY created, uid").fetchall()
        return [_token(r) for r in rows]

    def token_hashes(self) -> list[tuple[str, str]]:
        """(uid, sha256 of the secret) of every token, for schemes keyed on the hash."""
        rows = self._db.execute("SELECT uid, secret_hash FROM tokens ORDER BY uid").fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def set_token_active(self, uid: str, active: bool) -> TokenRecord | None:
        """Revoke (``active=False``) or re-enable a token; None if there is no such token."""
        with self._write() as db:
            db.execute("UPDATE tokens SET active = ? WHERE uid = ?", (int(active), uid))
        return self.get_token(uid)

    def set_token_expiry(self, uid: str, expiry: float) -> TokenRecord | None:
        """Move a token's expiry (to now, to expire it at once)."""
        with self._write() as db:
            db.execute("UPDATE tokens SET expiry = ? WHERE uid = ?", (expiry, uid))
        return self.get_token(uid)

    def delete_token(self, uid: str) -> bool:
        """Delete a token; hosts it registered keep their own credentials."""
        with self._write() as db:
            return db.execute("DELETE FROM tokens WHERE uid = ?", (uid,)).rowcount > 0

    # -- registration and hosts --------------------------------------------------------
    def register(
        self,
        token_secret: str | None = None,
        *,
        token_hash: str | None = None,
        host_uid: str,
        address: str | None,
        mac: str | None,
        arch: str | None,
        site: str | None,
        tags: Mapping[str, str],
        agent_version: str | None,
        now: float | None = None,
    ) -> tuple[HostRecord, str]:
        """Register (or re-register) a host with a token; returns it and a new credential.

        Idempotent by host uid: a second registration updates the record and rotates the
        credential. A host stays in the site it first registered in: re-registering with a
        token of another site is refused (409), so a leaked token of one site cannot take
        over hosts of another.

        The token is given as its secret, or as its stored hash (``token_hash``, for
        imports that authenticated the host another way, such as airgap bundles).
        """
        if (token_secret is None) == (token_hash is None):
            raise TypeError("register() needs exactly one of token_secret and token_hash")
        lookup = hash_secret(token_secret) if token_secret is not None else token_hash
        now = time.time() if now is None else now
        credential = new_secret("ekh_")
        with self._write() as db:
            row = db.execute("SELECT * FROM tokens WHERE secret_hash = ?", (lookup,)).fetchone()
            if row is None:
                raise ApiError(401, "InvalidToken", "the registration token is not known")
            token = _token(row)
            state = token.state(now)
            if state == "revoked":
                raise ApiError(403, "TokenRevoked", f"registration token {token.name!r} is revoked")
            if state == "expired":
                raise ApiError(403, "TokenExpired", f"registration token {token.name!r} expired")
            if site is not None and token.site is not None and site != token.site:
                raise ApiError(
                    400,
                    "InvalidRequest",
                    f"host site {site!r} differs from the token's site {token.site!r}",
                    [Problem("$.site", f"must be {token.site!r}, the token's site")],
                )
            effective_site = token.site if token.site is not None else site
            existing = db.execute("SELECT * FROM hosts WHERE uid = ?", (host_uid,)).fetchone()
            if existing is not None:
                if existing["site"] != effective_site:
                    raise ApiError(
                        409,
                        "HostSiteConflict",
                        f"host {host_uid!r} is registered in site {existing['site']!r}; "
                        f"delete it before registering it in site {effective_site!r}",
                    )
                db.execute(
                    "UPDATE hosts SET address = ?, mac = ?, arch = ?, tags = ?,"
                    " agent_version = ?, credential_hash = ?, last_seen = ? WHERE uid = ?",
                    (
                        address,
                        mac,
                        arch,
                        json.dumps(dict(tags), sort_keys=True),
                        agent_version,
                        hash_secret(credential),
                        now,
                        host_uid,
                    ),
                )
            else:
                if token.max_hosts is not None and token.host_count >= token.max_hosts:
                    raise ApiError(
                        403,
                        "TokenExhausted",
                        f"registration token {token.name!r} already registered its "
                        f"{token.max_hosts} host(s)",
                    )
                db.execute(
                    "INSERT INTO hosts (uid, token_uid, site, address, mac, arch, tags,"
                    " agent_version, credential_hash, state, registered, last_seen)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'registered', ?, ?)",
                    (
                        host_uid,
                        token.uid,
                        effective_site,
                        address,
                        mac,
                        arch,
                        json.dumps(dict(tags), sort_keys=True),
                        agent_version,
                        hash_secret(credential),
                        now,
                        now,
                    ),
                )
                db.execute(
                    "UPDATE tokens SET host_count = host_count + 1 WHERE uid = ?", (token.uid,)
                )
            host = _host(db.execute("SELECT * FROM hosts WHERE uid = ?", (host_uid,)).fetchone())
        return host, credential

    def host_for_credential(self, credential: str) -> HostRecord | None:
        """The host whose credential this is, or None."""
        row = self._db.execute(
            "SELECT * FROM hosts WHERE credential_hash = ?", (hash_secret(credential),)
        ).fetchone()
        return None if row is None else _host(row)

    def get_host(self, uid: str) -> HostRecord | None:
        """The host with this uid, or None."""
        row = self._db.execute("SELECT * FROM hosts WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else _host(row)

    def heartbeat(self, uid: str, *, address: str | None, now: float | None = None) -> HostRecord:
        """Record that a host is alive (and its current address, when it sent one).

        A host's first heartbeat moves it from ``registered`` to ``ready``.
        """
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(
                "UPDATE hosts SET last_seen = ?, address = COALESCE(?, address),"
                " state = CASE state WHEN 'registered' THEN 'ready' ELSE state END WHERE uid = ?",
                (now, address, uid),
            )
        host = self.get_host(uid)
        if host is None:
            raise ApiError(404, "HostNotFound", f"host {uid!r} is not registered")
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
        with self._write() as db:
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
            raise ApiError(404, "HostNotFound", f"host {uid!r} is not registered")
        return host

    def delete_host(self, uid: str) -> bool:
        """Delete a host that is not part of a cluster; frees its token's slot."""
        with self._write() as db:
            row = db.execute(
                "SELECT token_uid, cluster_uid FROM hosts WHERE uid = ?", (uid,)
            ).fetchone()
            if row is None:
                return False
            if row["cluster_uid"] is not None:
                raise ApiError(
                    409,
                    "HostInCluster",
                    f"host {uid!r} belongs to cluster {row['cluster_uid']!r}; delete the "
                    "cluster first",
                )
            db.execute("DELETE FROM hosts WHERE uid = ?", (uid,))
            db.execute(
                "UPDATE tokens SET host_count = max(host_count - 1, 0) WHERE uid = ?",
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
            # json_each compares keys as values, so any tag key (quotes, dots) is safe.
            where.append("EXISTS (SELECT 1 FROM json_each(hosts.tags) WHERE key = ? AND value = ?)")
            args += [key, value]
        clause = " WHERE " + " AND ".join(where) if where else ""
        total = int(self._db.execute("SELECT count(*) FROM hosts" + clause, args).fetchone()[0])
        page = " ORDER BY uid LIMIT ? OFFSET ?"
        rows = self._db.execute(
            "SELECT * FROM hosts" + clause + page, [*args, -1 if limit is None else limit, offset]
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
        with self._write() as db:
            if db.execute("SELECT 1 FROM clusters WHERE name = ?", (name,)).fetchone():
                raise ApiError(409, "ClusterExists", f"a cluster named {name!r} exists")
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
                raise ApiError(400, "InvalidCluster", "the cluster is invalid", problems)
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
        return None if row is None else _cluster(row)

    def list_clusters(self) -> list[ClusterRecord]:
        """Every cluster, oldest first."""
        rows = self._db.execute("SELECT * FROM clusters ORDER BY created, uid").fetchall()
        return [_cluster(r) for r in rows]
