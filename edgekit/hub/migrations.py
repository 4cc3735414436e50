"""The hub database's schema: forward-only Alembic revisions (``schema_versions/``) on both
databases, after the SQLite chain every file up to schema 6 was made with.

- SQLite: :data:`MIGRATIONS` takes a file from ``PRAGMA user_version`` n to n + 1, up to
  :data:`LEGACY_VERSION` (the chain is frozen: files made by any earlier edgekit open and
  upgrade); Alembic's revision ``0006`` then only records the file is at 6, and later
  revisions run on it as on PostgreSQL. ``user_version`` follows the revision, so an older
  edgekit still refuses a newer file.
- PostgreSQL: revision ``0006`` creates the schema-6 tables (:mod:`edgekit.hub.dbschema`)
  and the event triggers; later revisions as above.

A new schema version is one Alembic revision file ``schema_versions/versions/00NN_*.py``
(``revision = "00NN"``, ``down_revision`` the previous one) using ``op.*`` operations that
both databases run, plus :data:`SCHEMA_VERSION` raised to NN.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgekit.hub.sql_clusters import CLUSTERS_MIGRATION
from edgekit.hub.sql_rollouts import ROLLOUTS_MIGRATION

__all__ = [
    "LEGACY_VERSION",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "current_revision",
    "open_postgres",
    "parse_url",
    "redact",
    "upgrade",
]

#: The newest schema version (the newest Alembic revision, as a number).
SCHEMA_VERSION = 9
#: SQLite files reach this version through :data:`MIGRATIONS`, then Alembic takes over.
LEGACY_VERSION = 6

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
    # 7 and later: Alembic revisions (schema_versions/versions/), on both databases.
)
assert len(MIGRATIONS) == LEGACY_VERSION

_VERSIONS = Path(__file__).with_name("schema_versions")
_COLLAPSED = re.compile(r"(?i)^(sqlite|postgres|postgresql|postgresql\+psycopg):/(?!/)")


def parse_url(url: str | os.PathLike[str]) -> tuple[str, str]:
    """``("sqlite", path)`` or ``("postgresql", SQLAlchemy URL)`` for a store URL: a plain
    path or ``sqlite:///PATH`` is SQLite; ``postgresql://`` (or ``postgres://``,
    ``postgresql+psycopg://``) is PostgreSQL through psycopg 3."""
    text = os.fspath(url)
    scheme, sep, rest = text.partition("://")
    if not sep and _COLLAPSED.match(text):
        from edgekit.hub.store import StoreError

        # pathlib.Path("postgresql://h/db") is "postgresql:/h/db": never a file to create.
        raise StoreError(
            f"hub database {text.split(':', 1)[0]}:/...: looks like a URL whose '//' was "
            "lost (pass the URL as a string, not a path)"
        )
    if not sep or "/" in scheme or "\\" in scheme:
        return "sqlite", text
    scheme = scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them
        return "sqlite", rest[1:] if rest.startswith("/") else rest
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql", "postgresql+psycopg://" + rest
    from edgekit.hub.store import StoreError

    raise StoreError(
        f"hub database URL {redact(text)!r}: unknown scheme {scheme!r} "
        "(use sqlite:///PATH, a file path, or postgresql://...)"
    )


def redact(url: str) -> str:
    """A URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}"))


def open_postgres(url: str) -> Any:
    """The store's :class:`~edgekit.hub.dialects.PgConnection` for a PostgreSQL URL."""
    from edgekit.hub.store import StoreError

    try:
        import psycopg  # noqa: F401
        from sqlalchemy import create_engine
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"a PostgreSQL hub database needs psycopg ({exc.name} is not installed): "
            "pip install 'edgekit[postgresql]'"
        ) from None
    from sqlalchemy.pool import NullPool

    from edgekit.hub.dialects import PgConnection

    # NullPool: the store holds its one connection itself (and replaces it when lost).
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    return PgConnection(engine)


def current_revision(db: Any, dialect: Any) -> str | None:
    """The database's Alembic revision, or None before Alembic ran on it."""
    if dialect.name == "sqlite":
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchone()
    else:
        exists = db.execute("SELECT to_regclass('alembic_version')").fetchone()[0]
    if not exists:
        return None
    row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


@functools.cache
def _config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_VERSIONS))
    return config


def upgrade(url: str, *, stamp: str | None = None) -> None:
    """Run every Alembic revision the database at ``url`` lacks (in one transaction);
    ``stamp``: first record that the database is at that revision (an SQLite file an
    earlier edgekit migrated without Alembic, whose ``user_version`` says where it is)."""
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            config = _config()
            config.attributes["connection"] = connection
            if stamp is not None:
                command.stamp(config, stamp)
            command.upgrade(config, "head")
            connection.commit()
    finally:
        engine.dispose()
