"""Both transports pass edgekit's transport contract, against a real hub and a directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from edgekit_http import FileTransport, HttpTransport

from edgekit.hub import HubServer
from edgekit.testing import TransportContract


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(access_log=False) as server:
        yield server


class TestHttp(TransportContract):
    backend_class = HttpTransport

    @pytest.fixture
    def endpoint(self, hub: HubServer) -> str:
        return hub.url

    @pytest.fixture
    def token(self, hub: HubServer) -> str:
        created = hub.client().tokens.create("contract")
        assert created.secret is not None
        return created.secret.reveal()


class TestFile(TransportContract):
    backend_class = FileTransport
    state = "pending-import"

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> str:
        media = tmp_path / "media"
        media.mkdir()
        return media.as_uri()

    @pytest.fixture
    def token(self) -> str:
        return "ekt_contract-token"
