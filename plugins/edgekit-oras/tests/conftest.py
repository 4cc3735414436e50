"""Fixtures for edgekit-oras tests (the registry fixtures come from edgekit_oras.testing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from oras_test_helpers import umoci_image


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, str]:
    """A small umoci-built layout tagged ``v1`` (two files); returns (layout, digest)."""
    layout = tmp_path / "layout"
    digest = umoci_image(
        layout,
        "v1",
        {"etc/edgekit/hello.txt": b"hello edge\n", "opt/data.bin": os.urandom(1 << 20)},
        tmp_path,
    )
    return layout, digest
