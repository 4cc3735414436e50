"""A fleet's site ISOs as one index artifact, against a real docker-registry.

Publishing is incremental (unchanged sites send nothing), a device fetches its own ISO by
site with a Range request, and the forge's per-site publish steps use it end to end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from edgekit_iso.siteiso import write_site_isos
from edgekit_oras import fleet
from edgekit_oras.client import ConnectionOptions, RegistryClient
from edgekit_oras.testing import RegistryServer

from edgekit.errors import PublishError
from edgekit.forge import Forge
from edgekit.oci_ref import Reference

PLAIN = ConnectionOptions(plain_http=True)


def build(
    directory: Path, n: int, changed: dict[int, str] | None = None
) -> list[tuple[str, Path, str]]:
    directory.mkdir(parents=True, exist_ok=True)
    results = write_site_isos(
        (
            directory / f"store-{i:04d}.iso",
            f"#cloud-config\n# store {i} {(changed or {}).get(i, '')}\n" + "x" * 1200,
            None,
        )
        for i in range(n)
    )
    return [(r.path.stem, r.path, f"sha256:{r.sha256}") for r in results]


def index_of(registry: RegistryServer, tag: str) -> dict[str, dict[str, object]]:
    client = RegistryClient(registry.host, PLAIN)
    try:
        found = fleet.read_site_index(client, Reference(registry.host, "fleet/sites", tag))
    finally:
        client.close()
    assert found is not None
    return found[0]


def test_publish_then_fetch_each_site_by_name(registry: RegistryServer, tmp_path: Path):
    isos = build(tmp_path / "sites", 30)
    target = f"{registry.host}/fleet/sites:shop"
    done = fleet.push_site_isos(isos, target, options=PLAIN, chunk_bytes=1 << 20)
    assert done.uploaded_chunks == 4  # 30 ISOs of 128 KiB in chunks of at most 1 MiB
    assert done.uploaded_bytes > 30 * 128 * 1024
    assert set(done.sites) == {site for site, _, _ in isos}
    assert done.sites["store-0003"].reference == target
    assert done.sites["store-0003"].digest == isos[3][2]
    (tmp_path / "out").mkdir()
    for site, path, _digest in isos[::7]:
        got = fleet.pull_site_iso(target, site, tmp_path / "out", options=PLAIN)
        assert got == tmp_path / "out" / f"{site}.iso"
        assert got.read_bytes() == path.read_bytes()
    # The registry holds one manifest: the index artifact.
    r = requests.get(
        f"{registry.url}/v2/fleet/sites/manifests/shop",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    doc = r.json()
    assert doc["artifactType"] == "application/vnd.edgekit.site-isos.v1"
    assert doc["config"]["mediaType"] == "application/vnd.edgekit.site-index.v1+json"
    assert len(doc["layers"]) == 4
    assert r.headers["Docker-Content-Digest"] == done.digest
    # The registry honours the Range request a device sends (206, exactly one ISO).
    entry = index_of(registry, "shop")["store-0010"]
    start, size = int(str(entry["offset"])), int(str(entry["size"]))
    r = requests.get(
        f"{registry.url}/v2/fleet/sites/blobs/{entry['chunk']}",
        headers={"Range": f"bytes={start}-{start + size - 1}"},
        timeout=10,
    )
    assert r.status_code == 206
    assert r.content == isos[10][1].read_bytes()
    with pytest.raises(PublishError, match="has no site 'store-9999'"):
        fleet.pull_site_iso(target, "store-9999", tmp_path / "out", options=PLAIN)


def test_republishing_sends_only_what_changed(registry: RegistryServer, tmp_path: Path):
    target = f"{registry.host}/fleet/sites:shop"
    isos = build(tmp_path / "v1", 20)
    fleet.push_site_isos(isos, target, options=PLAIN, chunk_bytes=1 << 20)
    before = index_of(registry, "shop")

    again = fleet.push_site_isos(isos, target, options=PLAIN)
    assert (again.uploaded_bytes, again.uploaded_chunks, again.digest) == (0, 0, "")
    assert again.unchanged_sites == 20

    changed = build(tmp_path / "v2", 20, {5: "new proxy"})
    assert changed[5][2] != isos[5][2]
    third = fleet.push_site_isos(changed, target, options=PLAIN)
    assert third.uploaded_chunks == 1
    assert third.unchanged_sites == 19
    assert third.sites["store-0005"].uploaded_bytes == changed[5][1].stat().st_size
    assert sum(r.uploaded_bytes for r in third.sites.values()) == changed[5][1].stat().st_size
    after = index_of(registry, "shop")
    assert {k: v for k, v in after.items() if k != "store-0005"} == {
        k: v for k, v in before.items() if k != "store-0005"
    }
    got = fleet.pull_site_iso(target, "store-0005", tmp_path / "five.iso", options=PLAIN)
    assert b"new proxy" in got.read_bytes()

    fewer = fleet.push_site_isos(changed[:-1], target, options=PLAIN)
    assert fewer.uploaded_chunks == 0
    assert "store-0019" not in index_of(registry, "shop")


def test_a_site_iso_changed_after_its_build_is_refused(registry: RegistryServer, tmp_path: Path):
    target = f"{registry.host}/fleet/sites:shop"
    isos = build(tmp_path / "sites", 3)
    isos[1][1].write_bytes(b"tampered")
    with pytest.raises(PublishError, match=r"site ISO of store-0001 .* no longer matches"):
        fleet.push_site_isos(isos, target, options=PLAIN)
    r = requests.head(f"{registry.url}/v2/fleet/sites/manifests/shop", timeout=10)
    assert r.status_code == 404  # nothing was tagged


def test_an_unreachable_registry_is_one_clear_error(tmp_path: Path):
    from edgekit_oras.client import RetryPolicy
    from edgekit_oras.testing import free_port

    isos = build(tmp_path / "sites", 2)
    quick = ConnectionOptions(plain_http=True, retry=RetryPolicy(attempts=2, initial_delay=0.01))
    with pytest.raises(PublishError, match=r"cannot reach .*site index was not changed"):
        fleet.push_site_isos(isos, f"127.0.0.1:{free_port()}/fleet/sites:shop", options=quick)


def test_a_local_layout_holds_the_same_index(tmp_path: Path):
    target = f"oci:{tmp_path / 'layout'}:sites-shop"
    isos = build(tmp_path / "sites", 12)
    done = fleet.push_site_isos(isos, target, chunk_bytes=1 << 20)
    assert done.uploaded_chunks == 2
    got = fleet.pull_site_iso(target, "store-0009", tmp_path / "nine.iso")
    assert got.read_bytes() == isos[9][1].read_bytes()
    assert fleet.push_site_isos(isos, target).uploaded_bytes == 0
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "sites-shop"


def test_a_registry_ignoring_range_still_gives_the_right_bytes() -> None:
    data = bytes(range(256)) * 40
    chunks = iter([data[:1000], data[1000:5000], data[5000:]])
    assert fleet._slice(chunks, 900, 3000) == data[900:3900]


def test_a_thousand_sites_publish_within_five_seconds(registry: RegistryServer, tmp_path: Path):
    isos = build(tmp_path / "sites", 1000)
    best = float("inf")
    for attempt in range(2):  # best of two: the machine is shared
        start = time.perf_counter()
        done = fleet.push_site_isos(isos, f"{registry.host}/fleet/sites:t{attempt}", options=PLAIN)
        best = min(best, time.perf_counter() - start)
        assert len(done.sites) == 1000
    assert best <= 5.0
    again = fleet.push_site_isos(isos, f"{registry.host}/fleet/sites:t0", options=PLAIN)
    assert again.uploaded_bytes == 0


FORGE = """
name: shop
backends: {isoAssembler: pycdlib, publisher: oras}
siteInventory: ./sites.csv
registry: {target: "HOST/fleet", plainHttp: true}
"""


def test_the_forge_republishes_one_changed_site(registry: RegistryServer, tmp_path: Path):
    (tmp_path / "edgeforge.yaml").write_text(FORGE.replace("HOST", registry.host))
    (tmp_path / "sites.csv").write_text("name,tags\nstore-1,city=oslo\nstore-2,\nstore-3,\n")
    forge = Forge.load(tmp_path / "edgeforge.yaml", output_dir=tmp_path / "dist")
    first = forge.run()
    assert len(first.ran) == 6
    assert first.plan.step("publish/site-iso/store-1").summary.endswith("(fleet index)")
    (tmp_path / "sites.csv").write_text("name,tags\nstore-1,city=rome\nstore-2,\nstore-3,\n")
    second = forge.run()
    assert second.ran == ("site-iso/store-1", "publish/site-iso/store-1")
    published = second.artifacts["published-site-iso/store-1"]
    assert published.reference == f"{registry.host}/fleet/sites:shop"
    got = fleet.pull_site_iso(published.reference, "store-1", tmp_path / "s1.iso", options=PLAIN)
    assert b"city: rome" in got.read_bytes()
    assert published.digest == second.artifacts["site-iso/store-1"].digest
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    refs = {a["name"]: a.get("reference") for a in manifest["artifacts"]}
    assert refs["published-site-iso/store-2"] == f"{registry.host}/fleet/sites:shop"
    assert forge.run().ran == ()
