"""Where ``pull_site_iso`` writes: a directory named with a trailing ``/`` that does not
exist yet is a directory (``<site>.iso`` in it), as docs/site-isos.md shows with ``"out/"``,
not a file named ``out``. Against a local OCI layout (no registry needed)."""

from __future__ import annotations

from pathlib import Path

from edgekit_iso.siteiso import write_site_isos
from edgekit_oras import fleet


def _published(tmp_path: Path) -> tuple[str, Path]:
    [result] = write_site_isos([(tmp_path / "store-0042.iso", "#cloud-config\n", None)])
    target = f"oci:{tmp_path / 'layout'}:sites-shop"
    fleet.push_site_isos([("store-0042", result.path, f"sha256:{result.sha256}")], target)
    return target, result.path


def test_a_new_directory_with_a_trailing_slash_gets_the_site_iso(tmp_path: Path) -> None:
    target, iso = _published(tmp_path)
    got = fleet.pull_site_iso(target, "store-0042", f"{tmp_path / 'out'}/")
    assert got == tmp_path / "out" / "store-0042.iso"
    assert got.read_bytes() == iso.read_bytes()


def test_a_path_without_a_slash_is_still_the_file(tmp_path: Path) -> None:
    target, iso = _published(tmp_path)
    got = fleet.pull_site_iso(target, "store-0042", tmp_path / "stick.iso")
    assert got == tmp_path / "stick.iso"
    assert got.read_bytes() == iso.read_bytes()
