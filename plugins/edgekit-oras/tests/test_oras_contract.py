"""The oras publisher passes edgekit's publisher contract: into a layout and a registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgekit_oras.plugin import OrasPublisher
from edgekit_oras.testing import RegistryServer

from edgekit.plugins import RegistryOptions
from edgekit.testing import PublisherContract


class TestOrasIntoALayout(PublisherContract):
    backend_class = OrasPublisher

    @pytest.fixture
    def target(self, tmp_path: Path) -> str:
        return f"oci:{tmp_path / 'registry'}"


class TestOrasIntoARegistry(PublisherContract):
    backend_class = OrasPublisher

    @pytest.fixture
    def target(self, registry: RegistryServer) -> str:
        return f"{registry.host}/edge"

    @pytest.fixture
    def registry_options(self) -> RegistryOptions:
        return RegistryOptions(plain_http=True)
