"""Faults: registry restarts mid-push, dead registries, bad input; nothing is half-tagged."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from edgekit_oras.client import ConnectionOptions, RetryPolicy
from edgekit_oras.engine import pull_to_layout, push_artifact, push_layout
from edgekit_oras.progress import BlobDone, BlobProgress, BlobStarted, ProgressEvent
from edgekit_oras.testing import RegistryServer, free_port
from oras_test_helpers import layout_digest, run, skopeo_digest, umoci_image

from edgekit.errors import ConfigError, PublishError

FAST = RetryPolicy(attempts=3, initial_delay=0.05, max_delay=0.2)
PLAIN = ConnectionOptions(plain_http=True)


def _tags(server: RegistryServer, repo: str) -> list[str]:
    d = server.storage / "docker/registry/v2/repositories" / repo / "_manifests/tags"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture
def big_image(tmp_path: Path) -> tuple[Path, str]:
    """An image with three random (incompressible) layers of 4 MiB."""
    layout = tmp_path / "big"
    umoci_image(layout, "v1", {"layer0/data.bin": os.urandom(4 << 20)}, tmp_path)
    for i in (1, 2):
        tree = tmp_path / f"t{i}"
        (tree / f"layer{i}").mkdir(parents=True)
        (tree / f"layer{i}" / "data.bin").write_bytes(os.urandom(4 << 20))
        run("umoci", "insert", "--image", f"{layout}:v1", str(tree), "/")
    return layout, layout_digest(layout, "v1")


def test_registry_restart_mid_push_is_retried_and_resumed(
    registry: RegistryServer, big_image: tuple[Path, str]
) -> None:
    layout, digest = big_image
    restarted = threading.Event()
    sent = [0]

    def chaos(event: ProgressEvent) -> None:
        # Kill the registry in the middle of the first blob, bring it back shortly after.
        if isinstance(event, BlobProgress):
            sent[0] += event.sent
            if event.done >= (2 << 20) and not restarted.is_set():
                restarted.set()
                registry.stop()
                threading.Timer(0.5, registry.start).start()

    opts = ConnectionOptions(
        plain_http=True,
        progress=chaos,
        chunk_size=1 << 20,
        concurrency=1,
        retry=RetryPolicy(attempts=8, initial_delay=0.2, max_delay=1.0),
    )
    result = push_layout(layout, "v1", f"{registry.host}/edge/os:v1", options=opts)
    assert restarted.is_set()
    assert result.digest == digest
    assert skopeo_digest(f"{registry.host}/edge/os:v1", "--tls-verify=false") == digest
    # The upload session survived the restart and was resumed: only the chunk in flight was
    # sent twice (a restart from scratch would resend the 2 MiB already sent).
    blobs = json.loads((layout / "blobs/sha256" / digest[7:]).read_text())
    total = sum(d["size"] for d in [blobs["config"], *blobs["layers"]])
    assert total < sent[0] <= total + (1 << 20)


def test_registry_dying_mid_push_reports_blobs_and_no_tag(
    registry: RegistryServer, big_image: tuple[Path, str]
) -> None:
    layout, _ = big_image
    done: list[str] = []

    def die_after_first(event: ProgressEvent) -> None:
        if isinstance(event, BlobDone):
            done.append(event.digest)
            registry.stop()

    opts = ConnectionOptions(plain_http=True, progress=die_after_first, concurrency=1, retry=FAST)
    start = time.monotonic()
    with pytest.raises(PublishError) as info:
        push_layout(layout, "v1", f"{registry.host}/edge/os:v1", options=opts)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "no tag was written" in message
    assert "cannot reach" in message
    assert f"transferred or already present (1): {done[0]}" in message
    assert "not transferred (3)" in message  # two layers and the config
    registry.start()
    assert _tags(registry, "edge/os") == []


def test_dead_registry_fails_quickly_and_clearly(image: tuple[Path, str]) -> None:
    layout, _ = image
    host = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(PublishError) as info:
        push_layout(
            layout, "v1", f"{host}/edge/os", options=ConnectionOptions(plain_http=True, retry=FAST)
        )
    assert time.monotonic() - start < 5
    assert f"cannot reach {host}: connection refused" in str(info.value)
    assert "no tag was written" in str(info.value)


def test_missing_local_blob_pushes_nothing(
    registry: RegistryServer, image: tuple[Path, str]
) -> None:
    layout, digest = image
    manifest = json.loads((layout / "blobs/sha256" / digest[7:]).read_text())
    layer = manifest["layers"][0]["digest"]
    (layout / "blobs/sha256" / layer[7:]).unlink()
    with pytest.raises(PublishError, match=f"incomplete: blob.*{layer}.*nothing was pushed"):
        push_layout(layout, "v1", f"{registry.host}/edge/os", options=PLAIN)
    assert _tags(registry, "edge/os") == []


def test_invalid_reference_and_missing_file(image: tuple[Path, str], tmp_path: Path) -> None:
    layout, _ = image
    with pytest.raises(ConfigError, match="invalid OCI reference"):
        push_layout(layout, "v1", "not a reference")
    with pytest.raises(PublishError, match="does not exist"):
        push_artifact(
            tmp_path / "nope.iso", "oci:" + str(tmp_path / "s"), artifact_type="application/x-test"
        )
    with pytest.raises(PublishError, match="tag 'nope' not found"):
        push_layout(layout, "nope", f"oci:{tmp_path / 's'}")


def test_failed_pull_leaves_nothing(registry: RegistryServer, tmp_path: Path) -> None:
    dest = tmp_path / "never"
    with pytest.raises(PublishError, match="not found"):
        pull_to_layout(f"{registry.host}/no/such:v1", dest, options=PLAIN)
    assert not dest.exists()


def test_tampered_blob_is_rejected_on_pull(
    registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    push_layout(layout, "v1", f"{registry.host}/edge/os", options=PLAIN)
    manifest = json.loads((layout / "blobs/sha256" / digest[7:]).read_text())
    layer = manifest["layers"][0]["digest"][7:]
    # Corrupt the registry's stored copy of the layer (same length, one byte flipped).
    data = registry.storage / "docker/registry/v2/blobs/sha256" / layer[:2] / layer / "data"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    dest = tmp_path / "pulled"
    opts = ConnectionOptions(plain_http=True, retry=FAST)
    with pytest.raises(PublishError, match="corrupt or tampered"):
        pull_to_layout(f"{registry.host}/edge/os:v1", dest, options=opts)
    assert not dest.exists()


def test_blobs_upload_in_parallel_bounded(
    registry: RegistryServer, big_image: tuple[Path, str]
) -> None:
    layout, _ = big_image
    lock = threading.Lock()
    in_flight: list[int] = [0]
    peak: list[int] = [0]

    def watch(event: ProgressEvent) -> None:
        with lock:
            if isinstance(event, BlobStarted):
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            elif isinstance(event, BlobDone):
                in_flight[0] -= 1

    opts = ConnectionOptions(plain_http=True, progress=watch, concurrency=2, chunk_size=1 << 20)
    push_layout(layout, "v1", f"{registry.host}/edge/par:v1", options=opts)
    assert peak[0] == 2
