"""Model objects render in Jupyter as compact, escaped, bounded HTML (edgekit/model/_html.py)."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

import edgekit as ek
from edgekit import model
from edgekit.forge import Forge


def _text(html: str) -> str:
    """The HTML without its tags (what a reader sees)."""
    return re.sub(r"<[^>]+>", "", html)


def test_every_model_class_renders_in_a_notebook() -> None:
    classes = [v for v in vars(model).values() if isinstance(v, type) and attrs.has(v)]
    assert len(classes) > 40
    assert [c.__name__ for c in classes if not hasattr(c, "_repr_html_")] == []


def test_a_rollout_shows_what_was_set_under_the_file_keys() -> None:
    rollout = ek.Rollout(
        "retail-1.1.0",
        ek.ProfileRef("retail", "1.1.0"),
        clusters=ek.Selector(tags={"region": "us-west"}),
        waves=(ek.Wave("canary", clusters="store-0005"), ek.Wave("ten", percent=10)),
        max_unavailable=2,
        gate=ek.HealthGate(soak="5m", checks=["smoke"]),
    )
    html = rollout._repr_html_()
    text = _text(html)
    assert text.startswith("Rollout retail-1.1.0")
    assert "maxUnavailable2" in text  # the file's key, not max_unavailable
    assert "ProfileRef retail 1.1.0" in text
    assert "Wave canary (clusters: store-0005)" in text
    assert "Wave ten (percent: 10)" in text
    assert "soak5m" in text
    assert "GateCheck smoke" in text
    # Defaults are left out: nothing about onFailure, approveEachWave or the gate's timeout.
    assert "onFailure" not in text
    assert "approveEachWave" not in text
    assert "timeout" not in text
    assert "<details>" in html  # nested objects fold


def test_values_are_escaped_and_secrets_never_shown() -> None:
    pack = ek.Pack(
        "shop", model.Layer.ADDON, "1.0.0", values={"banner": "<script>alert(1)</script>"}
    )
    html = pack._repr_html_()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    token = model.RegistrationToken("store-1", model.Secret("s3cr3t-registration-value"))
    html = token._repr_html_()
    assert "s3cr3t" not in html
    assert "value***" in _text(html)


def test_a_forge_of_a_thousand_sites_renders_in_bounded_size() -> None:
    sites = tuple(ek.Site(f"store-{i:04d}", tags={"region": "eu"}) for i in range(1000))
    html = model.Forge("fleet", sites=sites)._repr_html_()
    assert "1,000 Site" in html
    assert "and 988 more" in html
    assert "store-0011" in html
    assert "store-0012" not in html
    assert len(html) < 6_000


def test_a_loaded_forge_shows_its_counts_without_reading_anything(tmp_path: Path) -> None:
    (tmp_path / "sites.csv").write_text("name,tags\nstore-1,region=eu\nstore-2,region=us\n")
    (tmp_path / "k8s").mkdir()
    (tmp_path / "edgeforge.yaml").write_text(
        "name: fleet\nsiteInventory: ./sites.csv\nprofiles:\n  - name: p\n    version: 1.0.0\n"
        '    packs:\n      - {name: os, layer: os, version: "1"}\n'
        '      - {name: k, layer: k8s, version: "1.30.4", source: {path: ./k8s}}\n'
    )
    forge = Forge.load(tmp_path / "edgeforge.yaml", output_dir=tmp_path / "dist")
    (tmp_path / "sites.csv").unlink()  # rendering must not read the inventory again
    text = _text(forge._repr_html_())
    assert text.startswith("Forge fleet: 1 profile(s), 0 provider image(s), 2 site(s)")
    assert f"output {tmp_path / 'dist'}" in text
    assert "siteInventory./sites.csv" in text
