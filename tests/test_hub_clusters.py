"""The cluster lifecycle against a real hub (uvicorn subprocess on 127.0.0.1, real SQLite):
published profiles, update and scale, resource versions, dry runs, delete and status."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import edgekit as ek
from edgekit import model
from edgekit.hub import HostClient, HubClient, HubRequestError, HubServer
from edgekit.hub.client_clusters import UpdatePlan

OS = model.Pack.os("ubuntu", "22.04", values={"system": {"uri": "registry.local/edge/os:1"}})
K8S = model.Pack.k8s("k3s", "1.30.4")
APP = model.Pack(name="shop", layer=model.Layer.ADDON, version="1.0.0", values={"replicas": 1})
V1 = model.ClusterProfile("retail", "1.0.0", (OS, K8S, APP))
V2 = model.ClusterProfile(  # only an add-on's values: in place
    "retail",
    "1.1.0",
    (OS, K8S, model.Pack("shop", model.Layer.ADDON, "1.0.0", values={"replicas": 2})),
)
V3 = model.ClusterProfile("retail", "2.0.0", (OS, model.Pack.k8s("k3s", "1.31.0"), APP))  # reboot


@pytest.fixture(scope="module")
def hub(hub_db_module: str) -> Iterator[HubServer]:
    with HubServer(hub_db_module) as server:
        yield server


@pytest.fixture(scope="module")
def admin(hub: HubServer) -> HubClient:
    client = hub.client()
    for profile in (V1, V2, V3):
        client.profiles.publish(profile)
    return client


def _hosts(
    hub: HubServer, admin: HubClient, site: str, n: int, arch: str = "amd64"
) -> dict[str, HostClient]:
    token = admin.tokens.create(site, site=site)
    assert token.secret is not None
    agents = {}
    for i in range(n):
        agent = hub.host_client(f"{site}-h{i}")
        agent.register(token.secret, arch=arch, address=f"10.1.0.{i + 10}")
        agent.heartbeat()
        agents[agent.uid] = agent
    return agents


def _cluster(name: str, cp: list[str], workers: list[str] = (), **kw: object) -> model.Cluster:  # type: ignore[assignment]
    pools = (model.Pool("workers", tuple(model.PoolHost(u) for u in workers)),) if workers else ()
    return model.Cluster(
        name=name,
        profile=V1.ref,
        control_plane=model.Pool("cp", tuple(model.PoolHost(u) for u in cp)),
        workers=pools,
        **kw,  # type: ignore[arg-type]
    )


# -- 1. profiles ----------------------------------------------------------------------------
def test_published_versions_are_immutable_and_idempotent(admin: HubClient) -> None:
    again = admin.profiles.publish(V1)
    assert (again.name, again.version) == ("retail", "1.0.0")
    assert again.profile == V1
    changed = model.ClusterProfile("retail", "1.0.0", (OS, model.Pack.k8s("k3s", "1.29.0"), APP))
    with pytest.raises(HubRequestError) as conflict:
        admin.profiles.publish(changed)
    assert conflict.value.status == 409
    assert conflict.value.code == "ProfileVersionExists"
    assert "k3s" in str(conflict.value)
    assert "1.30.4 -> 1.29.0" in str(conflict.value)
    assert admin.profiles.get("retail", "1.0.0").digest == again.digest
    versions = [p.version for p in admin.profiles.list("retail")]
    assert versions == ["1.0.0", "1.1.0", "2.0.0"]
    with pytest.raises(HubRequestError) as missing:
        admin.profiles.get("retail", "9.9.9")
    assert missing.value.status == 404


def test_invalid_profile_names_every_problem(hub: HubServer) -> None:
    r = requests.post(
        hub.url + "/v1/clusterprofiles",
        json={"name": "Bad Name", "version": "one", "packs": []},
        headers={"ApiKey": hub.api_key.reveal()},
        timeout=10,
    )
    assert r.status_code == 400
    paths = {p["path"] for p in r.json()["problems"]}
    assert {"$.name", "$.version", "$.packs"} <= paths


def test_a_cluster_cannot_reference_an_unpublished_version(
    hub: HubServer, admin: HubClient
) -> None:
    agents = _hosts(hub, admin, "unpub", 1)
    cluster = model.Cluster.single_node("unpub", model.ProfileRef("retail", "7.0.0"), "unpub-h0")
    with pytest.raises(HubRequestError) as refused:
        admin.clusters.create(cluster)
    assert [p.path for p in refused.value.problems] == ["$.spec.profile"]
    assert "retail@7.0.0 was never published" in refused.value.problems[0].message
    assert agents["unpub-h0"].desired_state() is None
    created = admin.clusters.create(_cluster("unpub", ["unpub-h0"]))
    with pytest.raises(HubRequestError) as bad_update:
        admin.clusters.update(created.name, profile=model.ProfileRef("retail", "7.0.0"))
    assert [p.path for p in bad_update.value.problems] == ["$.spec.profile"]
    assert admin.clusters.get("unpub").generation == 1


# -- 2. update and scale --------------------------------------------------------------------
def test_update_bumps_generation_with_the_upgrade_kind_per_host(
    hub: HubServer, admin: HubClient
) -> None:
    agents = _hosts(hub, admin, "upd", 3)
    c = admin.clusters.create(_cluster("upd", ["upd-h0"], ["upd-h1", "upd-h2"]))
    assert (c.generation, c.resource_version) == (1, 1)
    joined = agents["upd-h2"].desired_state()
    assert joined is not None
    assert (joined.action, joined.upgrade, joined.values) == ("join", "none", {})
    c = admin.clusters.update("upd", profile=ek.ProfileRef("retail", "1.1.0"))
    assert c.generation == 2
    assert c.plan is not None
    assert {h.upgrade for h in c.plan.hosts} == {"in_place"}
    desired = agents["upd-h1"].desired_state()
    assert desired is not None
    assert (desired.generation, desired.profile) == (2, model.ProfileRef("retail", "1.1.0"))
    assert (desired.action, desired.upgrade) == ("update", "in_place")
    c = admin.clusters.update("upd", profile=V3.ref)
    assert c.plan is not None
    assert {h.upgrade for h in c.plan.hosts} == {"reboot"}
    c = admin.clusters.update("upd", provider_image="registry.local/edge/os:2")
    assert c.plan is not None
    assert {h.upgrade for h in c.plan.hosts} == {"repave"}
    c = admin.clusters.update("upd", values={"shop": {"replicas": 5}})
    assert c.generation == 5
    assert c.plan is not None
    assert {h.upgrade for h in c.plan.hosts} == {"in_place"}
    raw = requests.get(
        f"{hub.url}/v1/edgehosts/upd-h0/desired-state",
        headers={"Authorization": f"Bearer {agents['upd-h0'].credential.reveal()}"},  # type: ignore[union-attr]
        timeout=10,
    ).json()["desired"]
    assert (raw["generation"], raw["upgrade"], raw["values"]) == (
        5,
        "in_place",
        {"shop": {"replicas": 5}},
    )
    # The same change again changes nothing: no new generation.
    same = admin.clusters.update("upd", values={"shop": {"replicas": 5}})
    assert (same.generation, same.resource_version) == (5, c.resource_version)


def test_an_invalid_update_stores_nothing_and_names_every_problem(
    hub: HubServer, admin: HubClient
) -> None:
    _hosts(hub, admin, "bad", 3)
    _hosts(hub, admin, "badarm", 1, arch="arm64")
    before = admin.clusters.create(_cluster("bad", ["bad-h0"], ["bad-h1"]))
    other = admin.clusters.create(_cluster("bad-other", ["bad-h2"]))
    pools = [
        model.Pool("cp", (model.PoolHost("bad-h0"), model.PoolHost("bad-h1"))),  # 2 CPs
        model.Pool("workers", (model.PoolHost("bad-h2"), model.PoolHost("badarm-h0"))),
    ]
    with pytest.raises(HubRequestError) as refused:
        admin.clusters.update(
            "bad",
            pools=pools,
            profile=ek.ProfileRef("retail", "3.0.0"),
            values={"nope": {"a": 1}},
        )
    messages = {p.path: p.message for p in refused.value.problems}
    assert "$.spec.profile" in messages
    assert "1, 3, 5" in messages["$.spec.machinePoolConfig[0].cloudConfig.edgeHosts"]
    # Both model rules that only the hosts can break: in another cluster, and the wrong arch.
    with pytest.raises(HubRequestError) as hosts:
        admin.clusters.update(
            "bad", pools=[pools[0].__class__("cp", (model.PoolHost("bad-h0"),)), pools[1]]
        )
    found = {p.path: p.message for p in hosts.value.problems}
    assert "in_use" in found["$.spec.machinePoolConfig[1].cloudConfig.edgeHosts[0].hostUid"]
    assert "arm64" in found["$.spec.machinePoolConfig[1].cloudConfig.edgeHosts[1].hostUid"]
    after = admin.clusters.get("bad")
    assert (after.generation, after.resource_version, after.spec) == (
        before.generation,
        before.resource_version,
        before.spec,
    )
    assert admin.hosts.get("bad-h2").cluster_uid == other.uid
    assert admin.hosts.get("badarm-h0").cluster_uid is None
    # A control plane of 3 needs a VIP.
    with pytest.raises(HubRequestError) as vip:
        admin.clusters.scale("bad", control_plane=["bad-h0", "bad-h1", "badarm-h0"], workers=[])
    assert any("vip" in p.message.lower() or "required" in p.message for p in vip.value.problems)


def test_scale_out_and_in_joins_and_releases_hosts(hub: HubServer, admin: HubClient) -> None:
    agents = _hosts(hub, admin, "scl", 4)
    admin.clusters.create(_cluster("scl", ["scl-h0"], ["scl-h1"]))
    out = admin.clusters.scale("scl", workers=["scl-h1", "scl-h2", "scl-h3"])
    assert out.plan is not None
    actions = {h.host: (h.action, h.upgrade) for h in out.plan.hosts}
    assert actions == {
        "scl-h0": ("none", "none"),
        "scl-h1": ("none", "none"),
        "scl-h2": ("join", "none"),
        "scl-h3": ("join", "none"),
    }
    joined = agents["scl-h3"].desired_state()
    assert joined is not None
    assert (joined.generation, joined.role, joined.pool) == (
        2,
        "worker",
        "workers",
    )
    unchanged = agents["scl-h1"].desired_state()
    assert unchanged is not None
    assert unchanged.generation == 1
    inward = admin.clusters.scale("scl", workers=["scl-h1"])
    assert inward.plan is not None
    assert {h.host for h in inward.plan.hosts if h.action == "release"} == {"scl-h2", "scl-h3"}
    released = admin.hosts.get("scl-h2")
    assert released.cluster_uid is None
    assert released.state == "in_use"  # until its agent confirms the release
    release = agents["scl-h2"].desired_state()
    assert release is not None
    assert (release.action, release.role, release.generation) == ("release", None, 3)
    raw = _desired(hub, agents["scl-h2"])
    assert raw is not None
    assert raw["action"] == "release"
    assert raw["generation"] == 3
    # The agent confirms: the host is free again and may join another cluster.
    agents["scl-h2"].report_status("applied", generation=3)
    assert admin.hosts.get("scl-h2").state == "ready"
    assert agents["scl-h2"].desired_state() is None
    admin.clusters.create(_cluster("scl-b", ["scl-h2"]))
    # scl-h3 has not confirmed its release: it is not free yet.
    with pytest.raises(HubRequestError, match="in_use"):
        admin.clusters.create(_cluster("scl-c", ["scl-h3"]))
    agents["scl-h3"].report_status("applied", generation=3)
    # Growing the control plane 1 -> 3 needs a VIP (the model's rule, as at creation).
    with pytest.raises(HubRequestError) as no_vip:
        admin.clusters.scale("scl", control_plane=["scl-h0", "scl-h1", "scl-h3"], workers=[])
    assert [p.path for p in no_vip.value.problems] == [
        "$.spec.cloudConfig.controlPlaneEndpoint.host"
    ]
    grown = admin.clusters.scale(
        "scl", control_plane=["scl-h0", "scl-h1", "scl-h3"], workers=[], vip="10.1.0.100"
    )
    assert grown.plan is not None
    got = {h.host: (h.action, h.upgrade) for h in grown.plan.hosts}
    # A new VIP reboots; a worker moving to the control plane is repaved.
    assert got == {
        "scl-h0": ("update", "reboot"),
        "scl-h1": ("update", "repave"),
        "scl-h3": ("join", "none"),
    }
    cp = agents["scl-h1"].desired_state()
    assert cp is not None
    assert (cp.role, cp.vip, cp.generation) == ("control-plane", "10.1.0.100", 4)


def _desired(hub: HubServer, agent: HostClient) -> dict[str, object] | None:
    assert agent.credential is not None
    r = requests.get(
        f"{hub.url}/v1/edgehosts/{agent.uid}/desired-state",
        headers={"Authorization": f"Bearer {agent.credential.reveal()}"},
        timeout=10,
    )
    return r.json()["desired"]  # type: ignore[no-any-return]


# -- 3. optimistic concurrency --------------------------------------------------------------
def test_stale_if_match_is_a_409_naming_the_current_version(
    hub: HubServer, admin: HubClient
) -> None:
    _hosts(hub, admin, "occ", 1)
    c = admin.clusters.create(_cluster("occ", ["occ-h0"]))
    r = requests.get(
        f"{hub.url}/v1/spectroclusters/occ", headers={"ApiKey": hub.api_key.reveal()}, timeout=10
    )
    assert r.headers["ETag"] == f'"{c.resource_version}"'
    fresh = admin.clusters.update(
        "occ", values={"shop": {"replicas": 3}}, if_match=c.resource_version
    )
    with pytest.raises(HubRequestError) as stale:
        admin.clusters.update("occ", values={"shop": {"replicas": 4}}, if_match=c.resource_version)
    assert stale.value.status == 409
    assert stale.value.code == "ResourceVersionConflict"
    assert f"resourceVersion {fresh.resource_version}" in str(stale.value)
    bad = requests.patch(
        f"{hub.url}/v1/spectroclusters/occ",
        json={"spec": {}},
        headers={"ApiKey": hub.api_key.reveal(), "If-Match": "yesterday"},
        timeout=10,
    )
    assert bad.status_code == 400
    assert admin.clusters.get("occ").resource_version == fresh.resource_version


def test_two_racing_updates_never_lose_one_silently(hub: HubServer, admin: HubClient) -> None:
    _hosts(hub, admin, "race", 2)
    base = admin.clusters.create(_cluster("race", ["race-h0"]))
    outcomes: dict[int, object] = {}
    barrier = threading.Barrier(2)

    def update(n: int) -> None:
        client = hub.client()
        barrier.wait()
        try:
            outcomes[n] = client.clusters.update(
                "race", values={"shop": {"replicas": 10 + n}}, if_match=base.resource_version
            )
        except HubRequestError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=update, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [o for o in outcomes.values() if isinstance(o, HubRequestError)]
    won = [o for o in outcomes.values() if not isinstance(o, HubRequestError)]
    assert len(refused) == 1
    assert len(won) == 1
    assert refused[0].status == 409
    final = admin.clusters.get("race")
    assert final.resource_version == base.resource_version + 1
    winner = next(n for n, o in outcomes.items() if o is won[0])
    assert final.spec["values"] == {"shop": {"replicas": 10 + winner}}
    # Scale is read-modify-write: it sends what it read as If-Match, so it is safe too.
    scaled = admin.clusters.scale("race", workers=["race-h1"])
    assert scaled.resource_version == final.resource_version + 1


# -- 4. dry run -----------------------------------------------------------------------------
def test_dry_run_returns_the_plan_and_stores_nothing(hub: HubServer, admin: HubClient) -> None:
    agents = _hosts(hub, admin, "dry", 3)
    admin.clusters.create(_cluster("dry", ["dry-h0"], ["dry-h1"]), labels={"tier": "big"})
    before = admin.clusters.get("dry")
    plan = admin.clusters.update("dry", profile=V3.ref, dry_run=True)
    assert isinstance(plan, UpdatePlan)
    assert plan.dry_run
    assert (plan.generation_from, plan.generation_to) == (1, 2)
    assert [(h.host, h.upgrade) for h in plan.hosts] == [("dry-h0", "reboot"), ("dry-h1", "reboot")]
    assert any("k3s version 1.30.4 -> 1.31.0" in r for r in plan.hosts[0].reasons)
    scale = admin.clusters.scale("dry", workers=["dry-h1", "dry-h2"], dry_run=True)
    assert {h.host: h.action for h in scale.hosts}["dry-h2"] == "join"
    assert admin.clusters.get("dry") == before
    assert agents["dry-h2"].desired_state() is None
    text = str(plan)
    assert "dry run: cluster dry generation 1 -> 2" in text
    assert "dry-h0" in text
    assert "reboot" in text
    html = plan._repr_html_()
    assert html.startswith("<table")
    assert "<td" in html
    assert "dry-h1" in html


# -- 5. delete ------------------------------------------------------------------------------
def test_delete_releases_every_host_and_keeps_an_audit_trail(
    hub: HubServer, admin: HubClient
) -> None:
    agents = _hosts(hub, admin, "del", 2)
    since = admin.events.revision()
    c = admin.clusters.create(_cluster("del", ["del-h0"], ["del-h1"]))
    with pytest.raises(HubRequestError) as stale:
        admin.clusters.delete("del", if_match=c.resource_version + 1)
    assert stale.value.status == 409
    released = admin.clusters.delete("del")
    assert set(released) == {"del-h0", "del-h1"}
    with pytest.raises(HubRequestError) as gone:
        admin.clusters.get("del")
    assert gone.value.status == 404
    for uid, agent in agents.items():
        raw = _desired(hub, agent)
        assert raw is not None, uid
        assert raw["action"] == "release", uid
        assert admin.hosts.get(uid).state == "in_use"
        agent.report_status("applied", generation=int(raw["generation"]))  # type: ignore[call-overload]
        assert admin.hosts.get(uid).state == "ready"
    page = admin.events.list(since, kinds=["cluster"])
    assert [(e.type, e.data["name"]) for e in page.events] == [
        ("created", "del"),
        ("deleted", "del"),
    ]
    # The name is free again, and so are the hosts.
    admin.clusters.create(_cluster("del", ["del-h0"], ["del-h1"]))


# -- 6. list and status ---------------------------------------------------------------------
def test_list_by_selector_and_status_from_agent_reports(hub: HubServer, admin: HubClient) -> None:
    agents = _hosts(hub, admin, "st", 3)
    admin.clusters.create(
        _cluster("st-a", ["st-h0"], ["st-h1"]), labels={"tier": "big", "zone": "st"}
    )
    admin.clusters.create(_cluster("st-b", ["st-h2"]), labels={"tier": "small"})
    big = admin.clusters.list(selector=ek.Selector(tags={"tier": "big", "zone": "st"}))
    assert [c.name for c in big] == ["st-a"]
    assert big.total == 1
    assert "st-a" in big._repr_html_()
    assert "st-a" in str(big)
    assert "st-b" in [c.name for c in admin.clusters.list(selector=ek.Selector(profile="retail"))]
    status = admin.clusters.status("st-a")
    assert (status.condition("Ready").status, status.condition("Updating").status) == (False, True)
    digest = "sha256:" + "a" * 64
    for uid in ("st-h0", "st-h1"):
        agents[uid].report_status("applied", generation=1)
    r = requests.post(
        f"{hub.url}/v1/edgehosts/st-h0/status",
        json={"phase": "healthy", "observedGeneration": 1, "imageDigest": digest, "message": "ok"},
        headers={"Authorization": f"Bearer {agents['st-h0'].credential.reveal()}"},  # type: ignore[union-attr]
        timeout=10,
    )
    assert r.status_code == 200, r.text
    status = admin.clusters.status("st-a")
    assert status.ready
    assert not status.condition("Degraded").status
    h0 = next(h for h in status.hosts if h.host == "st-h0")
    assert (h0.desired_generation, h0.observed_generation, h0.phase, h0.image_digest) == (
        1,
        1,
        "healthy",
        digest,
    )
    admin.clusters.update("st-a", profile=V2.ref)
    status = admin.clusters.status("st-a")
    assert status.condition("Updating").status
    assert not status.ready
    for phase in ("downloading", "applying"):
        _report(hub, agents["st-h0"], {"phase": phase, "observedGeneration": 1})
    _report(
        hub,
        agents["st-h1"],
        {"phase": "rolled-back", "observedGeneration": 1, "message": "boot failed"},
    )
    status = admin.clusters.status("st-a")
    degraded = status.condition("Degraded")
    assert degraded.status
    assert "st-h1" in degraded.message
    assert admin.hosts.get("st-h1").state == "unhealthy"
    # An agent cannot claim a generation it was never given (observed <= desired).
    too_new = _report(
        hub, agents["st-h0"], {"phase": "healthy", "observedGeneration": 9}, expect=400
    )
    assert too_new["problems"][0]["path"] == "$.observedGeneration"
    both_bad = _report(
        hub, agents["st-h0"], {"phase": "sleeping", "imageDigest": "md5:x"}, expect=400
    )
    assert {p["path"] for p in both_bad["problems"]} == {"$.phase", "$.imageDigest"}
    for uid in ("st-h0", "st-h1"):
        _report(hub, agents[uid], {"phase": "healthy", "observedGeneration": 2})
    status = admin.clusters.status("st-a")
    assert status.ready
    assert not status.condition("Updating").status
    assert "Ready=True" in str(status)
    assert "<table" in status._repr_html_()


def _report(hub: HubServer, agent: HostClient, body: dict[str, object], expect: int = 200) -> Any:
    assert agent.credential is not None
    r = requests.post(
        f"{hub.url}/v1/edgehosts/{agent.uid}/status",
        json=body,
        headers={"Authorization": f"Bearer {agent.credential.reveal()}"},
        timeout=10,
    )
    assert r.status_code == expect, r.text
    return r.json()


def test_create_can_publish_its_profile_and_forges_publish_all(
    hub: HubServer, admin: HubClient
) -> None:
    _hosts(hub, admin, "pub", 1)
    mine = model.ClusterProfile("kiosk", "0.1.0", (OS, K8S))
    cluster = model.Cluster.single_node("pub", mine, "pub-h0")
    with pytest.raises(ek.RegistrationError, match=r"kiosk@0\.1\.0"):
        admin.clusters.create(cluster, profile=V1)
    assert admin.clusters.create(cluster, profile=mine).profile == mine.ref
    assert admin.profiles.get("kiosk", "0.1.0").profile == mine
    published = admin.profiles.publish_all(
        [mine, model.ClusterProfile("kiosk", "0.2.0", (OS, K8S))]
    )
    assert [p.version for p in published] == ["0.1.0", "0.2.0"]


def test_a_cluster_with_a_failed_member_can_still_be_changed(
    hub: HubServer, admin: HubClient
) -> None:
    agents = _hosts(hub, admin, "sick", 3)
    admin.clusters.create(_cluster("sick", ["sick-h0"], ["sick-h1", "sick-h2"]))
    agents["sick-h2"].report_status("failed", message="disk full")
    assert admin.hosts.get("sick-h2").state == "unhealthy"
    assert admin.clusters.status("sick").condition("Degraded").status
    updated = admin.clusters.update("sick", values={"shop": {"replicas": 2}})
    assert updated.generation == 2
    out = admin.clusters.scale("sick", workers=["sick-h1"])  # the sick host is removed
    assert out.plan is not None
    assert {h.host: h.action for h in out.plan.hosts}["sick-h2"] == "release"
    assert not admin.clusters.status("sick").condition("Degraded").status


def test_palette_health_reports_mark_a_host_unhealthy_and_back(
    hub: HubServer, admin: HubClient
) -> None:
    agents = _hosts(hub, admin, "hl", 1)
    admin.clusters.create(_cluster("hl", ["hl-h0"]))
    agent = agents["hl-h0"]
    assert agent.credential is not None
    auth = {"Authorization": f"Bearer {agent.credential.reveal()}"}

    def health(body: dict[str, object]) -> requests.Response:
        return requests.patch(
            f"{hub.url}/v1/edgehosts/hl-h0/health", json=body, headers=auth, timeout=10
        )

    sick = health({"state": "unhealthy", "message": "kubelet down", "agentVersion": "0.2.0"})
    assert sick.status_code == 200, sick.text
    assert sick.json()["status"]["state"] == "unhealthy"
    assert sick.json()["status"]["applied"]["health"]["message"] == "kubelet down"
    assert admin.hosts.get("hl-h0").agent_version == "0.2.0"
    assert admin.clusters.status("hl").condition("Degraded").status
    assert health({"state": "healthy"}).json()["status"]["state"] == "in_use"
    bad = health({"state": "fine"})
    assert bad.status_code == 400
    assert [p["path"] for p in bad.json()["problems"]] == ["$.state"]
    other = requests.patch(
        f"{hub.url}/v1/edgehosts/hl-h0/health",
        json={"state": "healthy"},
        headers={"Authorization": "Bearer nope"},
        timeout=10,
    )
    assert other.status_code == 401
