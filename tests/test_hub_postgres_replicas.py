"""Hub replicas sharing one PostgreSQL: any replica serves any request, one runs the
roll-out controller, and killing it mid-roll-out hands the roll-out to another, which
completes it without updating a cluster twice; the event stream is one across replicas."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from pg_replicas import replicas
from pg_replicas import replicas as pg_replicas
from test_rollouts import V1, V2, fleet, rollout

from edgekit import model
from edgekit.hub.migrations import parse_url
from edgekit.hub.results_clusters import Event
from edgekit.testing import PostgresServer

LEADER_LINE = "runs the roll-out controller"


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _transitions(url: str) -> list[tuple[int, str, str | None]]:
    """The roll-out transitions in the database: (id, type, cluster), in order."""
    engine = sa.create_engine(parse_url(url)[1])
    try:
        with engine.connect() as db:
            rows = db.execute(
                sa.text("SELECT id, type, cluster FROM rollout_transitions ORDER BY id")
            )
            return [(int(i), str(t), c) for i, t, c in rows]
    finally:
        engine.dispose()


def test_killing_the_leader_mid_rollout_hands_it_to_another_replica(
    hub_postgres: PostgresServer,
) -> None:
    with replicas(hub_postgres, 2, rollout_interval=0.05) as (url, [a, b]):
        a.start()
        _wait_for(lambda: LEADER_LINE in a.log_tail(50), 30, "replica A to lead")
        b.start()
        via_a, via_b = a.client(), b.client(retry_for=30)
        via_b.profiles.publish(V1)
        via_b.profiles.publish(V2)
        since = via_b.events.revision()
        # Any replica serves any request: a token made on B is listed by A.
        gate = model.HealthGate(soak="1s", timeout="2m", unreachable_after="1m")
        with fleet(b, via_b, "rep", 10) as (sim, names):
            assert {t.name for t in via_a.tokens.list()} >= {"rep"}
            handle = via_b.rollouts.create(rollout("rep", gate=gate))
            _wait_for(lambda: handle.status().wave not in (None, "canary"), 120, "the second wave")
            # The stream read from A so far, then continued from B with since=.
            page = via_a.events.list(since, kinds=["rollout", "cluster"], limit=1000)
            from_a = list(page.events)
            resume = page.revision
            assert LEADER_LINE not in b.log_tail(200)  # one leader: A
            a.kill()
            # Read from the database, not through a hub: the transitions the dead leader
            # committed (it answered status() from them) are all there.
            before = _transitions(url)
            assert any(t[1] == "cluster-updated" for t in before)
            status = handle.wait(timeout=180)
            assert status.state == "completed", status
            assert sim.at_generation(sim.hosts, 2)
            assert LEADER_LINE in b.log_tail(200)  # B took over
        rest: list[Event] = []
        while True:
            page = via_b.events.list(resume, kinds=["rollout", "cluster"], limit=1000)
            if not page.events:
                break
            rest += page.events
            resume = page.revision
        whole: list[Event] = []
        start = since
        while True:
            page = via_b.events.list(start, kinds=["rollout", "cluster"], limit=1000)
            if not page.events:
                break
            whole += page.events
            start = page.revision
        # Reading part from A and the rest from B gives the one stream, nothing missed.
        assert [e.revision for e in from_a + rest] == [e.revision for e in whole]
        updated = sorted(e.data["cluster"] for e in whole if e.type == "cluster-updated")
        assert updated == names  # exactly once each, none skipped
        generations = [
            e.data["generation"] for e in whole if e.kind == "cluster" and e.type == "updated"
        ]
        assert generations == [2] * len(names)
        assert [e.type for e in whole if e.kind == "rollout"].count("completed") == 1
        after = _transitions(url)
        # What A committed stays as it was, B only appended, and no cluster twice.
        assert after[: len(before)] == before
        assert sorted(str(t[2]) for t in after if t[1] == "cluster-updated") == names


@pytest.mark.parametrize("replicas", [2])
def test_replicas_share_registrations_and_events(
    hub_postgres: PostgresServer, replicas: int
) -> None:
    with pg_replicas(hub_postgres, replicas) as (_url, servers):
        for s in servers:
            s.start()
        admins = [s.client() for s in servers]
        token = admins[0].tokens.create("t")
        assert token.secret is not None
        for i, s in enumerate(servers):
            with s.host_client(f"h-{i}") as agent:
                agent.register(token.secret, address=f"10.0.0.{i + 1}")
        for admin in admins:
            assert sorted(h.uid for h in admin.hosts.search()) == [
                f"h-{i}" for i in range(replicas)
            ]
            assert admin.events.revision() == admins[0].events.revision()
