"""The hub commands (`hub serve|import`, `token ...`, `hosts`, `cluster create`) against a
real hub on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cli_runner import edgekit

from edgekit import model
from edgekit.hub import HubRequestError, HubServer
from edgekit.hub.airgap import write_bundle

API_KEY = "eka_cli-test-admin-key-0123456789abcdef"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub.db", api_key=API_KEY) as server:
        yield server


@pytest.fixture
def admin_env(hub: HubServer) -> dict[str, str]:
    return {"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": API_KEY}


def test_tokens_hosts_and_a_cluster(hub: HubServer, admin_env: dict[str, str], tmp_path: Path):
    created = edgekit("token", "create", "store-1", "--site", "store-1", "--json", env=admin_env)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    secret = token["token"]
    assert secret

    listed = edgekit("token", "list", "--json", env=admin_env)
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout  # shown once, at creation only
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["site"], row["state"]) == ("store-1", "store-1", "active")

    with hub.host_client("host-a") as host:
        host.register(secret, address="10.0.10.25", arch="amd64", tags={"rack": "2"})
    found = edgekit("hosts", "--site", "store-1", "--tag", "rack=2", "--json", env=admin_env)
    assert found.returncode == 0, found.stderr
    assert [h["uid"] for h in json.loads(found.stdout)] == ["host-a"]

    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "name: store-1-edge\nprofile: {name: retail, version: 1.0.0}\n"
        "controlPlane: {name: cp, arch: amd64, hosts: [{uid: host-a}]}\n"
    )
    # The hub forms clusters of published profile versions only.
    retail = model.ClusterProfile(
        "retail", "1.0.0", (model.Pack.os("ubuntu", "22.04"), model.Pack.k8s("k3s", "1.30.4"))
    )
    hub.client().profiles.publish(retail)
    made = edgekit("cluster", "create", str(spec), "--json", env=admin_env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["name"] == "store-1-edge"

    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("host-a", "host-nope").replace("store-1-edge", "b"))
    refused = edgekit("cluster", "create", str(bad), env=admin_env)
    assert refused.returncode == 1
    assert "host-nope" in refused.stderr
    assert "Traceback" not in refused.stderr

    revoked = edgekit("token", "revoke", token["uid"], env=admin_env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout


def test_admin_commands_need_the_api_key(hub: HubServer):
    proc = edgekit("token", "list", env={"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": ""})
    assert proc.returncode == 2
    assert "EDGEKIT_HUB_API_KEY" in proc.stderr
    wrong = edgekit(
        "token", "list", env={"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": "eka_wrong"}
    )
    assert wrong.returncode == 1
    assert "eka_wrong" not in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_hub_import_accepts_good_bundles_and_refuses_tampered_ones(
    hub: HubServer, admin_env: dict[str, str], tmp_path: Path
):
    token = json.loads(
        edgekit("token", "create", "t", "--site", "s1", "--json", env=admin_env).stdout
    )
    media = tmp_path / "usb"
    media.mkdir()
    write_bundle(media, token["token"], {"hostUid": "airgapped-1", "arch": "amd64"})
    bad = write_bundle(media, token["token"], {"hostUid": "airgapped-2", "arch": "amd64"})
    doc = json.loads(bad.read_text())
    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["host"]["hostUid"] = "intruder"  # tamper after signing
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    bad.write_text(json.dumps(doc))

    proc = edgekit("hub", "import", str(media), "--db", str(hub.db_path), "--json")
    assert proc.returncode == 1  # one bundle was refused
    results = {Path(r["path"]).name: r for r in json.loads(proc.stdout)["results"]}
    assert results["edgekit-registration-airgapped-1.json"]["ok"] is True
    refused = results[bad.name]
    assert refused["ok"] is False
    assert refused["error"]
    hosts = json.loads(edgekit("hosts", "--json", env=admin_env).stdout)
    assert [h["uid"] for h in hosts] == ["airgapped-1"]


def test_token_qr_prints_a_url_and_a_code():
    env = {"EDGEKIT_REGISTRATION_TOKEN": "ekt_qr-test-token"}
    proc = edgekit("token", "qr", "--endpoint", "https://hub.example.com", env=env)
    assert proc.returncode == 0, proc.stderr
    url, *code = proc.stdout.splitlines()
    assert url.startswith("https://hub.example.com")
    assert "█" in "".join(code) or "▀" in "".join(code)
    missing = edgekit(
        "token", "qr", "--endpoint", "https://h", env={"EDGEKIT_REGISTRATION_TOKEN": ""}
    )
    assert missing.returncode == 2


def test_hub_serve_generates_an_api_key_once(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "hub.db"
    env = {**os.environ, "EDGEKIT_HUB_API_KEY": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit", "hub", "serve", "--port", str(port), "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the hub did not start"
            time.sleep(0.3)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "eka_" in out  # the generated key, printed once on stdout
    key = next(w for w in out.split() if w.startswith("eka_"))
    assert key not in err  # never in the log
    assert db.exists()


def test_hub_import_of_deeply_nested_json_is_a_clear_refusal(
    hub: HubServer, admin_env: dict[str, str], tmp_path: Path
):
    media = tmp_path / "usb"
    media.mkdir()
    deep = media / "edgekit-registration-deep.json"
    deep.write_bytes(b"[" * 30000 + b"]" * 30000)  # 60 KB: was a RecursionError traceback
    proc = edgekit("hub", "import", str(media), "--db", str(hub.db_path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "RecursionError" not in proc.stderr + proc.stdout
    assert "nests 30000 levels deep" in proc.stderr + proc.stdout
    assert deep.name in proc.stderr + proc.stdout


def test_one_bad_registration_does_not_take_the_fleet_view_down(
    hub: HubServer, admin_env: dict[str, str]
):
    """Issue 9: a lone surrogate in a tag was committed, then every unfiltered search and
    `edgekit hosts` failed. Now it is a 4xx and nothing is stored."""
    token = json.loads(
        edgekit("token", "create", "t", "--site", "s1", "--json", env=admin_env).stdout
    )["token"]
    raw = b'{"hostUid": "edge-1", "tags": {"city": "\\ud800"}}'
    headers = {"Content-Type": "application/json", "EdgeHostToken": token}
    bad = requests.post(hub.url + "/v1/edgehosts/register", data=raw, headers=headers, timeout=10)
    assert 400 <= bad.status_code < 500
    good = hub.host_client("edge-2").register(token)
    assert good.host.uid == "edge-2"
    listed = edgekit("hosts", "--json", env=admin_env)
    assert listed.returncode == 0, listed.stderr
    assert [h["uid"] for h in json.loads(listed.stdout)] == ["edge-2"]


def test_hosts_reset_lets_a_reimaged_device_register_again(
    hub: HubServer, admin_env: dict[str, str]
):
    token = json.loads(
        edgekit("token", "create", "t", "--site", "s1", "--json", env=admin_env).stdout
    )["token"]
    old = hub.host_client("edge-9")
    old.register(token, address="10.0.9.1")
    reimaged = hub.host_client("edge-9")  # the same uid, a new credential of its own
    with pytest.raises(HubRequestError) as refused:
        reimaged.register(token, address="10.0.9.2")
    assert (refused.value.status, refused.value.code) == (409, "HostAlreadyRegistered")

    reset = edgekit("hosts", "reset", "edge-9", "--json", env=admin_env)
    assert reset.returncode == 0, reset.stderr
    assert json.loads(reset.stdout) == {
        "ok": True, "uid": "edge-9", "site": "s1", "state": "registered", "cluster": None,
    }  # fmt: skip
    with pytest.raises(HubRequestError) as revoked:
        old.heartbeat()  # the old credential stopped working at the reset
    assert revoked.value.status == 401
    again = reimaged.register(token, address="10.0.9.2")  # no proof needed now
    assert (again.host.uid, again.host.site, again.host.address) == ("edge-9", "s1", "10.0.9.2")
    hosts = json.loads(edgekit("hosts", "--json", env=admin_env).stdout)
    assert [h["uid"] for h in hosts] == ["edge-9"]  # still one record

    text = edgekit("hosts", "reset", "edge-9", env=admin_env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("host edge-9 was reset: its credential is revoked")
    assert "token of site s1" in text.stdout
    for credential in (old.credential, reimaged.credential):
        assert credential is not None
        assert credential.reveal() not in text.stdout + text.stderr + reset.stdout

    unknown = edgekit("hosts", "reset", "edge-nope", env=admin_env)
    assert unknown.returncode == 1
    assert "HostNotFound" in unknown.stderr
    assert "edge-nope" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    misplaced = edgekit("hosts", "--json", "reset", "edge-9", env=admin_env)
    assert misplaced.returncode == 2
    assert "--json given before 'reset'" in misplaced.stderr
    no_key = edgekit("hosts", "reset", "edge-9", env={**admin_env, "EDGEKIT_HUB_API_KEY": ""})
    assert no_key.returncode == 2
    assert "EDGEKIT_HUB_API_KEY" in no_key.stderr


def test_hub_serve_refuses_a_weak_api_key_without_echoing_it(tmp_path: Path):
    weak = "password" * 4  # 32 characters, far from 100 bits
    proc = edgekit(
        "hub", "serve", "--port", "0", "--db", str(tmp_path / "hub.db"),
        env={"EDGEKIT_HUB_API_KEY": weak},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert weak not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""  # stdout is for a generated key only


def test_hub_import_takes_a_file_url_and_names_its_transport(
    hub: HubServer, admin_env: dict[str, str], tmp_path: Path
):
    token = json.loads(
        edgekit("token", "create", "t", "--site", "s1", "--json", env=admin_env).stdout
    )
    media = tmp_path / "usb"
    media.mkdir()
    write_bundle(media, token["token"], {"hostUid": "airgapped-url", "arch": "amd64"})
    url = media.as_uri()  # file:///...: a Path would have collapsed the slashes
    proc = edgekit("hub", "import", url, "--transport", "file", "--db", str(hub.db_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["hostUid"] for r in json.loads(proc.stdout)["results"]] == ["airgapped-url"]

    unknown = edgekit("hub", "import", url, "--transport", "flie", "--db", str(hub.db_path))
    assert unknown.returncode == 2
    assert "flie" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_hub_serve_refuses_unusable_tls_files_and_ports_before_it_starts(tmp_path: Path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\xff\xfe not a certificate\n")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    other_key = tmp_path / "other-key.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-out", str(other_key)],
        check=True, capture_output=True,
    )  # fmt: skip
    db = tmp_path / "hub.db"
    for c, k in ((garbage, garbage), (cert, garbage), (cert, other_key)):
        proc = edgekit(
            "hub", "serve", "--port", "0", "--db", str(db), "--tls-cert", str(c),
            "--tls-key", str(k), timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert f"tls: cannot use the certificate {c} with the key {k}" in proc.stderr
        assert "listening" not in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not db.exists()
    proc = edgekit("hub", "serve", "--port", "99999", "--db", str(db), timeout=60)
    assert proc.returncode == 2
    assert "--port" in proc.stderr
    assert "bug" not in proc.stderr
    assert not db.exists()


def test_hub_serve_refuses_a_rollout_interval_out_of_range(tmp_path: Path):
    proc = edgekit(
        "hub", "serve", "--db", str(tmp_path / "h.db"), "--rollout-interval", "0", timeout=60
    )
    assert proc.returncode == 2
    assert "--rollout-interval" in proc.stderr
    assert not (tmp_path / "h.db").exists()


def test_hub_db_takes_a_sqlite_url_and_never_creates_an_empty_hub(
    hub: HubServer, admin_env: dict[str, str], tmp_path: Path
):
    token = json.loads(
        edgekit("token", "create", "t", "--site", "s1", "--json", env=admin_env).stdout
    )
    media = tmp_path / "usb"
    media.mkdir()
    write_bundle(media, token["token"], {"hostUid": "by-url", "arch": "amd64"})
    url = f"sqlite:///{hub.db_path}"
    proc = edgekit("hub", "import", str(media), "--db", url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["hostUid"] for r in json.loads(proc.stdout)["results"]] == ["by-url"]

    missing = tmp_path / "nope.db"
    for db in (str(missing), f"sqlite:///{missing}"):
        refused = edgekit("hub", "import", str(media), "--db", db)
        assert refused.returncode == 2
        assert "no such SQLite database" in refused.stderr
        assert not missing.exists()
