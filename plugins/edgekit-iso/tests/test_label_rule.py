"""The installer engine and the forge model accept exactly the same volume labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgekit_iso.spec import InstallerIsoSpec

from edgekit.errors import BuildError
from edgekit.model import IsoSpec, ModelValueError

LABELS = ["COS_LIVE", "X" * 32, "A1_B2", "cos_live", "COS-LIVE", "COS.LIVE", "X" * 33, "", "C S"]


def _model_accepts(label: str) -> bool:
    try:
        IsoSpec("inst", "img", volume_label=label)
    except ModelValueError:
        return False
    return True


def _engine_accepts(label: str) -> bool:
    spec = InstallerIsoSpec(Path("k"), Path("i"), "#cloud-config\n", volume_label=label)
    try:
        spec.check_label()
    except BuildError:
        return False
    return True


@pytest.mark.parametrize("label", LABELS)
def test_one_volume_label_rule(label: str) -> None:
    assert _engine_accepts(label) == _model_accepts(label)


def test_the_rule_is_iso9660_d_characters() -> None:
    assert [label for label in LABELS if _engine_accepts(label)] == ["COS_LIVE", "X" * 32, "A1_B2"]
