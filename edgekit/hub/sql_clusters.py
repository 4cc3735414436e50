"""Schema of the cluster lifecycle: profile versions, cluster generations and the event log.

Kept apart from :mod:`edgekit.hub.store` (which appends :data:`CLUSTERS_MIGRATION` to its
migrations) so that this module imports nothing of the store.

The event log is written by triggers, in the same transaction as the change it records: a
change that commits always has its event, a rolled-back one never does, whatever code path
made it (registration, heartbeat, status, cluster update, airgap import). ``rev`` is an
``AUTOINCREMENT`` key, so a revision is never reused, even after old events are pruned or
the hub restarts. Heartbeats that change nothing but ``last_seen`` write no event, and
``unreachable`` (computed when read, never stored) is not an event either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

__all__ = ["CLUSTERS_MIGRATION", "EVENT_RETENTION", "statements"]

#: How many of the newest events the hub keeps; older ones are pruned every 1,000 events.
EVENT_RETENTION = 100_000

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

_HOST_DATA = (
    "json_object('state', NEW.state, 'site', NEW.site, 'clusterUid', NEW.cluster_uid,"
    " 'desiredGeneration', json_extract(NEW.desired, '$.generation'),"
    " 'action', json_extract(NEW.desired, '$.action'),"
    " 'observedGeneration', json_extract(NEW.status, '$.observedGeneration'),"
    " 'phase', json_extract(NEW.status, '$.phase'))"
)
_CLUSTER_DATA = (
    "json_object('name', NEW.name, 'generation', NEW.generation,"
    " 'resourceVersion', NEW.resource_version)"
)

CLUSTERS_MIGRATION = f"""
ALTER TABLE clusters ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE clusters ADD COLUMN resource_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE clusters ADD COLUMN labels TEXT NOT NULL DEFAULT '{{}}';
ALTER TABLE clusters ADD COLUMN updated REAL;
CREATE INDEX hosts_cluster ON hosts (cluster_uid);
CREATE TABLE profiles (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    content TEXT NOT NULL,
    digest TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE events (
    rev INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    uid TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TRIGGER events_host_created AFTER INSERT ON hosts BEGIN
    INSERT INTO events (time, kind, type, uid, data)
    VALUES ({_NOW}, 'host', 'created', NEW.uid, {_HOST_DATA});
END;
CREATE TRIGGER events_host_updated AFTER UPDATE OF state, site, cluster_uid, desired, status
ON hosts WHEN OLD.state IS NOT NEW.state OR OLD.site IS NOT NEW.site
    OR OLD.cluster_uid IS NOT NEW.cluster_uid OR OLD.desired IS NOT NEW.desired
    OR OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO events (time, kind, type, uid, data)
    VALUES ({_NOW}, 'host', 'updated', NEW.uid, {_HOST_DATA});
END;
CREATE TRIGGER events_host_deleted AFTER DELETE ON hosts BEGIN
    INSERT INTO events (time, kind, type, uid, data)
    VALUES ({_NOW}, 'host', 'deleted', OLD.uid, json_object('site', OLD.site));
END;
CREATE TRIGGER events_cluster_created AFTER INSERT ON clusters BEGIN
    INSERT INTO events (time, kind, type, uid, data)
    VALUES ({_NOW}, 'cluster', 'created', NEW.uid, {_CLUSTER_DATA});
END;
CREATE TRIGGER events_cluster_updated AFTER UPDATE OF generation, resource_version ON clusters
WHEN OLD.generation IS NOT NEW.generation OR OLD.resource_version IS NOT NEW.resource_version
BEGIN
    INSERT INTO events (time, kind, type, uid, data)
    VALUES ({_NOW}, 'cluster', 'updated', NEW.uid, {_CLUSTER_DATA});
END;
CREATE TRIGGER events_cluster_deleted AFTER DELETE ON clusters BEGIN
    INSERT INTO events (time, kind, type, uid, data)
    VALUES ({_NOW}, 'cluster', 'deleted', OLD.uid,
            json_object('name', OLD.name, 'generation', OLD.generation));
END;
CREATE TRIGGER events_profile_published AFTER INSERT ON profiles BEGIN
    INSERT INTO events (time, kind, type, uid, data)
    VALUES ({_NOW}, 'profile', 'created', NEW.name || '@' || NEW.version,
            json_object('name', NEW.name, 'version', NEW.version, 'digest', NEW.digest));
END;
CREATE TRIGGER events_prune AFTER INSERT ON events WHEN NEW.rev % 1000 = 0 BEGIN
    DELETE FROM events WHERE rev <= NEW.rev - {EVENT_RETENTION};
END;
"""


def statements(script: str) -> Iterator[str]:
    """The SQL statements of ``script`` one by one (a trigger's body stays whole, which a
    split on ``;`` would break)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                yield pending.strip()
            pending = ""
    if pending.strip():
        yield pending.strip()
