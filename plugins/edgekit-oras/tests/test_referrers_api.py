"""Registries with the referrers API: no fallback tag is written, and listing uses the API.

distribution 2.8 lacks the API, so a proxy in front of it plays a 1.1 registry: it answers
manifest PUTs carrying a ``subject`` with ``OCI-Subject`` and serves
``GET /v2/<name>/referrers/<digest>`` from what it saw.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgekit_oras.client import ConnectionOptions
from edgekit_oras.engine import list_referrers, push_artifact, push_layout
from edgekit_oras.testing import RegistryServer
from oras_test_helpers import Proxy

from edgekit import oci_types as mt

PLAIN = ConnectionOptions(plain_http=True)


class ReferrersApi:
    def __init__(self, upstream: str) -> None:
        self.index: dict[str, list[dict[str, object]]] = {}
        self.api_calls = 0
        self.proxy = Proxy(upstream, intercept=self._intercept, add_headers=self._add_headers)

    def _intercept(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        m = re.fullmatch(r"/v2/(.+)/referrers/(sha256:[0-9a-f]{64})", path.split("?")[0])
        if method != "GET" or m is None:
            return None
        self.api_calls += 1
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": self.index.get(m[2], [])}
        return 200, {"Content-Type": mt.OCI_INDEX}, json.dumps(doc).encode()

    def _add_headers(self, method: str, path: str, body: bytes, status: int) -> dict[str, str]:
        if method != "PUT" or "/manifests/" not in path or status != 201:
            return {}
        doc = json.loads(body)
        if "subject" not in doc:
            return {}
        subject = doc["subject"]["digest"]
        entry = {
            "mediaType": doc["mediaType"],
            "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "size": len(body),
            "artifactType": doc.get("artifactType"),
            "annotations": doc.get("annotations", {}),
        }
        if entry not in self.index.setdefault(subject, []):
            self.index[subject].append(entry)
        return {"OCI-Subject": subject}


@pytest.fixture
def api(registry: RegistryServer) -> Iterator[ReferrersApi]:
    a = ReferrersApi(registry.url)
    yield a
    a.proxy.close()


def test_referrers_api_is_used_when_present(
    api: ReferrersApi, registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    repo = f"{api.proxy.host}/edge/os"
    push_layout(layout, "v1", f"{repo}:v1", options=PLAIN)
    iso = tmp_path / "i.iso"
    iso.write_bytes(b"iso")
    art = push_artifact(iso, repo, artifact_type=mt.ISO, subject=f"{repo}:v1", options=PLAIN)
    # The registry indexed it itself: no sha256-<hex> fallback tag was written.
    tags = registry.storage / "docker/registry/v2/repositories/edge/os/_manifests/tags"
    assert sorted(p.name for p in tags.iterdir()) == ["v1"]
    found = list_referrers(f"{repo}:v1", options=PLAIN)
    assert [(d.digest, d.artifact_type) for d in found] == [(art.digest, mt.ISO)]
    assert api.api_calls == 1
    # Straight to distribution (no API, no fallback tag): nothing is listed.
    assert list_referrers(f"{registry.host}/edge/os@{digest}", options=PLAIN) == []
