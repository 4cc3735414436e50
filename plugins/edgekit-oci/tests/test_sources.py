"""Sources: URL downloads pinned by sha256 (from a local HTTP server), local paths, artifacts."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from edgekit_oci.sources import (
    LocalSource,
    OciArtifactSource,
    SourceCache,
    UrlSource,
    redact_url,
)

from edgekit.errors import SourceError


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests_seen: list[str]

    def do_GET(self) -> None:
        self.requests_seen.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, directory served, request paths seen) of a server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    seen: list[str] = []
    handler = type("H", (_Handler,), {"requests_seen": seen})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_download_verified_and_cached(tmp_path: Path, served: tuple[str, Path, list[str]]) -> None:
    base, root, seen = served
    data = os.urandom(3 << 20)
    (root / "k3s").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    cache = SourceCache(tmp_path / "cache")
    path = cache.fetch(UrlSource(f"{base}/k3s", digest))
    assert path == cache.cached_path(digest)
    assert path.read_bytes() == data
    again = cache.fetch(UrlSource(f"{base}/k3s", "sha256:" + digest))
    assert again == path
    assert seen == ["/k3s"]  # the second fetch came from the cache


def test_wrong_sha256_leaves_nothing(tmp_path: Path, served: tuple[str, Path, list[str]]) -> None:
    base, root, _ = served
    (root / "k3s").write_bytes(b"tampered")
    expected = hashlib.sha256(b"original").hexdigest()
    actual = hashlib.sha256(b"tampered").hexdigest()
    cache = SourceCache(tmp_path / "cache")
    with pytest.raises(SourceError) as info:
        cache.fetch(UrlSource(f"{base}/k3s", expected))
    message = str(info.value)
    assert expected in message
    assert actual in message
    assert f"{base}/k3s" in message
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_http_error_and_unreachable(tmp_path: Path, served: tuple[str, Path, list[str]]) -> None:
    base, _, _ = served
    cache = SourceCache(tmp_path / "cache", timeout=5)
    with pytest.raises(SourceError, match="HTTP 404"):
        cache.fetch(UrlSource(f"{base}/missing", "0" * 64))
    with pytest.raises(SourceError, match="could not connect to the server") as info:
        cache.fetch(UrlSource("http://user:hunter2@127.0.0.1:9/x?token=s3cret", "0" * 64))
    assert "hunter2" not in str(info.value)
    assert "s3cret" not in str(info.value)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_bad_sha256_is_rejected_up_front() -> None:
    with pytest.raises(SourceError, match="64 lowercase hex"):
        UrlSource("http://127.0.0.1/x", "abc")


def test_redact_url() -> None:
    assert redact_url("https://u:p@example.com:8443/a/b?sig=1") == "https://example.com:8443/a/b?…"


def test_local_source(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path / "cache")
    (tmp_path / "dir").mkdir()
    assert cache.fetch(LocalSource(tmp_path / "dir")) == tmp_path / "dir"
    with pytest.raises(SourceError, match="does not exist"):
        cache.fetch(LocalSource(tmp_path / "nope"))


def test_artifact_source_needs_a_fetcher(tmp_path: Path) -> None:
    source = OciArtifactSource("registry.example/packs/k3s:1.30")
    with pytest.raises(SourceError, match="no artifact fetcher"):
        SourceCache(tmp_path / "c1").fetch(source)

    def fetcher(reference: str, dest: Path) -> Path:
        (dest / "k3s").write_bytes(reference.encode())
        return dest / "k3s"

    path = SourceCache(tmp_path / "c2", artifact_fetcher=fetcher).fetch(source)
    assert path.read_bytes() == b"registry.example/packs/k3s:1.30"
