"""Airgap upgrade bundles (``edgekit.hub.upgrade_bundles``): written from a real hub's
desired state with the provider image pulled from a real docker-registry, then checked the
way the device checks them, by the Python reference and by the agent's busybox sh
(``agent/upgrade_bundle.sh``) with nothing but busybox applets on PATH."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import edgekit
from edgekit_agent import agent_files, agent_parts_dir
from edgekit_oras.testing import RegistryServer
from umoci_images import tool

from edgekit import model
from edgekit.hub import HubClient, HubServer
from edgekit.hub.airgap import BundleError
from edgekit.hub.upgrade_bundles import read_upgrade_bundle, write_upgrade_bundles
from edgekit.plugins.interfaces import RegistryOptions

AGENT = agent_files()["usr/bin/edgekit-agent"]
PROFILE = model.ClusterProfile(
    "kiosk", "1.0.0", (model.Pack.os("ubuntu", "22.04"), model.Pack.k8s("k3s", "1.30.4"))
)
PLAIN = RegistryOptions(plain_http=True)


def _image(registry: RegistryServer, tmp: Path, version: str) -> tuple[str, str]:
    """A small image made by umoci, pushed with skopeo; (reference, manifest digest)."""
    lay, tree = tmp / f"lay-{version}", tmp / f"tree-{version}"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text(f'VERSION="{version}"\n')
    tool("umoci", "init", "--layout", str(lay))
    tool("umoci", "new", "--image", f"{lay}:{version}")
    tool("umoci", "insert", "--image", f"{lay}:{version}", str(tree), "/")
    ref = f"{registry.host}/edge/kiosk:{version}"
    tool("skopeo", "copy", "--dest-tls-verify=false", f"oci:{lay}:{version}", f"docker://{ref}")
    digest = json.loads(tool("skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"))
    return ref, str(digest["Digest"])


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HubServer, HubClient, str, dict[str, tuple[str, str]]]]:
    """A hub with two hosts (one token, one site) in two clusters, both updated from image
    v1 to v2 (a repave), and a real registry holding both images; (hub, admin, token
    secret, {version: (ref, digest)})."""
    tmp = tmp_path_factory.mktemp("bundles")
    with (
        RegistryServer("plain", workdir=tmp / "registry") as registry,
        HubServer(tmp / "hub.db", access_log=False) as hub,
    ):
        images = {v: _image(registry, tmp, v) for v in ("v1", "v2")}
        admin = hub.client()
        admin.profiles.publish_all([PROFILE])
        token = admin.tokens.create("stick", site="mine-7")
        assert token.secret is not None
        for uid in ("rig-1", "rig-2"):
            hub.host_client(uid).register(token.secret, address="10.0.0.9")
            admin.clusters.create(
                model.Cluster.single_node(uid, PROFILE.ref, uid), provider_image=images["v1"][0]
            )
            admin.clusters.update(uid, provider_image=images["v2"][0])
        yield hub, admin, token.secret.reveal(), images


def _busybox_path(tmp: Path) -> dict[str, str]:
    """An environment whose PATH has busybox applets only (what the device has)."""
    bindir = tmp / "bb"
    bindir.mkdir(exist_ok=True)
    busybox = shutil.which("busybox")
    assert busybox, "busybox is required (apt-get install busybox-static)"
    for applet in ("sh", "sed", "awk", "grep", "sha256sum", "cut", "base64", "xxd", "head",
                   "rm", "cat", "printf", "pwd", "tr", "mkdir"):  # fmt: skip
        link = bindir / applet
        if not link.exists():
            link.symlink_to(busybox)
    return {"PATH": str(bindir)}


def _sh_check(tmp: Path, envelope: Path, token: str, uid: str, applied: str = "") -> dict[str, str]:
    script = (
        f'EDGEKIT_AGENT_LIB=1 . "{AGENT}"\n'
        'if upgrade_bundle_check "$ENVELOPE" "$TOKEN" "$UID_" "$APPLIED" "$OUT"; then\n'
        '  echo "ok $BUNDLE_GENERATION $BUNDLE_DIGEST $BUNDLE_LAYOUT"\n'
        'else echo "refused $BUNDLE_ERROR"; fi\n'
    )
    out = tmp / "payload.json"
    env = _busybox_path(tmp)
    proc = subprocess.run(
        [str(Path(env["PATH"]) / "sh"), "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
        env={**env, "ENVELOPE": str(envelope), "TOKEN": token, "UID_": uid,
             "APPLIED": applied, "OUT": str(out), "EDGEKIT_AGENT_RUN_DIR": str(tmp),
             "EDGEKIT_AGENT_PARTS": str(agent_parts_dir())},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert token not in proc.stdout + proc.stderr
    verdict, _, rest = proc.stdout.strip().partition(" ")
    return {"verdict": verdict, "rest": rest, "payload": out.read_text() if out.exists() else ""}


def test_a_bundle_carries_the_desired_state_and_the_image_every_device_check_passes(
    fleet, tmp_path: Path
):
    hub, admin, token, images = fleet
    stick = tmp_path / "stick"
    [bundle] = write_upgrade_bundles(hub.db_path, stick, hosts=["rig-1"], options=PLAIN)
    ref, digest = images["v2"]
    assert (bundle.host_uid, bundle.image_ref, bundle.image_digest) == ("rig-1", ref, digest)
    [member] = admin.clusters.status("rig-1").hosts
    assert bundle.generation == member.desired_generation == 2
    assert bundle.desired["upgrade"] == "repave"
    # The layout is a real OCI layout of the v2 image (skopeo, an independent reader).
    assert bundle.layout is not None
    seen = json.loads(tool("skopeo", "inspect", f"oci:{bundle.layout}"))
    assert seen["Digest"] == digest
    text = bundle.path.read_text()
    assert token not in text  # the token never travels

    checked = read_upgrade_bundle(bundle.path, token=token, host_uid="rig-1", applied_generation=1)
    assert (checked.generation, checked.image_digest) == (2, digest)
    assert checked.desired == bundle.desired

    sh = _sh_check(tmp_path, bundle.path, token, "rig-1", "1")
    assert sh["verdict"] == "ok", sh
    assert sh["rest"] == f"2 {digest} {bundle.layout.resolve()}"
    assert json.loads(sh["payload"])["desired"] == bundle.desired


def test_a_site_gets_one_envelope_per_host_and_one_copy_of_the_image(fleet, tmp_path: Path):
    hub, _, _, images = fleet
    stick = tmp_path / "stick"
    written = write_upgrade_bundles(hub.db_path, stick, sites=["mine-7"], options=PLAIN)
    assert [b.host_uid for b in written] == ["rig-1", "rig-2"]
    assert len(list((stick / "edgekit-upgrade" / "images").iterdir())) == 1
    assert {b.layout for b in written} == {stick / "edgekit-upgrade" / "images" /
                                           images["v2"][1].replace(":", "-")}  # fmt: skip
    # A second run over the same stick keeps the image and rewrites the envelopes.
    again = write_upgrade_bundles(hub.db_path, stick, sites=["mine-7"], options=PLAIN)
    assert [b.path for b in again] == [b.path for b in written]
    assert not list((stick / "edgekit-upgrade").rglob(".*"))  # no temporaries left


def test_every_forgery_is_refused_by_python_and_by_the_device(fleet, tmp_path: Path):
    hub, _, token, _ = fleet
    stick = tmp_path / "stick"
    one, two = write_upgrade_bundles(hub.db_path, stick, hosts=["rig-1", "rig-2"], options=PLAIN)

    def refused(envelope: Path, uid: str, why: str, *, tok: str = token, applied: str = "1"):
        with pytest.raises(BundleError, match=why):
            read_upgrade_bundle(envelope, token=tok, host_uid=uid, applied_generation=int(applied))
        sh = _sh_check(tmp_path, envelope, tok, uid, applied)
        assert sh["verdict"] == "refused", sh
        assert sh["payload"] == ""  # nothing decoded is left for the agent to use
        return sh["rest"]

    # Another host's bundle.
    assert "is for host rig-2, not rig-1" in refused(two.path, "rig-1", "is for host")
    # Renamed to this host: the per-host key makes its MAC fail (same token, same site).
    doc = json.loads(two.path.read_text())
    doc["hostUid"] = "rig-1"
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(doc, indent=2) + "\n")
    assert "HMAC" in refused(renamed, "rig-1", "HMAC")
    # A payload edited after signing (generation raised).
    doc = json.loads(one.path.read_text())
    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["generation"] = 9
    doc["payload"] = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
    edited = stick / "edgekit-upgrade" / "edited.json"
    edited.write_text(json.dumps(doc, indent=2) + "\n")
    assert "HMAC" in refused(edited, "rig-1", "HMAC")
    # Another token (another site's).
    assert "HMAC" in refused(one.path, "rig-1", "HMAC", tok="ekt_" + "x" * 40)
    # An old stick: the generation is already applied.
    assert "but 2 is applied" in refused(one.path, "rig-1", "is applied", applied="2")


def test_a_corrupted_blob_is_named_and_refused_by_the_device(fleet, tmp_path: Path):
    hub, _, token, _ = fleet
    [bundle] = write_upgrade_bundles(
        hub.db_path, tmp_path / "stick", hosts=["rig-2"], options=PLAIN
    )
    assert bundle.layout is not None
    blobs = bundle.layout / "blobs" / "sha256"
    manifest = json.loads((blobs / str(bundle.image_digest).removeprefix("sha256:")).read_text())
    layer = blobs / manifest["layers"][0]["digest"].removeprefix("sha256:")
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    sh = _sh_check(tmp_path, bundle.path, token, "rig-2", "1")
    assert sh["verdict"] == "refused"
    assert f"blob sha256:{layer.name} of the image is missing or does not match" in sh["rest"]


def test_the_cli_reports_every_problem_at_once_and_writes_nothing(fleet, tmp_path: Path):
    hub, admin, _, _ = fleet
    token = admin.tokens.create("idle", site="idle-1")
    assert token.secret is not None
    hub.host_client("idle-1").register(token.secret.reveal())  # registered, but in no cluster
    stick = tmp_path / "stick"
    proc = edgekit(
        "hub", "upgrade-bundle", "nope", "idle-1", "--site", "nowhere", "--out", str(stick),
        "--db", str(hub.db_path), "--plain-http", env={"COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "hosts[0]: no host 'nope' is registered" in proc.stderr
    assert "sites[0]: no host is registered at site 'nowhere'" in proc.stderr
    assert "host idle-1: has no desired state to carry" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not stick.exists()

    ok = edgekit(
        "hub", "upgrade-bundle", "rig-1", "--out", str(stick), "--db", str(hub.db_path),
        "--plain-http", "--json",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    [entry] = json.loads(ok.stdout)["bundles"]
    assert (entry["hostUid"], entry["generation"]) == ("rig-1", 2)


def test_generations_are_compared_within_one_cluster_only(fleet, tmp_path: Path):
    """A host that applied generation 5 of another cluster takes this cluster's generation 2
    (generations count per cluster, as the online agent keys them); the same cluster's
    generation 2 or above is refused as old, by Python and by the device alike."""
    hub, _, token, _ = fleet
    [bundle] = write_upgrade_bundles(
        hub.db_path, tmp_path / "stick", hosts=["rig-1"], options=PLAIN
    )
    cluster = bundle.desired["clusterUid"]
    assert bundle.generation == 2
    for applied, ok in ((f"{cluster}:1", True), (f"{cluster}:2", False),
                        ("other-cluster:5", True), ("5", False), ("", True)):  # fmt: skip
        sh = _sh_check(tmp_path, bundle.path, token, "rig-1", applied)
        assert sh["verdict"] == ("ok" if ok else "refused"), (applied, sh)
        at, _, gen = applied.rpartition(":")
        kwargs = {"applied_generation": int(gen) if gen else None, "applied_cluster": at or None}
        if ok:
            assert read_upgrade_bundle(bundle.path, token=token, host_uid="rig-1", **kwargs)
        else:
            assert f"but {gen} is applied" in sh["rest"]
            with pytest.raises(BundleError, match=f"but {gen} is applied"):
                read_upgrade_bundle(bundle.path, token=token, host_uid="rig-1", **kwargs)
