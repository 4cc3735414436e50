"""The device agent's desired-state watch (``watch_desired`` in the busybox sh script), run
by the host's busybox sh against a real hub on 127.0.0.1: after an update of its cluster it
applies it by its upgrade kind (an in-place one here: nothing to reboot) and reports the
new observedGeneration as ``healthy``, and a release too; the QEMU test in
tests/test_e2e_cluster.py does the same on a booted host."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgekit_agent import agent_files, agent_parts_dir

from edgekit import model
from edgekit.hub import HubClient, HubServer

AGENT = agent_files()["usr/bin/edgekit-agent"]
OS = model.Pack.os("ubuntu", "22.04")
APP = model.Pack(name="shop", layer=model.Layer.ADDON, version="1.0.0", values={"replicas": 1})
V1 = model.ClusterProfile("retail", "1.0.0", (OS, model.Pack.k8s("k3s", "1.30.4"), APP))
V2 = model.ClusterProfile(  # the add-on's values only: an in-place upgrade
    "retail",
    "1.1.0",
    (
        OS,
        model.Pack.k8s("k3s", "1.30.4"),
        model.Pack("shop", model.Layer.ADDON, "1.0.0", values={"replicas": 2, "generation": 99}),
    ),
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with HubServer(tmp_path_factory.mktemp("hub") / "hub.db", access_log=False) as server:
        yield server


@pytest.fixture(scope="module")
def admin(hub: HubServer) -> HubClient:
    client = hub.client()
    client.profiles.publish_all([V1, V2])
    return client


def _watch(
    hub: HubServer, uid: str, credential: str, seen: str, tmp_path: Path, *, seconds: int = 3
) -> subprocess.CompletedProcess[str]:
    """``watch_desired`` for ``seconds`` with a 1 s interval, in busybox sh."""
    if shutil.which("busybox") is None:
        pytest.fail("busybox is required (apt-get install busybox-static)")
    run, state = tmp_path / "run", tmp_path / "state"
    run.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    (run / "beat.json").write_text('{"hostAddress":"10.0.0.9"}')
    script = (
        f'EDGEKIT_AGENT_LIB=1 . "{AGENT}"\n'
        'watch_desired "$HOSTPATH" "Authorization: Bearer $CREDENTIAL" "$RUN/beat.json"'
        f' {seconds} 1 "$SEEN"\n'
    )
    return subprocess.run(
        ["busybox", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "EDGEKIT_AGENT_PARTS": str(agent_parts_dir()),
            "EDGEKIT_AGENT_RUN_DIR": str(run),
            "EDGEKIT_AGENT_STATE_DIR": str(state),
            "HOSTPATH": f"{hub.url}/v1/edgehosts/{uid}",
            "CREDENTIAL": credential,
            "SEEN": seen,
        },
    )


def test_an_update_is_reported_as_observed_and_a_release_confirmed(
    hub: HubServer, admin: HubClient, tmp_path: Path
) -> None:
    token = admin.tokens.create("watch", site="store-w")
    assert token.secret is not None
    agent = hub.host_client("watch-1")
    reg = agent.register(token.secret, address="10.0.0.9")
    agent.heartbeat()
    credential = reg.credential.reveal()
    made = admin.clusters.create(model.Cluster.single_node("store-w", V1.ref, "watch-1"))
    agent.report_status("applied", generation=1)  # what the agent reports on assignment
    seen = f"{made.uid}:1"

    # Nothing new: nothing is reported.
    quiet = _watch(hub, "watch-1", credential, seen, tmp_path, seconds=2)
    assert quiet.returncode == 0, quiet.stderr
    assert "reported healthy" not in quiet.stdout

    admin.clusters.update("store-w", profile=V2.ref)
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "image-digest").write_text("sha256:" + "ab" * 32 + "\n")
    watched = _watch(hub, "watch-1", credential, seen, tmp_path)
    assert watched.returncode == 0, watched.stderr
    lines = [line for line in watched.stdout.splitlines() if "reported healthy" in line]
    # Once, though it polled several times; a pack value named "generation" is not it.
    assert lines == [
        "edgekit-agent: observed generation=2 action=update upgrade=in_place: "
        "reported healthy (applied in place)"
    ]
    assert credential not in watched.stdout + watched.stderr
    status = admin.clusters.status("store-w")
    [member] = status.hosts
    assert (member.desired_generation, member.observed_generation) == (2, 2)
    assert member.phase == "healthy"
    assert member.image_digest == "sha256:" + "ab" * 32
    assert member.message is not None
    assert "generation 2 applied in place" in member.message
    # The desired state is kept where an offline boot finds it.
    assert '"generation":2' in (tmp_path / "state" / "desired.json").read_text()
    assert status.ready

    # Deleted cluster: the release is confirmed, and the host is free again.
    admin.clusters.delete("store-w")
    released = _watch(hub, "watch-1", credential, f"{made.uid}:2", tmp_path)
    assert released.returncode == 0, released.stderr
    assert "observed generation=3 action=release" in released.stdout
    host = admin.hosts.get("watch-1")
    assert host.state == "ready"
    assert agent.desired_state() is None


def test_a_reset_host_stops_watching(hub: HubServer, admin: HubClient, tmp_path: Path) -> None:
    token = admin.tokens.create("watch-reset", site="store-r")
    assert token.secret is not None
    reg = hub.host_client("watch-2").register(token.secret, address="10.0.0.8")
    admin.hosts.reset("watch-2")
    out = _watch(hub, "watch-2", reg.credential.reveal(), "", tmp_path, seconds=10)
    assert out.returncode == 1
    assert "error: the hub no longer accepts this host's credential (401" in out.stdout
