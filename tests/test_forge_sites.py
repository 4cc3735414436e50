"""Per-site steps, inputs read again by a loaded Forge, content-true keys, fleet rendering.

Uses the small real plugins of tests/test_forge.py (they write real files), with the
sites coming from an inventory CSV as a fleet's would.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress
from test_forge import CALLS, TinyPlugin

from edgekit.forge import DigestCache, Forge, StepFinished
from edgekit.forge import inputs as inputs_module
from edgekit.plugins import PluginManager

FORGE = """
name: fleet
backends: {imageBuilder: tiny, isoAssembler: tiny-iso, publisher: tiny-pub}
profiles:
  - name: p
    version: 1.0.0
    packs:
      - {name: os, layer: os, version: "1"}
      - {name: k8s, layer: k8s, version: "1.30.4", source: {path: ./k8s}}
images:
  - name: img
    profile: p
    os: {distribution: debian, version: "12"}
    kubernetes: {distribution: k3s, version: "1.30.4"}
    overlays: [{source: ./overlay.txt, target: /etc/overlay}]
    repo: edge/img
iso: {name: inst, image: img, userData: ./user-data.yaml}
siteInventory: ./sites.csv
registry: {target: "127.0.0.1:5000/fleet"}
"""


def inventory(n: int, changed: dict[int, str] | None = None) -> str:
    rows = [f"store-{i:03d},city={(changed or {}).get(i, 'oslo')}" for i in range(n)]
    return "name,tags\n" + "\n".join(rows) + "\n"


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "overlay.txt").write_text("hello")
    (tmp_path / "k8s").write_text("a placeholder Kubernetes binary")
    (tmp_path / "agent.sh").write_text("#!/bin/sh\necho agent\n")
    (tmp_path / "user-data.yaml").write_text("#cloud-config\ninstall: {poweroff: true}\n")
    (tmp_path / "sites.csv").write_text(inventory(5))
    (tmp_path / "edgeforge.yaml").write_text(FORGE)
    monkeypatch.chdir(tmp_path)
    CALLS.clear()
    return tmp_path


@pytest.fixture
def plugins(fleet: Path, edgekit_plugins: PluginManager, register_plugin: Any) -> PluginManager:
    register_plugin(TinyPlugin(fleet / "agent.sh"), name="tiny")
    return edgekit_plugins


def load(fleet: Path, plugins: PluginManager) -> Forge:
    return Forge.load(fleet / "edgeforge.yaml", plugins=plugins)


def will_run(forge: Forge) -> dict[str, str]:
    return {s.id: s.reason for s in forge.plan().steps if not s.fresh}


def test_changing_one_row_rebuilds_and_republishes_that_site_only(
    fleet: Path, plugins: PluginManager
):
    forge = load(fleet, plugins)
    first = forge.run()
    assert {s.reason for s in first.plan.steps} == {"new"}
    (fleet / "sites.csv").write_text(inventory(5, {2: "rome"}))
    # The same Forge object sees the edit: the inventory is read again.
    assert will_run(forge) == {
        "site-iso/store-002": "changed input",
        "publish/site-iso/store-002": "changed input",
    }
    CALLS.clear()
    result = forge.run()
    assert result.ran == ("site-iso/store-002", "publish/site-iso/store-002")
    assert CALLS == [
        "sites:1",
        "push-artifact:127.0.0.1:5000/fleet/sites:store-002:"
        "application/vnd.edgekit.site-iso.v1:subject=None",
    ]
    assert "city: rome" in (fleet / "dist" / "sites" / "store-002.iso").read_text()
    manifest = json.loads((fleet / "dist" / "manifest.json").read_text())
    steps = {a["name"]: a["step"] for a in manifest["artifacts"]}
    for i in range(5):  # every site's artifact, built and published, by its own step
        assert steps[f"site-iso/store-{i:03d}"] == f"site-iso/store-{i:03d}"
        assert steps[f"published-site-iso/store-{i:03d}"] == f"publish/site-iso/store-{i:03d}"


def test_a_new_site_is_new_and_a_missing_output_says_so(fleet: Path, plugins: PluginManager):
    forge = load(fleet, plugins)
    forge.run()
    (fleet / "sites.csv").write_text(inventory(6))
    (fleet / "dist" / "sites" / "store-001.iso").unlink()
    assert will_run(forge) == {
        "site-iso/store-005": "new",
        "publish/site-iso/store-005": "new",
        "site-iso/store-001": "output missing",
        "publish/site-iso/store-001": "output missing",
    }
    reasons = {s.reason for s in forge.plan(no_cache=True).steps}
    assert reasons == {"no cache", "new", "output missing"}


def test_a_loaded_forge_notices_edited_user_data_and_overlays(fleet: Path, plugins: PluginManager):
    forge = load(fleet, plugins)
    forge.run()
    (fleet / "user-data.yaml").write_text("#cloud-config\ninstall: {poweroff: false}\n")
    stale = will_run(forge)
    assert {"installer-iso/inst", "site-iso/store-000", "site-iso/store-004"} <= stale.keys()
    assert "provider-image/img" not in stale
    forge.run()
    assert "poweroff: false" in (fleet / "dist" / "sites" / "store-000.iso").read_text()
    (fleet / "overlay.txt").write_text("hullo")
    assert will_run(forge)["provider-image/img"] == "changed input"


def test_a_content_change_that_keeps_size_and_mtime_is_rebuilt(
    fleet: Path, plugins: PluginManager, monkeypatch: pytest.MonkeyPatch
):
    # Let the stat shortcut be used at once (no 2 s wait); it must still see the change.
    monkeypatch.setattr(inputs_module, "RACY_NS", 0)
    overlay = fleet / "overlay.txt"
    os.utime(overlay, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    load(fleet, plugins).run()
    forge = load(fleet, plugins)  # a new process's view: digests from dist/.edgekit
    assert will_run(forge) == {}
    before = overlay.stat()
    overlay.write_text("HELLO")  # same size
    os.utime(overlay, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime
    after = overlay.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert will_run(forge)["provider-image/img"] == "changed input"
    assert will_run(load(fleet, plugins))["provider-image/img"] == "changed input"
    CALLS.clear()
    load(fleet, plugins).run()
    assert "image:img" in CALLS


def test_the_stat_shortcut_skips_hashing_only_when_it_is_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    f = tmp_path / "input"
    f.write_bytes(b"a" * 1000)
    cache = DigestCache()
    first = cache.file_digest(f)
    cache.file_digest(f)
    assert cache.hashed == 2  # just written (racy): hashed every time
    monkeypatch.setattr(inputs_module, "RACY_NS", 0)
    cache.file_digest(f)
    cache.file_digest(f)
    assert cache.hashed == 4 - 1  # recorded once settled, then reused
    st = f.stat()
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.file_digest(f) != first  # ctime moved: hashed again
    assert cache.hashed == 4
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    tree = cache.fingerprint(tmp_path / "d")
    (tmp_path / "d" / "x").write_text("2")
    assert cache.fingerprint(tmp_path / "d") != tree
    assert cache.fingerprint(tmp_path / "nope") == "missing"
    (tmp_path / "link").symlink_to(f)
    via_link = cache.fingerprint(tmp_path / "link")
    f.write_bytes(b"c" * 1000)
    assert cache.fingerprint(tmp_path / "link") != via_link  # the target's content counts


def test_persisted_digests_survive_a_new_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(inputs_module, "RACY_NS", 0)
    f = tmp_path / "input"
    f.write_text("content")
    store = tmp_path / "digests.json"
    one = DigestCache(store)
    digest = one.file_digest(f)
    one.save()
    two = DigestCache(store)
    assert two.file_digest(f) == digest
    assert two.hashed == 0
    store.write_text("not json")
    assert DigestCache(store).file_digest(f) == digest  # a broken cache is only slower


def test_a_fleet_renders_collapsed_by_kind(fleet: Path, plugins: PluginManager):
    (fleet / "sites.csv").write_text(inventory(40))
    forge = load(fleet, plugins)
    forge.run()
    (fleet / "sites.csv").write_text(inventory(40, {3: "rome", 7: "rome"}))
    plan = forge.plan()
    page = plan._repr_html_()
    assert "<summary>site-iso: 40 (2 will run: 2 changed input, 38 cached)</summary>" in page
    assert page.count("<details>") == 6  # image, installer, site ISOs, and their publishing
    assert plan.summary()["publish/site-iso"] == {"steps": 40, "run": 2, "cached": 38}
    console = Console(file=io.StringIO(), width=200)
    console.print(plan)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "site-iso/* (40)" in text
    assert "store-017" not in text  # collapsed: one line for 40 sites
    assert "provider-image/img" in text  # small groups keep their rows
    result = forge.run()
    page = result._repr_html_()
    assert "site-iso: 40 (2 run, 38 cached)" in page
    assert result.summary()["site-iso"] == {"steps": 40, "run": 2, "cached": 38}
    assert len(page) < 60_000


def test_run_shows_one_progress_bar_per_kind(fleet: Path, plugins: PluginManager):
    (fleet / "sites.csv").write_text(inventory(30))
    out = io.StringIO()
    bars = Progress(console=Console(file=out, width=120))
    events: list[Any] = []
    with bars:
        load(fleet, plugins).run(progress=bars, events=events.append)
    assert {t.description for t in bars.tasks} == {
        "provider-image",
        "installer-iso",
        "site-iso",
        "publish/provider-image",
        "publish/installer-iso",
        "publish/site-iso",
    }
    assert all(t.completed == t.total for t in bars.tasks)
    assert next(t for t in bars.tasks if t.description == "site-iso").total == 30
    assert sum(isinstance(e, StepFinished) for e in events) == 64
    assert "site-iso" in out.getvalue()


def test_the_cli_progress_bars_get_one_bar_per_kind_not_per_site(
    fleet: Path, plugins: PluginManager, monkeypatch: pytest.MonkeyPatch
):
    # The CLI hands its bars to run(progress=...): one per kind, not one per step.
    from edgekit.cli import _common

    monkeypatch.setattr(_common, "console", lambda stderr=False: Console(file=io.StringIO()))
    (fleet / "sites.csv").write_text(inventory(50))
    with _common.progress_bars() as bars:
        load(fleet, plugins).run(progress=bars)
    assert len(bars.tasks) == 6  # not 104 (one per step)
    assert all(t.completed == t.total for t in bars.tasks)


def test_the_cli_artifacts_table_collapses_fleet_sized_kinds(fleet: Path, plugins: PluginManager):
    from edgekit.cli.build import artifacts_table

    (fleet / "sites.csv").write_text(inventory(50))
    result = load(fleet, plugins).run()
    out = io.StringIO()
    Console(file=out, width=200).print(artifacts_table(result))
    text = out.getvalue()
    assert "site-iso x50" in text
    assert "store-007" not in text  # one row for the kind, not one per site
    assert len(text.splitlines()) < 30
