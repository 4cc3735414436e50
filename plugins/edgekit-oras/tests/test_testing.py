"""The registry fixtures themselves: each mode answers as documented."""

from __future__ import annotations

import requests
from edgekit_oras.testing import RegistryServer


def test_plain_registry_answers(registry: RegistryServer) -> None:
    assert requests.get(f"{registry.url}/v2/", timeout=5).status_code == 200


def test_auth_registry_requires_password(auth_registry: RegistryServer) -> None:
    url = f"{auth_registry.url}/v2/"
    assert requests.get(url, timeout=5).status_code == 401
    ok = requests.get(url, timeout=5, auth=(auth_registry.username, auth_registry.password))
    assert ok.status_code == 200


def test_tls_registry_verifies_with_ca(tls_registry: RegistryServer) -> None:
    assert tls_registry.ca_file is not None
    r = requests.get(f"{tls_registry.url}/v2/", timeout=5, verify=str(tls_registry.ca_file))
    assert r.status_code == 200


def test_restart_keeps_port_and_storage(registry: RegistryServer) -> None:
    started = requests.post(f"{registry.url}/v2/x/blobs/uploads/", timeout=5)
    assert started.status_code == 202
    port = registry.port
    registry.restart()
    assert registry.port == port
    # The upload session lives in storage, so it survives the restart.
    assert requests.get(started.headers["Location"], timeout=5).status_code == 204
    assert requests.get(f"{registry.url}/v2/", timeout=5).status_code == 200
