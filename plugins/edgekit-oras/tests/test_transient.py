"""Transient HTTP faults (503, connection reset) injected by a proxy in front of a real registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from edgekit_oras.client import ConnectionOptions, RetryPolicy
from edgekit_oras.engine import pull_to_layout, push_layout
from edgekit_oras.testing import RegistryServer
from oras_test_helpers import Proxy, skopeo_digest

from edgekit.errors import PublishError


class FaultProxy:
    """Answers 503 to the first request of each method in ``fail_503`` and drops the connection
    on the first of each in ``reset``; forwards everything else to the registry."""

    def __init__(self, upstream: str, fail_503: set[str], reset: set[str]) -> None:
        self.fail_503, self.reset = set(fail_503), set(reset)
        self.injected: list[str] = []
        self.always_503 = False
        self.proxy = Proxy(upstream, intercept=self._intercept)
        self.host = self.proxy.host

    def _intercept(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        if method in self.reset:
            self.reset.discard(method)
            self.injected.append(f"reset {method}")
            return Proxy.RESET
        if self.always_503 or method in self.fail_503:
            self.fail_503.discard(method)
            self.injected.append(f"503 {method}")
            return 503, {}, b""
        return None

    def close(self) -> None:
        self.proxy.close()


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    p = FaultProxy(registry.url, fail_503={"PATCH", "PUT", "GET"}, reset={"HEAD", "POST"})
    yield p
    p.close()


def test_5xx_and_resets_are_retried(
    proxy: FaultProxy, registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    opts = ConnectionOptions(
        plain_http=True, retry=RetryPolicy(attempts=4, initial_delay=0.05, max_delay=0.2)
    )
    result = push_layout(layout, "v1", f"{proxy.host}/edge/os:v1", options=opts)
    assert result.digest == digest
    assert sorted(proxy.injected) == sorted(
        ["503 PATCH", "503 PUT", "503 GET", "reset HEAD", "reset POST"]
    )
    assert skopeo_digest(f"{registry.host}/edge/os:v1", "--tls-verify=false") == digest
    proxy.fail_503, proxy.reset = {"GET"}, {"GET"}
    pulled = pull_to_layout(f"{proxy.host}/edge/os:v1", tmp_path / "pulled", options=opts)
    assert pulled.digest == digest
    assert proxy.injected[-2:] == ["reset GET", "503 GET"]


def test_persistent_5xx_gives_up_boundedly(proxy: FaultProxy, image: tuple[Path, str]) -> None:
    layout, _ = image
    proxy.always_503 = True
    opts = ConnectionOptions(
        plain_http=True, retry=RetryPolicy(attempts=3, initial_delay=0.05, max_delay=0.1)
    )
    with pytest.raises(PublishError, match=r"gave up after 3 attempts.*503") as info:
        push_layout(layout, "v1", f"{proxy.host}/edge/os:v1", options=opts)
    assert "no tag was written" in str(info.value)


def test_download_cut_short_is_retried(
    registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    """A blob GET whose body stops early (Content-Length promised more) is fetched again."""
    layout, digest = image
    plain = ConnectionOptions(plain_http=True)
    push_layout(layout, "v1", f"{registry.host}/edge/os:v1", options=plain)
    cut: list[str] = []

    def truncate(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        if method == "GET" and "/blobs/" in path and not cut:
            cut.append(path)
            data = requests.get(registry.url + path, timeout=10).content
            return 200, {"Content-Length": str(len(data))}, data[: len(data) // 2]
        return None

    proxy = Proxy(registry.url, intercept=truncate)
    try:
        opts = ConnectionOptions(
            plain_http=True, retry=RetryPolicy(attempts=3, initial_delay=0.05), concurrency=1
        )
        pulled = pull_to_layout(f"{proxy.host}/edge/os:v1", tmp_path / "p", options=opts)
    finally:
        proxy.close()
    assert cut
    assert pulled.digest == digest
