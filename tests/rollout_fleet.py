"""The set-up the roll-out tests share: the retail profiles, a hub (a real subprocess, or the
domain in process on a real store), a fleet of single-node clusters joined on 1.0.0, and
the readers of what the hub recorded. Imported as ``from rollout_fleet import ...``."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cli_runner
import pytest

from edgekit import model
from edgekit.config import unstructure
from edgekit.hub import HubClient, HubServer
from edgekit.hub.client import cluster_body
from edgekit.hub.client_rollouts import RolloutHandle, RolloutStatus
from edgekit.hub.domain import Hub
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.store import HostFields, HubStore
from edgekit.model.selectors import Selector
from edgekit.simulator import Durations, Faults, FleetSimulator, SimulatedHost


def retail(os_pack: model.Pack) -> tuple[model.ClusterProfile, model.ClusterProfile]:
    """retail 1.0.0 (k3s 1.30.4) and the 2.0.0 a roll-out moves to (k3s 1.31.0)."""
    return (
        model.ClusterProfile("retail", "1.0.0", (os_pack, model.Pack.k8s("k3s", "1.30.4"))),
        model.ClusterProfile("retail", "2.0.0", (os_pack, model.Pack.k8s("k3s", "1.31.0"))),
    )


# Against a hub subprocess the OS pack names its system image, as a published profile does.
OS = model.Pack.os("ubuntu", "22.04", values={"system": {"uri": "registry.local/edge/os:1"}})
V1, V2 = retail(OS)
# In process the tests assert the hosts' desired state to the letter: a bare OS pack.
LOCAL_OS = model.Pack.os("ubuntu", "22.04")
LOCAL_V1, LOCAL_V2 = retail(LOCAL_OS)

FAST = Durations(download=1, apply=1, reboot=1)
QUICK = model.HealthGate(soak="1s", timeout="6s", unreachable_after="30s")


# -- a hub subprocess and a simulated fleet ---------------------------------------------


def hub_fixture(directory: str = "hub", api_key: str | None = None) -> Any:
    """A module-scoped ``hub`` fixture: a hub subprocess on SQLite in a temporary
    ``directory``, its controller ticking every 0.1 s. Assign it: ``hub = hub_fixture()``."""

    @pytest.fixture(scope="module")
    def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
        db = tmp_path_factory.mktemp(directory) / "hub.db"
        kw: dict[str, Any] = {} if api_key is None else {"api_key": api_key}
        with HubServer(db, access_log=False, rollout_interval=0.1, **kw) as server:
            yield server

    return hub


def publish_retail(client: HubClient) -> HubClient:
    """``client`` once it has published V1 and V2."""
    client.profiles.publish(V1)
    client.profiles.publish(V2)
    return client


def admin_fixture() -> Any:
    """A module-scoped ``admin`` fixture: a client of the module's ``hub``, V1 and V2
    published. Assign it: ``admin = admin_fixture()``."""

    @pytest.fixture(scope="module")
    def admin(hub: HubServer) -> HubClient:
        return publish_retail(hub.client())

    return admin


@contextmanager
def fleet(
    hub: HubServer,
    admin: HubClient,
    batch: str,
    sites: int,
    faults: Faults | None = None,
    *,
    seed: int = 3,
    digits: int = 2,
) -> Iterator[tuple[FleetSimulator, list[str]]]:
    """``sites`` single-node clusters ``BATCH-NN`` (one host ``BATCH-hNN`` each, site
    ``BATCH-site-NN``; NN has ``digits`` digits), labelled ``batch=BATCH``, joined at
    generation 1 on V1."""
    token = admin.tokens.create(batch)
    assert token.secret is not None
    hosts = [
        SimulatedHost(f"{batch}-h{i:0{digits}d}", f"{batch}-site-{i:0{digits}d}")
        for i in range(sites)
    ]
    with FleetSimulator(
        hub.url, token.secret, hosts, faults=faults, durations=FAST, time_scale=0.02, seed=seed
    ) as sim:
        sim.wait_registered(timeout=60)
        names = []
        for i, h in enumerate(hosts):
            name = f"{batch}-{i:0{digits}d}"
            admin.clusters.create(
                model.Cluster(name, V1.ref, model.Pool("cp", (model.PoolHost(h.uid),))),
                labels={"batch": batch},
            )
            names.append(name)
        sim.wait(lambda s: s.at_generation(s.hosts, 1), timeout=60, what="every join")
        yield sim, names


def pooled(name: str, profile: model.ProfileRef, uids: Sequence[str]) -> model.Cluster:
    """Cluster ``name`` on ``profile``: the first host its control plane, the others its
    workers."""
    cp, *workers = (model.PoolHost(u) for u in uids)
    return model.Cluster(
        name,
        profile,
        control_plane=model.Pool("cp", (cp,)),
        workers=(model.Pool("workers", tuple(workers)),),
    )


def rollout(batch: str, **kw: object) -> model.Rollout:
    """``BATCH-v2``: the batch to V2 in a canary (``BATCH-00``), ten percent and the rest."""
    base: dict[str, object] = {
        "clusters": Selector(tags={"batch": batch}),
        "waves": (
            model.Wave("canary", clusters=f"{batch}-00"),
            model.Wave("ten-percent", percent=10),
            model.Wave("rest"),
        ),
        "gate": QUICK,
    }
    base.update(kw)
    return model.Rollout(f"{batch}-v2", V2.ref, **base)  # type: ignore[arg-type]


def all_events(admin: HubClient, since: int, kinds: list[str]) -> list[Any]:
    """Every event of ``kinds`` after revision ``since``, page by page."""
    events: list[Any] = []
    while True:
        page = admin.events.list(since, kinds=kinds, limit=1000)
        if not page.events:
            return events
        events += page.events
        since = page.revision


def awaiting(handle: RolloutHandle, wave: str, timeout: float = 60) -> RolloutStatus:
    """Poll until every check of ``wave`` awaits its verdict (``status()`` says running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = handle.status()
        if status.wave == wave and {c.state for c in status.checks} == {"awaiting"}:
            return status
        assert status.state == "running", status
        time.sleep(0.05)
    raise AssertionError(f"wave {wave} never awaited its checks: {handle.status()}")


def edgekit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``edgekit ARGS`` as a subprocess with ``env`` over this one's environment."""
    return cli_runner.edgekit(*args, env=env, timeout=180)


# -- the hub's domain in process, on a real store ---------------------------------------


@contextmanager
def local_hub(db: str | Path) -> Iterator[tuple[Hub, str]]:
    """The hub's domain on the store at ``db`` (closed after), LOCAL_V1 and LOCAL_V2
    published; with the secret of a registration token valid for an hour."""
    store = HubStore(db)
    try:
        hub = Hub(store)
        ops = ClusterOps(hub)
        ops.publish_profile(unstructure(LOCAL_V1))
        ops.publish_profile(unstructure(LOCAL_V2))
        _, secret = hub.create_token("t", expiry=time.time() + 3600)
        yield hub, secret
    finally:
        store.close()


def join(hub: Hub, secret: str, uid: str, address: str) -> None:
    """Register host ``uid`` and have it send its first heartbeat."""
    hub.register(HostFields(uid=uid, address=address), token_secret=secret)
    hub.heartbeat(uid, None)


def add_cluster(hub: Hub, cluster: model.Cluster, image: str | None = None) -> None:
    """Create ``cluster`` (on provider ``image``), labelled ``batch=b``."""
    body = cluster_body(cluster, image)
    ClusterOps(hub).create({**body, "metadata": {**body["metadata"], "labels": {"batch": "b"}}})


@contextmanager
def local_fleet(db: str | Path, clusters: int, image: str | None = None) -> Iterator[Hub]:
    """:func:`local_hub` with single-node clusters ``c-I`` on LOCAL_V1, each on its own host
    ``h-I`` (address 10.0.0.I+1), all labelled ``batch=b``."""
    with local_hub(db) as (hub, secret):
        for i in range(clusters):
            join(hub, secret, f"h-{i}", f"10.0.0.{i + 1}")
            add_cluster(hub, model.Cluster.single_node(f"c-{i}", LOCAL_V1.ref, f"h-{i}"), image)
        yield hub
