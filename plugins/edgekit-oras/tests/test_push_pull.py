"""Push/pull of images and artifacts against a real docker-registry, verified with skopeo/umoci."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from edgekit_oras.client import ConnectionOptions
from edgekit_oras.engine import (
    list_referrers,
    pull,
    pull_artifact,
    pull_to_layout,
    push_artifact,
    push_layout,
)
from edgekit_oras.progress import BlobDone, BlobProgress, BlobStarted, ProgressEvent
from edgekit_oras.testing import RegistryServer
from oras_test_helpers import add_index, layout_digest, run, skopeo_digest, umoci_image

from edgekit import oci_types as mt

PLAIN = ConnectionOptions(plain_http=True)


def test_push_single_arch_byte_exact_and_usable(
    registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    events: list[ProgressEvent] = []
    opts = ConnectionOptions(plain_http=True, progress=events.append, chunk_size=256 << 10)
    result = push_layout(layout, "v1", f"{registry.host}/edge/provider:v1", options=opts)

    assert result.digest == digest
    assert skopeo_digest(f"{registry.host}/edge/provider:v1", "--tls-verify=false") == digest
    inspect = json.loads(
        run("skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/edge/provider:v1")
    )
    assert inspect["Digest"] == digest
    # Progress: every uploaded byte reported, each blob started and done.
    sent = sum(e.sent for e in events if isinstance(e, BlobProgress))
    assert sent == result.uploaded_bytes > 1_000_000
    started = {e.digest for e in events if isinstance(e, BlobStarted)}
    assert started == {e.digest for e in events if isinstance(e, BlobDone)}
    assert len(started) == result.uploaded_blobs

    # Copy it back with skopeo and unpack it with umoci: the content is intact.
    back = tmp_path / "back"
    run(
        "skopeo", "copy", "--src-tls-verify=false",
        f"docker://{registry.host}/edge/provider:v1", f"oci:{back}:v1",
    )  # fmt: skip
    run("umoci", "unpack", "--image", f"{back}:v1", str(tmp_path / "bundle"))
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "etc/edgekit/hello.txt").read_bytes() == b"hello edge\n"

    # Pushing again uploads nothing: every blob answers HEAD.
    again = push_layout(layout, "v1", f"{registry.host}/edge/provider:v1", options=PLAIN)
    assert again.uploaded_bytes == 0
    assert again.skipped_blobs == result.uploaded_blobs


def test_push_multi_arch_index_byte_exact(registry: RegistryServer, tmp_path: Path) -> None:
    layout = tmp_path / "multi"
    umoci_image(layout, "amd64", {"arch": b"amd64\n"}, tmp_path)
    umoci_image(layout, "arm64", {"arch": b"arm64\n"}, tmp_path)
    digest = add_index(layout, "v2", {"amd64": "amd64", "arm64": "arm64"})

    result = push_layout(layout, "v2", f"{registry.host}/edge/multi", options=PLAIN)
    assert result.media_type == mt.OCI_INDEX
    assert result.digest == digest
    assert skopeo_digest(f"{registry.host}/edge/multi:v2", "--tls-verify=false") == digest
    for arch in ("amd64", "arm64"):
        child = layout_digest(layout, arch)
        assert skopeo_digest(f"{registry.host}/edge/multi@{child}", "--tls-verify=false") == child
        out = tmp_path / f"out-{arch}"
        run(
            "skopeo", "copy", "--src-tls-verify=false", "--override-arch", arch,
            f"docker://{registry.host}/edge/multi:v2", f"oci:{out}:x",
        )  # fmt: skip
        run("umoci", "unpack", "--image", f"{out}:x", str(tmp_path / f"b-{arch}"))
        assert (tmp_path / f"b-{arch}" / "rootfs" / "arch").read_text() == f"{arch}\n"

    # Pull it back into a fresh layout: same index digest, both children and their blobs.
    pulled = pull_to_layout(f"{registry.host}/edge/multi:v2", tmp_path / "pulled", options=PLAIN)
    assert pulled.digest == digest
    assert layout_digest(tmp_path / "pulled", "v2") == digest
    run("umoci", "unpack", "--image", f"{layout}:amd64", str(tmp_path / "check"))


def test_cross_repository_mount(registry: RegistryServer, image: tuple[Path, str]) -> None:
    layout, digest = image
    first = push_layout(layout, "v1", f"{registry.host}/team-a/os", options=PLAIN)
    second = push_layout(layout, "v1", f"{registry.host}/team-b/os", options=PLAIN)
    assert second.digest == digest
    assert second.uploaded_bytes == 0
    assert second.mounted_blobs == first.uploaded_blobs
    assert skopeo_digest(f"{registry.host}/team-b/os:v1", "--tls-verify=false") == digest


def test_pull_to_layout_verifies_and_caches(
    registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    push_layout(layout, "v1", f"{registry.host}/base/os:v1", options=PLAIN)
    dest = tmp_path / "base"
    first = pull_to_layout(f"{registry.host}/base/os:v1", dest, "base", options=PLAIN)
    assert first.digest == digest
    assert first.fetched_blobs >= 2
    run("umoci", "unpack", "--image", f"{dest}:base", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle/rootfs/etc/edgekit/hello.txt").exists()

    second = pull_to_layout(f"{registry.host}/base/os@{digest}", dest, "again", options=PLAIN)
    assert second.fetched_blobs == 0
    assert second.cached_blobs == first.fetched_blobs
    assert layout_digest(dest, "again") == digest


def test_artifact_with_subject_and_referrers_fallback(
    registry: RegistryServer,
    image: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layout, digest = image
    repo = f"{registry.host}/edge/provider"
    push_layout(layout, "v1", f"{repo}:v1", options=PLAIN)
    iso = tmp_path / "installer.iso"
    iso.write_bytes(os.urandom(3 << 20))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pushed = push_artifact(
        iso,
        f"{repo}:installer",
        artifact_type=mt.ISO,
        subject=f"{repo}:v1",
        profile="retail",
        site="store-42",
        image_digest=digest,
        options=PLAIN,
    )
    raw = json.loads(
        run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{repo}:installer")
    )
    assert raw["artifactType"] == mt.ISO
    assert raw["config"] == {
        "mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2, "data": "e30=",
    }  # fmt: skip
    assert raw["subject"]["digest"] == digest
    assert raw["layers"][0]["annotations"] == {mt.TITLE: "installer.iso"}
    assert raw["annotations"][mt.CREATED] == "2023-11-14T22:13:20Z"
    assert raw["annotations"][mt.PROFILE] == "retail"
    assert raw["annotations"][mt.IMAGE_DIGEST] == digest

    checksum = tmp_path / "installer.iso.sha256"
    checksum.write_text("abc  installer.iso\n")
    push_artifact(checksum, repo, artifact_type=mt.CHECKSUM, subject=digest, options=PLAIN)

    # distribution 2.8 has no referrers API: the sha256-<hex> tag index holds both.
    refs = list_referrers(f"{repo}:v1", options=PLAIN)
    assert {r.artifact_type for r in refs} == {mt.ISO, mt.CHECKSUM}
    assert pushed.digest in {r.digest for r in refs}
    fallback = json.loads(
        run(
            "skopeo", "inspect", "--raw", "--tls-verify=false",
            f"docker://{repo}:sha256-{digest[7:]}",
        )
    )  # fmt: skip
    assert len(fallback["manifests"]) == 2
    assert [
        r.digest for r in list_referrers(f"{repo}@{digest}", artifact_type=mt.ISO, options=PLAIN)
    ] == [pushed.digest]

    # Pull the ISO back to a directory: named by its title, byte-identical.
    (tmp_path / "downloads").mkdir()
    out = pull_artifact(f"{repo}:installer", tmp_path / "downloads", options=PLAIN)
    assert out.path == tmp_path / "downloads" / "installer.iso"
    assert out.path.read_bytes() == iso.read_bytes()
    assert [p.name for p in out.path.parent.iterdir()] == ["installer.iso"]


def test_embedded_layout_target(image: tuple[Path, str], tmp_path: Path) -> None:
    layout, digest = image
    store = tmp_path / "store"
    pushed = push_layout(layout, "v1", f"oci:{store}:release", options=None)
    assert pushed.digest == digest
    assert layout_digest(store, "release") == digest
    run("umoci", "unpack", "--image", f"{store}:release", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle/rootfs/etc/edgekit/hello.txt").exists()

    iso = tmp_path / "site.iso"
    iso.write_bytes(b"ISO" * 1000)
    art = push_artifact(
        iso, f"oci:{store}", artifact_type=mt.SITE_ISO, subject=f"oci:{store}:release"
    )
    refs = list_referrers(f"oci:{store}:release")
    assert [(r.digest, r.artifact_type) for r in refs] == [(art.digest, mt.SITE_ISO)]
    got = pull_artifact(f"oci:{store}@{art.digest}", tmp_path / "site-copy.iso")
    assert got.path.read_bytes() == iso.read_bytes()

    copy = pull_to_layout(f"oci:{store}:release", tmp_path / "copy", "x")
    assert layout_digest(tmp_path / "copy", "x") == digest == copy.digest
    # skopeo reads the layout store too.
    out = run("skopeo", "inspect", f"oci:{store}:release")
    assert json.loads(out)["Digest"] == digest


def test_pull_dispatches_on_content(
    registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    repo = f"{registry.host}/edge/mixed"
    push_layout(layout, "v1", f"{repo}:os", options=PLAIN)
    bundle = tmp_path / "bundle.tar"
    bundle.write_bytes(b"content bundle")
    push_artifact(bundle, f"{repo}:bundle", artifact_type=mt.CONTENT_BUNDLE, options=PLAIN)
    got = pull(f"{repo}:bundle", tmp_path / "b.tar", options=PLAIN)
    assert got.path.read_bytes() == b"content bundle"
    img = pull(f"{repo}:os", tmp_path / "img", options=PLAIN)
    assert img.digest == digest
    assert layout_digest(tmp_path / "img", "os") == digest
