"""The cluster lifecycle commands (`profile publish`, `cluster ...`, `hosts summary`,
`events`) as subprocesses against a real hub on 127.0.0.1 with a real SQLite database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import edgekit

from edgekit import config, model
from edgekit.hub import HubClient, HubServer

API_KEY = "eka_cli-clusters-admin-key-0123456789abcdef"

OS = model.Pack.os("ubuntu", "22.04", values={"system": {"uri": "registry.local/edge/os:1"}})
K8S = model.Pack.k8s("k3s", "1.30.4")
APP = model.Pack(name="shop", layer=model.Layer.ADDON, version="1.0.0", values={"replicas": 1})
V1 = model.ClusterProfile("retail", "1.0.0", (OS, K8S, APP))
KIOSK = model.ClusterProfile("kiosk", "1.0.0", (OS, K8S))
V2 = model.ClusterProfile(
    "retail",
    "1.1.0",
    (OS, K8S, model.Pack("shop", model.Layer.ADDON, "1.0.0", values={"replicas": 2})),
)


def ok(*args: str, env: dict[str, str]) -> str:
    proc = edgekit(*args, env=env, check=True)
    assert "Traceback" not in proc.stderr
    return proc.stdout


def refused(*args: str, env: dict[str, str], code: int = 1) -> str:
    proc = edgekit(*args, env=env)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with HubServer(tmp_path_factory.mktemp("hub") / "hub.db", api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def env(hub: HubServer) -> dict[str, str]:
    return {"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": API_KEY}


@pytest.fixture(scope="module")
def admin(hub: HubServer) -> HubClient:
    return hub.client()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("files")
    config.dump_file(model.Forge(name="stores", profiles=(V1, KIOSK)), d / "edgeforge.yaml")
    config.dump_file(V1, d / "profile.yaml")
    return d


def _register(hub: HubServer, admin: HubClient, site: str, n: int) -> list[str]:
    token = admin.tokens.create(site, site=site)
    assert token.secret is not None
    uids = []
    for i in range(n):
        with hub.host_client(f"{site}-h{i}") as agent:
            agent.register(token.secret, arch="amd64", address=f"10.2.0.{i + 10}")
            agent.heartbeat()
        uids.append(f"{site}-h{i}")
    return uids


def _cluster_file(d: Path, name: str, cp: list[str], workers: list[str] = ()) -> Path:  # type: ignore[assignment]
    pools = (model.Pool("workers", tuple(model.PoolHost(u) for u in workers)),) if workers else ()
    spec = model.Cluster(
        name=name,
        profile=V1.ref,
        control_plane=model.Pool("cp", tuple(model.PoolHost(u) for u in cp)),
        workers=pools,
    )
    return config.dump_file(spec, d / f"{name}.yaml")


def test_publish_then_create_and_create_with_profiles(
    hub: HubServer, admin: HubClient, env: dict[str, str], files: Path
) -> None:
    [a] = _register(hub, admin, "pub-a", 1)
    [b] = _register(hub, admin, "pub-b", 1)
    spec_a = _cluster_file(files, "pub-a", [a])
    # Before anything is published the hub refuses the cluster, naming the version.
    err = refused("cluster", "create", str(spec_a), env=env)
    assert "retail@1.0.0" in err or "1.0.0" in err

    # The two-step flow: publish the forge's profiles, then create.
    published = json.loads(
        ok("profile", "publish", str(files / "edgeforge.yaml"), "--json", env=env)
    )
    assert [(p["name"], p["version"]) for p in published] == [
        ("retail", "1.0.0"),
        ("kiosk", "1.0.0"),
    ]
    assert all(p["digest"] for p in published)
    text = ok("profile", "publish", str(files / "profile.yaml"), env=env)  # again: a no-op
    assert text.startswith("profile retail@1.0.0 published (")
    assert [p.version for p in admin.profiles.list("retail")] == ["1.0.0"]
    made = json.loads(ok("cluster", "create", str(spec_a), "--json", env=env))
    assert made["name"] == "pub-a"

    # One step: --profiles names the forge file holding the cluster's profile.
    spec_b = _cluster_file(files, "pub-b", [b])
    out = ok("cluster", "create", str(spec_b), "--profiles", str(files / "edgeforge.yaml"), env=env)
    assert out.startswith("cluster pub-b created (")

    # Other content under a published version: the 409 says what differs.
    changed = model.ClusterProfile("retail", "1.0.0", (OS, model.Pack.k8s("k3s", "1.29.0"), APP))
    config.dump_file(changed, files / "changed.yaml")
    err = refused("profile", "publish", str(files / "changed.yaml"), env=env)
    assert "409" in err
    assert "1.30.4 -> 1.29.0" in err
    assert len(err.strip().splitlines()) <= 3
    spec_c = _cluster_file(files, "pub-c", ["nobody"])
    err = refused(
        "cluster", "create", str(spec_c), "--profiles", str(files / "changed.yaml"), env=env
    )
    assert "1.30.4 -> 1.29.0" in err
    assert "pub-c" not in ok("cluster", "list", env=env)
    # A file without that profile, or of another kind, is a configuration error (exit 2).
    config.dump_file(V2, files / "v2.yaml")
    err = refused(
        "cluster", "create", str(spec_c), "--profiles", str(files / "v2.yaml"), env=env, code=2
    )
    assert "--profiles" in err
    assert "retail@1.0.0" in err
    err = refused("profile", "publish", str(spec_c), env=env, code=2)
    assert "not a forge or profile file" in err


def test_list_get_update_scale_status_delete(
    hub: HubServer, admin: HubClient, env: dict[str, str], files: Path
) -> None:
    admin.profiles.publish_all([V1, V2])
    cp, w1, w2 = _register(hub, admin, "life", 3)
    life = _cluster_file(files, "life", [cp], [w1])
    ok("cluster", "create", str(life), "--label", "tier=big", env=env)

    listed = json.loads(ok("cluster", "list", "--tag", "tier=big", "--json", env=env))
    assert listed["total"] == 1
    [row] = listed["items"]
    assert (row["name"], row["profile"], row["generation"]) == ("life", "retail@1.0.0", 1)
    assert ok("cluster", "list", "--tag", "tier=small", "--json", env=env).count('"name"') == 0
    assert json.loads(ok("cluster", "list", "--profile", "nope", "--json", env=env))["total"] == 0
    text = ok("cluster", "list", env=env)
    lines = text.splitlines()
    assert any("life" in line and "retail@1.0.0" in line for line in lines)
    assert all(len(line) < 400 for line in lines)  # one row per line, not wrapped

    got = json.loads(ok("cluster", "get", "life", "--json", env=env))
    rv = got["resourceVersion"]
    text = ok("cluster", "get", "life", env=env)
    assert f"pool cp (control plane): {cp}" in text
    assert f"pool workers (workers): {w1}" in text

    # A dry run prints the plan and stores nothing.
    plan = json.loads(
        ok("cluster", "update", "life", "--profile", "retail@1.1.0", "--dry-run", "--json", env=env)
    )
    assert plan["plan"]["dryRun"] is True
    assert {h["hostUid"]: h["upgrade"] for h in plan["plan"]["hosts"]} == {
        cp: "in_place",
        w1: "in_place",
    }
    assert "cluster" not in plan
    text = ok("cluster", "update", "life", "--profile", "retail@1.1.0", "--dry-run", env=env)
    assert "dry run: nothing was stored" in text
    assert "in_place" in text
    assert cp in text
    assert admin.clusters.get("life").resource_version == rv

    updated = json.loads(
        ok("cluster", "update", "life", "--profile", "retail@1.1.0", "--if-match", str(rv),
           "--json", env=env)
    )  # fmt: skip
    assert updated["cluster"]["profile"] == "retail@1.1.0"
    assert updated["cluster"]["generation"] == 2
    new_rv = updated["cluster"]["resourceVersion"]
    assert new_rv > rv

    # A stale --if-match: 409 naming the current version; nothing stored.
    err = refused(
        "cluster", "update", "life", "--provider-image", "r/x:2", "--if-match", str(rv), env=env
    )
    assert "409" in err
    assert str(new_rv) in err
    assert admin.clusters.get("life").resource_version == new_rv

    values = files / "values.yaml"
    values.write_text("shop:\n  replicas: 5\n")
    text = ok("cluster", "update", "life", "--values", str(values), env=env)
    assert "cluster life updated: generation 3" in text

    # Scale: add a worker (dry run, then for real), with a stale --if-match refused.
    err = refused(
        "cluster", "scale", "life", "--worker", w1, "--worker", w2, "--if-match", str(rv), env=env
    )
    assert "409" in err
    dry = json.loads(
        ok(
            "cluster",
            "scale",
            "life",
            "--worker",
            w1,
            "--worker",
            w2,
            "--dry-run",
            "--json",
            env=env,
        )
    )
    assert w2 in {h["hostUid"] for h in dry["plan"]["hosts"]}
    assert admin.clusters.get("life").generation == 3
    text = ok("cluster", "scale", "life", "--worker", w1, "--worker", w2, env=env)
    assert "cluster life updated: generation 4" in text
    assert sorted(admin.clusters.get("life").pools[1][2]) == sorted([w1, w2])

    status = json.loads(ok("cluster", "status", "life", "--json", env=env))
    assert status["cluster"] == "life"
    assert status["generation"] == 4
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Updating", "Degraded"}
    assert {h["hostUid"] for h in status["hosts"]} == {cp, w1, w2}
    text = ok("cluster", "status", "life", env=env)
    assert "cluster life generation 4" in text
    assert w2 in text

    # Delete: a stale --if-match is refused, then the hosts are released.
    current = admin.clusters.get("life").resource_version
    err = refused("cluster", "delete", "life", "--if-match", str(rv), env=env)
    assert "409" in err
    assert str(current) in err
    gone = json.loads(
        ok("cluster", "delete", "life", "--if-match", str(current), "--json", env=env)
    )
    assert sorted(gone["releasedHosts"]) == sorted([cp, w1, w2])
    assert "life" not in ok("cluster", "list", env=env)


def test_errors_are_one_clear_message(
    hub: HubServer, admin: HubClient, env: dict[str, str], files: Path
) -> None:
    admin.profiles.publish_all([V1, V2])
    [cp] = _register(hub, admin, "bad", 1)
    ok("cluster", "create", str(_cluster_file(files, "bad", [cp])), env=env)

    for args in (("get",), ("status",), ("delete",)):
        err = refused("cluster", *args, "no-such-cluster", env=env)
        assert "no-such-cluster" in err
        assert "404" in err
    doc = json.loads(edgekit("cluster", "get", "no-such-cluster", "--json", env=env).stdout)
    assert doc["ok"] is False
    assert "no-such-cluster" in doc["message"]

    # An invalid update lists every problem at once and stores nothing.
    rv = admin.clusters.get("bad").resource_version
    err = refused(
        "cluster", "update", "bad", "--profile", "retail@9.9.9", "--provider-image", "", env=env
    )
    assert "InvalidCluster" in err
    assert "$.spec.profile: profile retail@9.9.9 was never published" in err
    assert "$.spec.providerImage:" in err
    assert admin.clusters.get("bad").resource_version == rv
    err = refused("cluster", "scale", "bad", "--worker", "ghost-1", "--worker", "ghost-2", env=env)
    assert "ghost-1" in err
    assert "ghost-2" in err
    assert admin.clusters.get("bad").resource_version == rv

    # Usage and configuration errors: exit 2, naming the option.
    assert "--profile" in refused(
        "cluster", "update", "bad", "--profile", "retail", env=env, code=2
    )
    assert "nothing to change" in refused("cluster", "update", "bad", env=env, code=2)
    assert "nothing to change" in refused("cluster", "scale", "bad", env=env, code=2)
    bad_values = files / "bad-values.yaml"
    bad_values.write_text("shop: 3\nos: {a: 1}\ndb: hunter2-secret\n")
    err = refused("cluster", "update", "bad", "--values", str(bad_values), env=env, code=2)
    # Every pack at once, each with its path and line; a value is described, never echoed.
    must_be = "must be a mapping of key to value, not"
    assert f"$.shop: the values of pack 'shop' {must_be} a number (--values {bad_values}:1)" in err
    assert f"$.db: the values of pack 'db' {must_be} a string (--values {bad_values}:3)" in err
    assert "$.os" not in err
    assert "hunter2" not in err
    bad_values.write_text("- shop\n")
    err = refused("cluster", "update", "bad", "--values", str(bad_values), env=env, code=2)
    assert "$: give a mapping of pack name to its values, not a list" in err
    bad_values.write_text("shop: [1,\n")
    err = refused("cluster", "update", "bad", "--values", str(bad_values), env=env, code=2)
    assert "invalid YAML" in err
    assert f"(--values {bad_values}:" in err
    bad_values.write_bytes(b"\xff\xfeshop: {}\n")
    err = refused("cluster", "update", "bad", "--values", str(bad_values), env=env, code=2)
    assert "is not UTF-8 text" in err
    assert "a bug in edgekit" not in err
    assert "--tag" in refused("cluster", "list", "--tag", "oops", env=env, code=2)
    assert "EDGEKIT_HUB_API_KEY" in refused(
        "cluster", "list", env={**env, "EDGEKIT_HUB_API_KEY": ""}, code=2
    )


def test_hosts_summary_and_events(
    hub: HubServer, admin: HubClient, env: dict[str, str], files: Path
) -> None:
    _register(hub, admin, "sum-1", 2)
    _register(hub, admin, "sum-2", 1)
    doc = json.loads(ok("hosts", "summary", "--group-by", "site,state", "--json", env=env))
    assert doc["groupBy"] == ["site", "state"]
    counts = {(i["key"]["site"], i["key"]["state"]): i["count"] for i in doc["items"]}
    assert counts[("sum-1", "ready")] == 2
    assert counts[("sum-2", "ready")] == 1
    assert doc["hosts"] == admin.hosts.summary(["state"]).hosts
    text = ok("hosts", "summary", "--group-by", "site,state", env=env)
    assert any("sum-1" in line and "ready" in line and "2" in line for line in text.splitlines())
    assert "--group-by" in refused("hosts", "summary", "--group-by", ",", env=env, code=2)

    listed = json.loads(ok("events", "--json", env=env))
    assert listed, "registrations and clusters leave events"
    revisions = [e["revision"] for e in listed]
    assert revisions == sorted(revisions)
    assert len(set(revisions)) == len(revisions)
    last = revisions[-1]
    assert json.loads(ok("events", "--since", str(last), "--json", env=env)) == []
    _register(hub, admin, "sum-3", 1)
    text = ok("events", "--since", str(last), env=env)
    assert "sum-3-h0" in text
    assert all(int(line.split()[0]) > last for line in text.splitlines())

    # --follow with --timeout: what happens after --since, one JSON object a line, then exit.
    followed = ok("events", "--since", str(last), "--follow", "--timeout", "2", "--json", env=env)
    lines = [json.loads(line) for line in followed.splitlines()]
    assert lines
    assert all(e["revision"] > last for e in lines)
    assert any(e["uid"] == "sum-3-h0" for e in lines)
    assert "--follow" in refused("events", "--timeout", "1", env=env, code=2)
