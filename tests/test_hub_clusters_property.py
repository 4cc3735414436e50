"""Random create/update/scale/delete/report sequences against the hub's invariants.

The real Starlette application over a real SQLite file (in-process ASGI calls), restarted
(store closed and reopened, a new application) at a random point of each sequence:

- a host is in at most one cluster, and its ``cluster_uid`` agrees with the pools;
- a cluster's generation never goes down, and moves only with its resourceVersion;
- a host's observed generation never exceeds its desired one;
- the event log's revisions are 1, 2, 3, ... across the restart: none lost, none reused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hub_asgi import call, post_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from edgekit import model
from edgekit.config import unstructure
from edgekit.hub.client_clusters import cluster_body
from edgekit.hub.routes import create_app
from edgekit.hub.security import new_secret
from edgekit.hub.server import ensure_api_key
from edgekit.hub.store import HubStore

KEY = new_secret("eka_")
ADMIN = {"ApiKey": KEY}
HOSTS = [f"p-{i}" for i in range(6)]
NAMES = ["alpha", "beta", "gamma"]
PROFILES = [
    model.ClusterProfile(
        "retail", v, (model.Pack.os("ubuntu", "22.04"), model.Pack.k8s("k3s", k8s))
    )
    for v, k8s in (("1.0.0", "1.30.4"), ("1.1.0", "1.31.0"))
]

_op = st.one_of(
    st.tuples(
        st.just("create"),
        st.sampled_from(NAMES),
        st.lists(st.sampled_from(HOSTS), min_size=1, max_size=3, unique=True),
    ),
    st.tuples(st.just("update"), st.sampled_from(NAMES), st.integers(0, 1)),
    st.tuples(
        st.just("scale"),
        st.sampled_from(NAMES),
        st.lists(st.sampled_from(HOSTS), max_size=3, unique=True),
    ),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.just(0)),
    st.tuples(st.just("report"), st.sampled_from(HOSTS), st.integers(-1, 2)),
    st.tuples(st.just("restart"), st.just(""), st.just(0)),
)


class World:
    """The hub under test and what the agents hold."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.store = HubStore(path)
        ensure_api_key(self.store, KEY)
        self.app: Starlette = create_app(self.store)
        self.credentials: dict[str, str] = {}
        self.generations: dict[str, int] = {}

    def restart(self) -> None:
        self.store.close()
        self.store = HubStore(self.path)
        self.app = create_app(self.store)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        if body is None:
            return call(self.app, method, path, headers=ADMIN)
        headers = {**ADMIN, "Content-Type": "application/json"}
        return call(self.app, method, path, headers=headers, body=json.dumps(body).encode())

    def setup(self) -> None:
        token = post_json(
            self.app,
            "/v1/edgehosts/tokens",
            {"metadata": {"name": "prop"}, "spec": {"expiry": "2999-01-01T00:00:00Z"}},
            headers=ADMIN,
        ).json()["spec"]["token"]
        for uid in HOSTS:
            answer = post_json(
                self.app,
                "/v1/edgehosts/register",
                {"hostUid": uid},
                headers={"EdgeHostToken": token},
            )
            assert answer.status == 200, answer.body
            self.credentials[uid] = answer.json()["credential"]
        for profile in PROFILES:
            assert self.admin("POST", "/v1/clusterprofiles", unstructure(profile)).status == 201

    def apply(self, op: tuple[str, str, Any]) -> None:
        kind, target, arg = op
        if kind == "restart":
            self.restart()
            return
        if kind == "create":
            cp, workers = arg[:1], arg[1:]
            cluster = model.Cluster(
                name=target,
                profile=PROFILES[0].ref,
                control_plane=model.Pool("cp", tuple(model.PoolHost(u) for u in cp)),
                workers=(model.Pool("w", tuple(model.PoolHost(u) for u in workers)),)
                if workers
                else (),
            )
            answer = self.admin("POST", "/v1/spectroclusters/edge-native", cluster_body(cluster))
            assert answer.status in (201, 400, 409), answer.body
        elif kind == "update":
            ref = PROFILES[arg].ref
            body = {"spec": {"profile": {"name": ref.name, "version": ref.version}}}
            answer = self.admin("PATCH", f"/v1/spectroclusters/{target}", body)
            assert answer.status in (200, 404), answer.body
        elif kind == "scale":
            current = self.admin("GET", f"/v1/spectroclusters/{target}")
            if current.status == 404:
                return
            pools = current.json()["spec"]["machinePoolConfig"]
            cp = next(p for p in pools if p["poolConfig"]["isControlPlane"])
            spec = [cp]
            if arg:
                spec.append(
                    {
                        "cloudConfig": {"edgeHosts": [{"hostUid": u} for u in arg]},
                        "poolConfig": {"name": "w", "size": len(arg)},
                    }
                )
            answer = self.admin(
                "PATCH", f"/v1/spectroclusters/{target}", {"spec": {"machinePoolConfig": spec}}
            )
            assert answer.status in (200, 400), answer.body
        elif kind == "delete":
            answer = self.admin("DELETE", f"/v1/spectroclusters/{target}")
            assert answer.status in (200, 404), answer.body
        elif kind == "report":
            row = self.store._db.execute("SELECT desired FROM hosts WHERE uid = ?", (target,))
            raw = row.fetchone()[0]
            want = json.loads(raw)["generation"] if raw else 0
            report = {"phase": "healthy", "observedGeneration": max(0, want + arg)}
            answer = post_json(
                self.app,
                f"/v1/edgehosts/{target}/status",
                report,
                headers={"Authorization": f"Bearer {self.credentials[target]}"},
            )
            assert answer.status == (400 if arg > 0 else 200), answer.body

    def check(self) -> None:
        db = self.store._db
        owner: dict[str, str] = {}
        for row in db.execute("SELECT uid, spec, generation, resource_version FROM clusters"):
            uid, spec = row[0], json.loads(row[1])
            for pool in spec["machinePoolConfig"]:
                for h in pool["cloudConfig"]["edgeHosts"]:
                    assert h["hostUid"] not in owner, "a host in two clusters"
                    owner[h["hostUid"]] = uid
            assert row[2] >= self.generations.get(uid, 1), "generation went down"
            assert row[2] <= row[3], "generation moved without the resourceVersion"
            self.generations[uid] = row[2]
        for uid, cluster_uid, desired, status in db.execute(
            "SELECT uid, cluster_uid, desired, status FROM hosts"
        ):
            assert owner.get(uid) == cluster_uid, (uid, owner.get(uid), cluster_uid)
            observed = json.loads(status).get("observedGeneration") if status else None
            want = json.loads(desired)["generation"] if desired else 0
            assert observed is None or observed <= want, (uid, observed, want)
        revs = [r[0] for r in db.execute("SELECT rev FROM events ORDER BY rev")]
        assert revs == list(range(1, len(revs) + 1)), "an event revision lost or reused"


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(ops=st.lists(_op, min_size=1, max_size=25))
def test_random_lifecycles_keep_the_invariants(
    hub_db_factory: Callable[[], str], ops: list[tuple[str, str, Any]]
) -> None:
    world = World(hub_db_factory())
    try:
        world.setup()
        world.check()
        for op in ops:
            world.apply(op)
            world.check()
    finally:
        world.store.close()
