"""The hub's schema at version 6 as SQLAlchemy Core tables: the baseline both databases
share, frozen (later versions change it with Alembic operations, never by editing this).

PostgreSQL's tables are created from it (the Alembic revision ``0006``); SQLite files keep
the schema their migration chain made (:mod:`edgekit.hub.migrations`). A test reflects both
databases at the newest revision and compares them table by table and column by column, so
they stay one schema. Integers are 64-bit and times double precision on both (SQLite's
INTEGER and REAL are).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Sequence,
    Table,
    Text,
    text,
)

__all__ = ["EVENTS_REV", "SCHEMA_6"]

SCHEMA_6 = MetaData()

#: The sequence of event revisions on PostgreSQL (SQLite: the AUTOINCREMENT of ``events``).
EVENTS_REV = Sequence("events_rev_seq", metadata=SCHEMA_6)


def _text(name: str, *, nullable: bool = True, default: str | None = None) -> Column[str]:
    server_default = None if default is None else text(f"'{default}'")
    return Column(name, Text, nullable=nullable, server_default=server_default)


def _int(name: str, *, nullable: bool = True, default: int | None = None) -> Column[int]:
    server_default = None if default is None else text(str(default))
    return Column(name, BigInteger, nullable=nullable, server_default=server_default)


def _time(name: str, *, nullable: bool = True) -> Column[float]:
    return Column(name, Double, nullable=nullable)


Table("settings", SCHEMA_6, Column("key", Text, primary_key=True), _text("value", nullable=False))

Table(
    "tokens",
    SCHEMA_6,
    Column("uid", Text, primary_key=True),
    _text("name", nullable=False),
    _text("project"),
    _text("site"),
    Column("secret_hash", Text, nullable=False, unique=True),
    _time("expiry", nullable=False),
    _int("max_hosts"),
    _int("active", nullable=False, default=1),
    _int("host_count", nullable=False, default=0),
    _time("created", nullable=False),
)

Table(
    "hosts",
    SCHEMA_6,
    Column("uid", Text, primary_key=True),
    _text("token_uid", nullable=False),
    _text("site"),
    _text("address"),
    _text("mac"),
    _text("arch"),
    _text("tags", nullable=False, default="{}"),
    _text("agent_version"),
    Column("credential_hash", Text, nullable=False, unique=True),
    _text("state", nullable=False),
    _time("registered", nullable=False),
    _time("last_seen", nullable=False),
    _text("cluster_uid"),
    _text("desired"),
    _text("status"),
    _text("previous_credential_hash"),
    _int("reset_pending", nullable=False, default=0),
    _text("bundle_digest"),
    Index("hosts_site", "site"),
    Index("hosts_state", "state"),
    Index("hosts_cluster", "cluster_uid"),
)

Table(
    "clusters",
    SCHEMA_6,
    Column("uid", Text, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    _text("vip"),
    _text("provider_image"),
    _text("spec", nullable=False),
    _time("created", nullable=False),
    _int("generation", nullable=False, default=1),
    _int("resource_version", nullable=False, default=1),
    _text("labels", nullable=False, default="{}"),
    _time("updated"),
)

Table(
    "profiles",
    SCHEMA_6,
    _text("name", nullable=False),
    _text("version", nullable=False),
    _text("content", nullable=False),
    _text("digest", nullable=False),
    _time("created", nullable=False),
    PrimaryKeyConstraint("name", "version"),
)

Table(
    "events",
    SCHEMA_6,
    Column("rev", BigInteger, EVENTS_REV, primary_key=True, server_default=EVENTS_REV.next_value()),
    _time("time", nullable=False),
    _text("kind", nullable=False),
    _text("type", nullable=False),
    _text("uid", nullable=False),
    _text("data", nullable=False),
)

Table(
    "token_sites",
    SCHEMA_6,
    Column("token_uid", Text, ForeignKey("tokens.uid", ondelete="CASCADE"), nullable=False),
    _text("site", nullable=False),
    PrimaryKeyConstraint("token_uid", "site"),
)

Table(
    "cluster_holders",
    SCHEMA_6,
    Column("cluster_uid", Text, ForeignKey("clusters.uid", ondelete="CASCADE"), nullable=False),
    _text("holder", nullable=False),
    _text("reason", nullable=False, default=""),
    _time("since", nullable=False),
    PrimaryKeyConstraint("cluster_uid", "holder"),
)

Table(
    "rollouts",
    SCHEMA_6,
    Column("name", Text, primary_key=True),
    _text("spec", nullable=False),
    _text("state", nullable=False),
    _int("wave", nullable=False, default=0),
    _text("wave_state", nullable=False, default="pending"),
    _time("wave_started"),
    _time("soak_started"),
    _int("approved", nullable=False, default=0),
    _text("message", nullable=False, default=""),
    _time("created", nullable=False),
    _time("updated", nullable=False),
    _time("finished"),
    Index("rollouts_state", "state"),
)

Table(
    "rollout_clusters",
    SCHEMA_6,
    Column("rollout", Text, ForeignKey("rollouts.name", ondelete="CASCADE"), nullable=False),
    _text("cluster_uid", nullable=False),
    _text("cluster_name", nullable=False),
    _int("wave", nullable=False),
    _int("position", nullable=False),
    _text("state", nullable=False, default="pending"),
    _int("from_generation"),
    _int("to_generation"),
    _text("from_profile"),
    _text("to_profile"),
    _int("rollback_generation"),
    _time("started"),
    _time("converged"),
    _time("finished"),
    _text("message", nullable=False, default=""),
    PrimaryKeyConstraint("rollout", "cluster_uid"),
    Index("rollout_clusters_wave", "rollout", "wave", "position"),
)

Table(
    "rollout_transitions",
    SCHEMA_6,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    _text("rollout", nullable=False),
    _time("time", nullable=False),
    _text("type", nullable=False),
    _int("wave"),
    _text("cluster"),
    _text("data", nullable=False, default="{}"),
    Index("rollout_transitions_rollout", "rollout", "id"),
)
