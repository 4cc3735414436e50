"""The hub database's schema, as forward-only migrations (``PRAGMA user_version``)."""

from __future__ import annotations

from edgekit.hub.sql_clusters import CLUSTERS_MIGRATION
from edgekit.hub.sql_rollouts import ROLLOUTS_MIGRATION, STAGING_MIGRATION

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

SCHEMA_VERSION = 7

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
    # 2: what re-registration needs to prove identity (see edgekit.hub.domain).
    """
    ALTER TABLE hosts ADD COLUMN previous_credential_hash TEXT;
    ALTER TABLE hosts ADD COLUMN reset_pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN bundle_digest TEXT;
    """,
    # 3: profile versions, cluster generations and the event log (edgekit.hub.sql_clusters).
    CLUSTERS_MIGRATION,
    # 4: tokens bound to a set of sites (edgekit.hub.store_tokens): a host registering with
    # such a token must name one of them. A token without rows here accepts any site.
    """
    CREATE TABLE token_sites (
        token_uid TEXT NOT NULL REFERENCES tokens (uid) ON DELETE CASCADE,
        site TEXT NOT NULL,
        PRIMARY KEY (token_uid, site)
    ) WITHOUT ROWID;
    """,
    # 5: what holds a cluster (a roll-out, issue #12): a held cluster cannot be deleted.
    """
    CREATE TABLE cluster_holders (
        cluster_uid TEXT NOT NULL REFERENCES clusters (uid) ON DELETE CASCADE,
        holder TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        since REAL NOT NULL,
        PRIMARY KEY (cluster_uid, holder)
    ) WITHOUT ROWID;
    """,
    # 6: roll-outs, their clusters per wave and every transition (edgekit.hub.sql_rollouts).
    ROLLOUTS_MIGRATION,
    # 7: desired states a roll-out's maxUnavailable holds back (edgekit.hub.sql_rollouts).
    STAGING_MIGRATION,
)
assert len(MIGRATIONS) == SCHEMA_VERSION
