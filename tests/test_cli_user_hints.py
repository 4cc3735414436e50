"""Errors a new user meets while trying edgekit from the docs say where to look and what to
do: a hub database looked for in the wrong directory, a second ``edgekit simulate`` run
against the same hub (its hosts never register), a host re-registered without a site.
Each runs the real CLI (a subprocess) against a real hub subprocess on SQLite."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import edgekit

from edgekit.hub import HubServer
from edgekit.hub.client import HubRequestError


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub.db", access_log=False) as server:
        yield server


def test_a_missing_hub_database_names_the_file_looked_for(tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-the-hub-dir"
    elsewhere.mkdir()
    proc = edgekit(
        "hub", "upgrade-bundle", "rig-1", "--out", str(tmp_path / "stick"), cwd=elsewhere
    )
    assert proc.returncode == 2
    # The default is relative: the message gives the absolute file and what to pass instead.
    assert f"{elsewhere / 'edgekit-hub.db'} does not exist" in proc.stderr
    assert "give --db" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "stick").exists()
    assert not (elsewhere / "edgekit-hub.db").exists()


def test_a_second_simulation_against_the_same_hub_says_why_its_hosts_never_register(
    hub: HubServer, tmp_path: Path
) -> None:
    token = hub.client().tokens.create("sim-twice")
    assert token.secret is not None
    env = {**os.environ, "EDGEKIT_REGISTRATION_TOKEN": token.secret.reveal()}
    args = ("simulate", "--hub", hub.url, "--hosts", "2", "--sites", "s-a", "--seconds", "2")

    first = edgekit(*args, "--json", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["errors"] == []
    assert "warning" not in first.stderr

    # Another fleet next to it needs only another prefix.
    other = edgekit(*args, "--prefix", "other", "--json", cwd=tmp_path, env=env)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["errors"] == []
    uids = {h.uid for h in hub.client().hosts.search()}
    assert {"sim-00000", "sim-00001", "other-00000", "other-00001"} <= uids

    second = edgekit(*args, cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert "unregistered" in second.stdout
    assert "warning: 2 host(s) never registered; the hub answered:" in second.stderr
    assert "HostAlreadyRegistered" in second.stderr
    assert "hint: these uids are already registered in this hub" in second.stderr
    assert "another --prefix" in second.stderr
    assert token.secret.reveal() not in second.stdout + second.stderr


def test_a_bad_prefix_is_refused_before_anything_is_sent(hub: HubServer, tmp_path: Path) -> None:
    env = {**os.environ, "EDGEKIT_REGISTRATION_TOKEN": "ekt_unused"}
    proc = edgekit("simulate", "--hub", hub.url, "--prefix", "../x", "--seconds", "1",
                   cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode != 0
    assert "prefix '../x'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_json_report_carries_the_refusals(hub: HubServer, tmp_path: Path) -> None:
    env = {**os.environ, "EDGEKIT_REGISTRATION_TOKEN": "ekt_not-a-token-at-all"}
    proc = edgekit("simulate", "--hub", hub.url, "--hosts", "1", "--seconds", "1", "--json",
                   cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["counts"] == {"unregistered": 1}
    [error] = report["errors"]
    assert error.startswith("401")
    assert "InvalidToken" in error


def test_a_host_re_registered_without_a_site_is_told_so(hub: HubServer) -> None:
    admin = hub.client()
    bound = admin.tokens.create("one-site", site="store-1")
    anywhere = admin.tokens.create("any-site")
    assert bound.secret is not None
    assert anywhere.secret is not None
    hub.host_client("dev-1").register(bound.secret)
    with pytest.raises(HubRequestError) as refused:
        hub.host_client("dev-1").register(anywhere.secret)  # another credential, no site
    assert refused.value.code == "HostSiteConflict"
    assert str(refused.value).endswith(
        "(409 HostSiteConflict: host 'dev-1' is registered in site 'store-1'; delete it"
        " before registering it without a site)"
    )


def test_an_upgrade_bundle_for_a_site_with_a_spare_host_says_how_to_leave_it_out(
    hub: HubServer, tmp_path: Path
) -> None:
    token = hub.client().tokens.create("spare", site="mine-7")
    assert token.secret is not None
    hub.host_client("spare-1").register(token.secret)  # registered, in no cluster
    stick = tmp_path / "stick"
    proc = edgekit("hub", "upgrade-bundle", "--site", "mine-7", "--out", str(stick),
                   "--db", str(hub.db_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "host spare-1: has no desired state to carry (it is in no cluster)" in proc.stderr
    assert "name the hosts to carry instead of their site" in proc.stderr
    assert not stick.exists()


def test_validate_takes_every_kind_the_loader_knows(tmp_path: Path) -> None:
    from edgekit import config
    from edgekit.cli.build import KIND_CHOICES

    assert list(config.KINDS) == KIND_CHOICES
    doc = tmp_path / "rollout.yaml"
    doc.write_text(
        "apiVersion: edgekit/v1\nkind: Rollout\nname: r\nprofile: {name: retail, version: 1.1.0}\n"
        "clusters: {tags: {region: us-west}}\nwaves: [{name: all}]\n"
    )
    proc = edgekit("validate", str(doc), "--kind", "rollout", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "is a valid rollout" in proc.stdout


def test_an_import_that_finds_no_bundle_names_where_it_looked(
    hub: HubServer, tmp_path: Path
) -> None:
    stick = tmp_path / "EDGEKIT-REG"
    stick.mkdir()
    proc = edgekit("hub", "import", str(stick), "--db", str(hub.db_path), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"no registration bundles (edgekit-registration-*.json) found in {stick}:" in proc.stderr
    assert "is the stick mounted there" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_weak_admin_key_stops_the_hub_before_it_creates_a_database(tmp_path: Path) -> None:
    db = tmp_path / "new-hub.db"
    weak = "password" * 4
    env = {**os.environ, "EDGEKIT_HUB_API_KEY": weak}
    proc = edgekit("hub", "serve", "--port", "0", "--db", str(db), cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert "$EDGEKIT_HUB_API_KEY: is too predictable" in proc.stderr
    assert weak not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no -wal or -shm


def test_an_unpublished_profile_names_the_command_that_publishes_it(
    hub: HubServer, tmp_path: Path
) -> None:
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "apiVersion: edgekit/v1\nkind: Cluster\nname: c1\nprofile: {name: retail, version: 1.0.0}\n"
        "controlPlane: {name: control-plane, hosts: [{uid: edge-1}]}\n"
    )
    env = {**os.environ, "EDGEKIT_HUB_URL": hub.url,
           "EDGEKIT_HUB_API_KEY": hub.api_key.reveal()}  # fmt: skip
    proc = edgekit("cluster", "create", str(cluster), cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert (
        "$.spec.profile: profile retail@1.0.0 was never published; publish it first"
        " (edgekit profile publish FILE, or hub.profiles.publish)" in proc.stderr
    )


def test_an_unreachable_hub_says_what_to_check(tmp_path: Path) -> None:
    from edgekit_oras.testing import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "EDGEKIT_HUB_URL": url, "EDGEKIT_HUB_API_KEY": "eka_" + "k" * 40}
    proc = edgekit("hosts", cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert (
        f"cannot reach the hub at {url}: ConnectionError (nothing answered: is a hub serving"
        " at that URL? --hub or $EDGEKIT_HUB_URL)" in proc.stderr
    )
    assert "k" * 40 not in proc.stderr


def test_a_registry_without_tls_names_the_option_for_each_way_in(tmp_path: Path) -> None:
    from edgekit_oras.testing import RegistryServer

    with RegistryServer() as registry:  # a real docker-registry, plain HTTP
        proc = edgekit("referrers", f"{registry.host}/edge/sample:v1", cwd=tmp_path)
    assert proc.returncode != 0
    assert f"TLS verification failed for {registry.host}" in proc.stderr
    assert "--plain-http, plain_http=True or registry.plainHttp" in proc.stderr
    assert "--ca-cert FILE" in proc.stderr
    assert "Traceback" not in proc.stderr
