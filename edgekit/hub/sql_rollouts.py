"""Schema of roll-outs (migration 6): the roll-out, its clusters per wave, its transitions.

Kept apart from :mod:`edgekit.hub.migrations` as :mod:`edgekit.hub.sql_clusters` is. Every
row of ``rollout_transitions`` becomes an event of kind ``rollout`` on the event stream by a
trigger, in the same transaction as the transition (and the cluster update it records), so
a transition that commits always has its event and a rolled-back one never does.
"""

from __future__ import annotations

__all__ = ["ROLLOUTS_MIGRATION", "STAGING_MIGRATION"]

ROLLOUTS_MIGRATION = """
CREATE TABLE rollouts (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    wave INTEGER NOT NULL DEFAULT 0,
    wave_state TEXT NOT NULL DEFAULT 'pending',
    wave_started REAL,
    soak_started REAL,
    approved INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL
);
CREATE INDEX rollouts_state ON rollouts (state);
CREATE TABLE rollout_clusters (
    rollout TEXT NOT NULL REFERENCES rollouts (name) ON DELETE CASCADE,
    cluster_uid TEXT NOT NULL,
    cluster_name TEXT NOT NULL,
    wave INTEGER NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    from_generation INTEGER,
    to_generation INTEGER,
    from_profile TEXT,
    to_profile TEXT,
    rollback_generation INTEGER,
    started REAL,
    converged REAL,
    finished REAL,
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (rollout, cluster_uid)
) WITHOUT ROWID;
CREATE INDEX rollout_clusters_wave ON rollout_clusters (rollout, wave, position);
CREATE TABLE rollout_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT NOT NULL,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    wave INTEGER,
    cluster TEXT,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX rollout_transitions_rollout ON rollout_transitions (rollout, id);
CREATE TRIGGER events_rollout_transition AFTER INSERT ON rollout_transitions BEGIN
    INSERT INTO events (time, kind, type, uid, data)
    VALUES (NEW.time, 'rollout', NEW.type, NEW.rollout,
            json_set(json(NEW.data), '$.rollout', NEW.rollout, '$.wave', NEW.wave,
                     '$.cluster', NEW.cluster));
END;
"""

#: Migration 7: desired states held back by ``maxUnavailable`` (a roll-out's per-host
#: staging, :mod:`edgekit.hub.staging`). One row per host still to be given its new desired
#: state, in the order it will get it (control plane first); the row and the cluster update
#: that staged it commit together, and a row leaves in the transaction that hands its
#: desired state to the host, so a hub killed mid-cluster neither repeats nor skips a host.
STAGING_MIGRATION = """
CREATE TABLE staged_desired (
    host_uid TEXT PRIMARY KEY REFERENCES hosts (uid) ON DELETE CASCADE,
    cluster_uid TEXT NOT NULL REFERENCES clusters (uid) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    position INTEGER NOT NULL,
    max_unavailable INTEGER NOT NULL,
    desired TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX staged_desired_cluster ON staged_desired (cluster_uid, position);
"""
