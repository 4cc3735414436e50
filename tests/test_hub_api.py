"""The hub over HTTP: a real uvicorn subprocess on 127.0.0.1, driven by clients and raw requests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from edgekit import model
from edgekit.errors import RegistrationError
from edgekit.hub import (
    HostClient,
    HubClient,
    HubRequestError,
    HubServer,
    Secret,
    TlsFiles,
    cluster_body,
)


@pytest.fixture(scope="module")
def hub(hub_db_module: str) -> Iterator[HubServer]:
    db = hub_db_module
    with HubServer(db, max_body=16 * 1024) as server:
        yield server


@pytest.fixture
def admin(hub: HubServer) -> HubClient:
    return hub.client()


def _post(hub: HubServer, path: str, **kw: object) -> requests.Response:
    return requests.post(hub.url + path, timeout=10, **kw)  # type: ignore[arg-type]


def test_token_lifecycle_secret_shown_once(hub: HubServer, admin: HubClient) -> None:
    token = admin.tokens.create("store-1", site="store-1", expires_in="30d", max_hosts=5)
    assert isinstance(token.secret, Secret)
    assert "ekt_" not in repr(token)
    assert token.state == "active"
    assert token.max_hosts == 5
    listed = {t.uid: t for t in admin.tokens.list()}
    assert listed[token.uid].secret is None
    assert admin.tokens.get(token.uid).secret is None
    raw = requests.get(
        f"{hub.url}/v1/edgehosts/tokens/{token.uid}", headers={"ApiKey": hub.api_key.reveal()}
    )
    assert token.secret is not None
    assert token.secret.reveal() not in raw.text
    assert admin.tokens.revoke(token).state == "revoked"
    assert admin.tokens.activate(token).state == "active"
    assert admin.tokens.expire(token).state == "expired"
    admin.tokens.delete(token)
    with pytest.raises(HubRequestError) as gone:
        admin.tokens.get(token.uid)
    assert gone.value.status == 404


def test_admin_calls_need_the_api_key(hub: HubServer) -> None:
    none = requests.get(hub.url + "/v1/edgehosts/tokens", timeout=10)
    wrong = requests.get(hub.url + "/v1/edgehosts/tokens", headers={"ApiKey": "x"}, timeout=10)
    for response in (none, wrong):
        assert response.status_code == 401
        assert response.json()["code"] == "Unauthorized"
    with pytest.raises(HubRequestError, match="401"):
        HubClient(hub.url, api_key="wrong").tokens.list()


def test_register_heartbeat_and_own_record_only(hub: HubServer, admin: HubClient) -> None:
    token = admin.tokens.create("site-a", site="site-a")
    assert token.secret is not None
    a, b = hub.host_client("host-a1"), hub.host_client("host-b1")
    reg = a.register(token.secret, address="10.0.0.5", mac="52:54:00:12:34:56", arch="amd64",
                     tags={"city": "chicago"}, agent_version="0.1.0")  # fmt: skip
    assert reg.host.site == "site-a"
    assert reg.host.state == "registered"
    assert "ekh_" not in repr(reg)
    b.register(token.secret, arch="arm64")
    assert a.heartbeat("10.0.0.6").address == "10.0.0.6"
    assert a.get().uid == "host-a1"
    # Host b's credential on host a's record: refused.
    assert b.credential is not None
    bearer = {"Authorization": f"Bearer {b.credential.reveal()}"}
    for method, suffix in (("GET", ""), ("POST", "/heartbeat"), ("GET", "/desired-state")):
        r = requests.request(method, f"{hub.url}/v1/edgehosts/host-a1{suffix}", headers=bearer)
        assert r.status_code == 403, suffix
        assert r.json()["code"] == "Forbidden"
    r = requests.get(f"{hub.url}/v1/edgehosts/host-a1", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    # Re-registration: same uid, no duplicate, new credential.
    old = a.credential
    a.register(token.secret, address="10.0.0.7", arch="amd64")
    assert a.credential != old
    hosts = admin.hosts.search(site="site-a")
    assert [h.uid for h in hosts] == ["host-a1", "host-b1"]
    assert hosts[0].address == "10.0.0.7"


def test_bad_tokens_are_refused_and_nothing_stored(hub: HubServer, admin: HubClient) -> None:
    token = admin.tokens.create("site-bad", site="site-bad")
    assert token.secret is not None
    body = {"hostUid": "never-1"}
    wrong = _post(hub, "/v1/edgehosts/register", json=body, headers={"EdgeHostToken": "ekt_x"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "InvalidToken"
    missing = _post(hub, "/v1/edgehosts/register", json=body)
    assert missing.status_code == 401
    admin.tokens.revoke(token)
    revoked = _post(
        hub, "/v1/edgehosts/register", json={**body, "edgeHostToken": token.secret.reveal()}
    )
    assert (revoked.status_code, revoked.json()["code"]) == (403, "TokenRevoked")
    admin.tokens.activate(token)
    admin.tokens.expire(token)
    with pytest.raises(HubRequestError) as expired:
        hub.host_client("never-1").register(token.secret)
    assert (expired.value.status, expired.value.code) == (403, "TokenExpired")
    assert admin.hosts.search(site="site-bad") == []
    with pytest.raises(HubRequestError) as unknown:
        admin.hosts.get("never-1")
    assert unknown.value.status == 404


def test_site_conflict_and_max_hosts_atomic(hub: HubServer, admin: HubClient) -> None:
    one = admin.tokens.create("site-m", site="site-m", max_hosts=5)
    other = admin.tokens.create("site-n", site="site-n")
    assert one.secret is not None
    assert other.secret is not None
    results: list[str] = []

    def attempt(i: int) -> None:
        try:
            hub.host_client(f"race-{i:02d}").register(one.secret)  # type: ignore[arg-type]
            results.append("ok")
        except HubRequestError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 5
    assert results.count("TokenExhausted") == 19
    assert len(admin.hosts.search(site="site-m")) == 5
    assert admin.tokens.get(one.uid).registered_hosts == 5
    taken = admin.hosts.search(site="site-m")[0].uid
    with pytest.raises(HubRequestError) as moved:
        hub.host_client(taken).register(other.secret)
    assert (moved.value.status, moved.value.code) == (409, "HostSiteConflict")


def test_malformed_large_and_invalid_bodies(hub: HubServer) -> None:
    key = {"ApiKey": hub.api_key.reveal(), "Content-Type": "application/json"}
    bad_json = _post(hub, "/v1/edgehosts/tokens", data=b"{not json", headers=key)
    assert bad_json.status_code == 400
    assert bad_json.json()["code"] == "MalformedJson"
    big = _post(hub, "/v1/edgehosts/tokens", data=b"[" + b"1," * 20000 + b"1]", headers=key)
    assert big.status_code == 413
    assert big.json()["code"] == "PayloadTooLarge"
    invalid = _post(
        hub,
        "/v1/edgehosts/tokens",
        json={"metadata": {"name": 3}, "spec": {"expiry": "tomorrow", "maxHosts": 0}},
        headers=key,
    )
    assert invalid.status_code == 400
    paths = {p["path"] for p in invalid.json()["problems"]}
    assert paths == {"$.metadata.name", "$.spec.expiry", "$.spec.maxHosts"}
    reg = _post(
        hub,
        "/v1/edgehosts/register",
        json={"hostUid": "bad uid!", "arch": "sparc", "macAddress": "zz", "tags": []},
        headers={"EdgeHostToken": "ekt_whatever"},
    )
    assert reg.status_code == 400
    assert {p["path"] for p in reg.json()["problems"]} == {
        "$.hostUid", "$.arch", "$.macAddress", "$.tags",
    }  # fmt: skip
    unknown_route = requests.get(hub.url + "/v1/nothing")
    assert unknown_route.status_code == 404
    assert unknown_route.json()["code"] == "NotFound"


def _cluster(name: str, cp: list[str], workers: list[str] = (), **kw: object) -> model.Cluster:  # type: ignore[assignment]
    pools = (model.Pool("workers", tuple(model.PoolHost(u) for u in workers)),) if workers else ()
    return model.Cluster(
        name=name,
        profile=model.ProfileRef("retail", "1.2.0"),
        control_plane=model.Pool("cp", tuple(model.PoolHost(u) for u in cp)),
        workers=pools,
        **kw,  # type: ignore[arg-type]
    )


def test_cluster_desired_state_and_status(hub: HubServer, admin: HubClient) -> None:
    # A cluster may only reference a published profile version.
    admin.profiles.publish(
        model.ClusterProfile(
            "retail", "1.2.0", (model.Pack.os("ubuntu", "22.04"), model.Pack.k8s("k3s", "1.30.4"))
        )
    )
    token = admin.tokens.create("site-c", site="site-c")
    assert token.secret is not None
    agents = {u: hub.host_client(u) for u in ("c-cp1", "c-w1", "c-w2", "c-arm")}
    for uid, agent in agents.items():
        agent.register(token.secret, arch="arm64" if uid == "c-arm" else "amd64",
                       tags={"role": uid[2:4]}, address="10.0.10.5")  # fmt: skip
    assert agents["c-cp1"].desired_state() is None
    assert agents["c-cp1"].heartbeat().state == "ready"
    # A body the model refuses: every problem at once, at the request's paths.
    body = cluster_body(_cluster("store-c", ["c-cp1"], vip="10.0.10.100"))
    body["spec"]["machinePoolConfig"][0]["cloudConfig"]["edgeHosts"].append({"hostUid": "c-w1"})
    body["metadata"]["name"] = "Store_C"
    body["spec"]["cloudConfig"]["controlPlaneEndpoint"]["host"] = "not-an-ip"
    body["spec"]["machinePoolConfig"][0]["poolConfig"]["size"] = 3
    with pytest.raises(HubRequestError) as bad:
        admin.clusters.create_from_body(body)
    assert bad.value.status == 400
    paths = {p.path for p in bad.value.problems}
    assert "$.spec.machinePoolConfig[0].poolConfig.size" in paths
    body["spec"]["machinePoolConfig"][0]["poolConfig"]["size"] = 2
    with pytest.raises(HubRequestError) as bad:
        admin.clusters.create_from_body(body)
    paths = {p.path for p in bad.value.problems}
    assert paths >= {
        "$.metadata.name",
        "$.spec.cloudConfig.controlPlaneEndpoint.host",
        "$.spec.machinePoolConfig[0].cloudConfig.edgeHosts",
    }  # 2 CPs, no two_node
    # Valid for the model, but the hosts are not: unregistered, wrong arch.
    with pytest.raises(HubRequestError) as hosts:
        admin.clusters.create(_cluster("store-c", ["c-cp1"], ["ghost-9", "c-arm"]))
    messages = {p.path: p.message for p in hosts.value.problems}
    assert (
        "'ghost-9' is not registered"
        in messages["$.spec.machinePoolConfig[1].cloudConfig.edgeHosts[0].hostUid"]
    )
    assert "arm64" in messages["$.spec.machinePoolConfig[1].cloudConfig.edgeHosts[1].hostUid"]
    assert admin.hosts.get("c-cp1").cluster_uid is None
    assert admin.hosts.search(site="site-c", state="in_use") == []
    image = "registry.local/edge/ubuntu:k3s-1.30.4-v0.1.0"
    cluster = admin.clusters.create(
        _cluster("store-c", ["c-cp1"], ["c-w1", "c-w2"], vip="10.0.10.100"), provider_image=image
    )
    assert admin.clusters.get(cluster.uid).name == "store-c"
    cp = agents["c-cp1"].desired_state()
    w = agents["c-w2"].desired_state()
    assert cp is not None
    assert w is not None
    assert (cp.role, cp.pool, cp.vip, cp.cluster_name) == (
        "control-plane", "cp", "10.0.10.100", "store-c",
    )  # fmt: skip
    assert cp.profile == model.ProfileRef("retail", "1.2.0")
    assert (w.role, w.pool, w.provider_image) == ("worker", "workers", image)
    in_use = {"c-cp1", "c-w1", "c-w2"}
    assert {h.uid for h in admin.hosts.search(state="in_use", site="site-c")} == in_use
    assert agents["c-w1"].report_status("applied", generation=cp.generation).state == "in_use"
    assert agents["c-w2"].report_status("failed", message="disk full").state == "unhealthy"
    assert [h.uid for h in admin.hosts.search(state="unhealthy")] == ["c-w2"]
    assert [h.uid for h in admin.hosts.search(tags={"role": "w1"})] == ["c-w1"]
    assert admin.hosts.get("c-w1").to_edge_host().state is model.HostState.IN_USE
    with pytest.raises(HubRequestError) as in_use_delete:
        admin.hosts.delete("c-w1")
    assert in_use_delete.value.status == 409
    # A host in use cannot join a second cluster (the model's availability rule).
    with pytest.raises(HubRequestError, match="in_use"):
        admin.clusters.create(_cluster("store-d", ["c-w1"]))


def test_no_secret_in_logs(hub: HubServer, admin: HubClient) -> None:
    token = admin.tokens.create("site-log", site="site-log")
    assert token.secret is not None
    agent = hub.host_client("log-1")
    agent.register(token.secret)
    agent.heartbeat()
    _post(hub, "/v1/edgehosts/register", json={"hostUid": "log-2", "edgeHostToken": "ekt_leak-me"})
    admin.tokens.revoke(token)
    with pytest.raises(HubRequestError):
        agent.register(token.secret)
    assert agent.credential is not None
    log = hub.log_path.read_text()
    assert "POST /v1/edgehosts/register" in log  # the access log is on
    for secret in (token.secret.reveal(), agent.credential.reveal(), hub.api_key.reveal(),
                   "ekt_leak-me"):  # fmt: skip
        assert secret not in log


def test_unreachable_hub_is_a_registration_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = HostClient(f"http://127.0.0.1:{port}", "h", retry_for=0.3)
    with pytest.raises(RegistrationError, match="cannot reach the hub"):
        client.register("ekt_x")


def test_generated_api_key_printed_once(tmp_path: Path) -> None:
    """With no key given, serve() generates one, prints it once and keeps its hash."""
    import socket

    db = tmp_path / "hub.db"
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_HUB_API_KEY"}
    outputs = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgekit.hub.server", "--db", str(db), "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        watchdog = threading.Timer(60, proc.kill)  # a hub that never says it listens
        watchdog.start()
        try:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if "edgekit hub listening on" in line:
                    break
            outputs.append("".join(lines))
            key_lines = [ln for ln in lines if "generated admin API key" in ln]
            if key_lines:
                key = key_lines[0].rsplit(" ", 1)[1].strip()
            r = requests.get(f"http://127.0.0.1:{port}/v1/edgehosts/tokens",
                             headers={"ApiKey": key}, timeout=10)  # fmt: skip
            assert r.status_code == 200
        finally:
            watchdog.cancel()
            proc.terminate()
            proc.wait(timeout=10)
    assert "generated admin API key" in outputs[0]
    assert "generated admin API key" not in outputs[1]
    assert key not in db.read_bytes().decode(errors="replace")


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with HubServer(tmp_path / "hub.db", tls=TlsFiles(cert, key)) as hub, hub.client() as admin:
        assert hub.url.startswith("https://")
        token = admin.tokens.create("tls")
        assert token.secret is not None
        with hub.host_client("tls-1") as agent:
            agent.register(token.secret)
        assert [h.uid for h in admin.hosts.search()] == ["tls-1"]
        with pytest.raises(RegistrationError, match="cannot reach") as caught:
            HubClient(hub.url, api_key=hub.api_key, retry_for=0).tokens.list()  # untrusted CA
        assert "a hub with a private CA needs its CA bundle" in str(caught.value)
        # Each TLS mistake gets its own hint: another CA, a file with no certificate, and
        # https:// to a plain-http hub.
        other_cert, other_key = tmp_path / "other.pem", tmp_path / "other-key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", "/CN=other", "-keyout", str(other_key),
             "-out", str(other_cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        with pytest.raises(RegistrationError, match="failed with the CA bundle given"):
            HubClient(hub.url, api_key=hub.api_key, ca_cert=other_cert, retry_for=0).tokens.list()
        garbage = tmp_path / "garbage.pem"
        garbage.write_bytes(b"\xff\xfenot a certificate\n")
        with pytest.raises(RegistrationError, match="holds no PEM certificate"):
            HubClient(hub.url, api_key=hub.api_key, ca_cert=garbage, retry_for=0).tokens.list()
    with HubServer(tmp_path / "plain.db") as plain:
        https = plain.url.replace("http://", "https://")
        with pytest.raises(RegistrationError, match="does not speak TLS"):
            HubClient(https, api_key=plain.api_key, ca_cert=cert, retry_for=0).tokens.list()
