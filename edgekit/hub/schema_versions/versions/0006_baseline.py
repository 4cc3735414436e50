"""Schema 6, the baseline: every table of :mod:`edgekit.hub.dbschema` and the event
triggers.

SQLite files reach schema 6 through the migration chain they were made with
(:mod:`edgekit.hub.migrations`, run before Alembic), so on SQLite this revision only
records that they are there. On PostgreSQL it creates the tables from the one schema
description and the triggers that write the event log (in the same transaction as the
change they record, as SQLite's triggers do; :mod:`edgekit.hub.sql_clusters`).

Revision ID: 0006
Revises:
"""

from __future__ import annotations

from alembic import op

from edgekit.hub.dbschema import SCHEMA_6
from edgekit.hub.sql_clusters import EVENT_RETENTION

revision = "0006"
down_revision = None
branch_labels = None
depends_on = None

_HOST_DATA = (
    "jsonb_build_object('state', NEW.state, 'site', NEW.site, 'clusterUid', NEW.cluster_uid,"
    " 'desiredGeneration', NEW.desired::jsonb -> 'generation',"
    " 'action', NEW.desired::jsonb -> 'action',"
    " 'observedGeneration', NEW.status::jsonb -> 'observedGeneration',"
    " 'phase', NEW.status::jsonb -> 'phase')::text"
)
_CLUSTER_DATA = (
    "jsonb_build_object('name', NEW.name, 'generation', NEW.generation,"
    " 'resourceVersion', NEW.resource_version)::text"
)

TRIGGERS = f"""
CREATE FUNCTION edgekit_now() RETURNS double precision LANGUAGE sql VOLATILE AS
$$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

CREATE FUNCTION events_host() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO events (time, kind, type, uid, data) VALUES
            (edgekit_now(), 'host', 'deleted', OLD.uid, jsonb_build_object('site', OLD.site)::text);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NOT (OLD.state IS DISTINCT FROM NEW.state
            OR OLD.site IS DISTINCT FROM NEW.site
            OR OLD.cluster_uid IS DISTINCT FROM NEW.cluster_uid
            OR OLD.desired IS DISTINCT FROM NEW.desired OR OLD.status IS DISTINCT FROM NEW.status)
    THEN
        RETURN NEW;  -- a heartbeat that changed only last_seen: no event
    END IF;
    INSERT INTO events (time, kind, type, uid, data) VALUES (edgekit_now(), 'host',
        CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END, NEW.uid, {_HOST_DATA});
    RETURN NEW;
END $$;
CREATE TRIGGER events_host AFTER INSERT OR UPDATE OR DELETE ON hosts
    FOR EACH ROW EXECUTE FUNCTION events_host();

CREATE FUNCTION events_cluster() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO events (time, kind, type, uid, data) VALUES (edgekit_now(), 'cluster',
            'deleted', OLD.uid,
            jsonb_build_object('name', OLD.name, 'generation', OLD.generation)::text);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NOT (OLD.generation IS DISTINCT FROM NEW.generation
            OR OLD.resource_version IS DISTINCT FROM NEW.resource_version) THEN
        RETURN NEW;
    END IF;
    INSERT INTO events (time, kind, type, uid, data) VALUES (edgekit_now(), 'cluster',
        CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END, NEW.uid, {_CLUSTER_DATA});
    RETURN NEW;
END $$;
CREATE TRIGGER events_cluster AFTER INSERT OR UPDATE OR DELETE ON clusters
    FOR EACH ROW EXECUTE FUNCTION events_cluster();

CREATE FUNCTION events_profile() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (time, kind, type, uid, data) VALUES (edgekit_now(), 'profile',
        'created', NEW.name || '@' || NEW.version,
        jsonb_build_object('name', NEW.name, 'version', NEW.version, 'digest', NEW.digest)::text);
    RETURN NEW;
END $$;
CREATE TRIGGER events_profile AFTER INSERT ON profiles
    FOR EACH ROW EXECUTE FUNCTION events_profile();

CREATE FUNCTION events_rollout() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (time, kind, type, uid, data) VALUES (NEW.time, 'rollout', NEW.type,
        NEW.rollout, (NEW.data::jsonb || jsonb_build_object('rollout', NEW.rollout,
        'wave', NEW.wave, 'cluster', NEW.cluster))::text);
    RETURN NEW;
END $$;
CREATE TRIGGER events_rollout_transition AFTER INSERT ON rollout_transitions
    FOR EACH ROW EXECUTE FUNCTION events_rollout();

CREATE FUNCTION events_prune() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM events WHERE rev <= NEW.rev - {EVENT_RETENTION};
    RETURN NULL;
END $$;
CREATE TRIGGER events_prune AFTER INSERT ON events
    FOR EACH ROW WHEN (mod(NEW.rev, 1000) = 0) EXECUTE FUNCTION events_prune();
"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        return  # made by the SQLite migration chain before Alembic runs
    SCHEMA_6.create_all(bind)
    bind.exec_driver_sql(TRIGGERS)
