"""The forge pipeline: plan, cache keys, execution order, manifest, events and failures.

The backends here are small but real plugins registered through the plugin system (the
contract third-party backends use); they write real files and a real OCI layout, so the
pipeline's own work (keys, state, extraction of the kernel, manifest) is exercised for real.
The built-in backends run the same pipeline in tests/test_quickstart.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edgekit import config
from edgekit.errors import BuildError, ConfigError
from edgekit.forge import Forge, StepFinished, StepStarted
from edgekit.model import Forge as ForgeSpec
from edgekit.oci import extract_files
from edgekit.plugins import (
    BuildContext,
    ImageBuilder,
    IsoAssembler,
    PluginManager,
    Publisher,
    hookimpl,
)
from edgekit.plugins.interfaces import (
    Artifact,
    ImageBuildRequest,
    InstallerIsoRequest,
    PullRequest,
    PullResult,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    SiteIsoRequest,
)

CALLS: list[str] = []
FAIL: dict[str, Exception] = {}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(layout: Path, data: bytes) -> str:
    digest = sha(data)
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def tar_bytes(entries: Sequence[tuple[str, bytes | str]]) -> bytes:
    """A tar of (path, content) entries; str content makes a symlink to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type = tarfile.SYMTYPE
                info.linkname = content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def write_image(layout: Path, tag: str, layers: Sequence[bytes]) -> str:
    """A minimal OCI image (gzip layers) in a layout; returns the manifest digest."""
    descs = []
    for layer in layers:
        blob = gzip.compress(layer, mtime=0)
        descs.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": write_blob(layout, blob),
                "size": len(blob),
            }
        )
    cfg = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": write_blob(layout, cfg),
                "size": len(cfg),
            },
            "layers": descs,
        }
    ).encode()
    digest = write_blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return digest


class TinyBuilder(ImageBuilder):
    name = "tiny"

    def build_image(self, request: ImageBuildRequest, ctx: BuildContext) -> Artifact:
        CALLS.append(f"image:{request.image.name}")
        if "image" in FAIL:
            raise FAIL["image"]
        overlay = b"".join(ctx.resolve(o.source).read_bytes() for o in request.image.overlays)
        base = tar_bytes([("boot/vmlinuz-6.1", b"KERNEL"), ("boot/initrd", b"OLD-INITRD")])
        top = tar_bytes(
            [
                ("boot/vmlinuz", "vmlinuz-6.1"),
                ("boot/initrd", b"INITRD"),
                ("etc/overlay", overlay),
                *[(p.lstrip("/"), h.read_bytes()) for p, h in request.extra_files["amd64"].items()],
            ]
        )
        digest = write_image(request.layout, request.tag, [base, top])
        ctx.report(1, 1, unit="items")
        return Artifact(
            name=f"provider-image/{request.image.name}",
            kind="provider-image",
            path=request.layout,
            digest=digest,
            size=1,
            media_type="application/vnd.oci.image.manifest.v1+json",
            reference=request.tag,
        )


def file_artifact(name: str, kind: str, path: Path, data: bytes) -> Artifact:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Artifact(name, kind, path, sha(data), len(data), "application/x-iso9660-image")


class TinyIso(IsoAssembler):
    name = "tiny-iso"

    def build_installer(self, request: InstallerIsoRequest, ctx: BuildContext) -> Artifact:
        CALLS.append("installer")
        data = b"\n".join(
            [
                request.kernel.read_bytes(),
                request.initrd.read_bytes(),
                request.user_data.encode(),
                *(p.read_bytes() for p in request.payload_files.values()),
            ]
        )
        return file_artifact(
            f"installer-iso/{request.spec.name}", "installer-iso", request.dest, data
        )

    def build_site_isos(
        self, requests: Sequence[SiteIsoRequest], ctx: BuildContext
    ) -> list[Artifact]:
        CALLS.append(f"sites:{len(requests)}")
        return [
            file_artifact(f"site-iso/{r.site}", "site-iso", r.dest, r.user_data.encode())
            for r in requests
        ]


class TinyPublisher(Publisher):
    name = "tiny-pub"

    def push_image(self, request: PushImageRequest, ctx: BuildContext) -> PushResult:
        CALLS.append(f"push-image:{request.target}")
        return PushResult(request.target, "sha256:" + "1" * 64, "m", 1)

    def push_artifact(self, request: PushArtifactRequest, ctx: BuildContext) -> PushResult:
        r = request
        CALLS.append(f"push-artifact:{r.target}:{r.artifact_type}:subject={r.subject}")
        return PushResult(
            r.target, sha(r.path.read_bytes()), r.artifact_type, r.path.stat().st_size
        )

    def pull(self, request: PullRequest, ctx: BuildContext) -> PullResult:
        raise NotImplementedError


class TinyPlugin:
    def __init__(self, agent: Path) -> None:
        self.agent = agent

    @hookimpl
    def edgekit_image_builders(self) -> list[type[ImageBuilder]]:
        return [TinyBuilder]

    @hookimpl
    def edgekit_iso_assemblers(self) -> list[type[IsoAssembler]]:
        return [TinyIso]

    @hookimpl
    def edgekit_publishers(self) -> list[type[Publisher]]:
        return [TinyPublisher]

    @hookimpl
    def edgekit_image_extra_files(self, image_name: str, arch: str) -> dict[str, str]:
        return {"/usr/bin/edgekit-agent": str(self.agent)}

    @hookimpl
    def edgekit_installer_payload_files(self, iso_name: str) -> dict[str, str]:
        return {"/etc/edgekit/boot.d/60-agent": str(self.agent)}


FORGE = """
name: test
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
iso: {name: inst, image: img, userData: {install: {poweroff: true}}}
sites:
  - {name: store-1, tags: {city: oslo}}
  - {name: store-2}
registry: {target: "127.0.0.1:5000/fleet"}
registration: {endpoint: "http://10.0.2.2:8080", project: p, tokenEnv: TEST_FORGE_TOKEN}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "k3s").write_text("placeholder")
    (tmp_path / "overlay.txt").write_text("hello")
    (tmp_path / "agent.sh").write_text("#!/bin/sh\necho agent\n")
    (tmp_path / "edgeforge.yaml").write_text(FORGE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEST_FORGE_TOKEN", "ekt_s3cr3t-token-value")
    CALLS.clear()
    FAIL.clear()
    return tmp_path


@pytest.fixture
def plugins(project: Path, edgekit_plugins: PluginManager, register_plugin: Any) -> PluginManager:
    register_plugin(TinyPlugin(project / "agent.sh"), name="tiny")
    return edgekit_plugins


def load(project: Path, plugins: PluginManager) -> Forge:
    return Forge.load(project / "edgeforge.yaml", plugins=plugins)


def test_plan_orders_steps_and_their_dependencies(project: Path, plugins: PluginManager):
    plan = load(project, plugins).plan()
    assert [(s.id, s.depends_on) for s in plan.steps] == [
        ("provider-image/img", ()),
        ("installer-iso/inst", ("provider-image/img",)),
        ("site-iso/store-1", ()),
        ("site-iso/store-2", ()),
        ("publish/provider-image/img", ("provider-image/img",)),
        ("publish/installer-iso/inst", ("installer-iso/inst", "publish/provider-image/img")),
        ("publish/site-iso/store-1", ("site-iso/store-1",)),
        ("publish/site-iso/store-2", ("site-iso/store-2",)),
    ]
    assert all(s.status == "will run" for s in plan.steps)
    assert plan.output_dir == project / "dist"
    assert "127.0.0.1:5000/fleet" in plan.step("publish/provider-image/img").summary
    assert plan.to_dict()["steps"][0]["backend"] == "image-builder:tiny"
    assert "<table>" in plan._repr_html_()


def test_plan_keys_are_stable_and_follow_inputs(project: Path, plugins: PluginManager):
    first = {s.id: s.key for s in load(project, plugins).plan().steps}
    assert first == {s.id: s.key for s in load(project, plugins).plan().steps}
    (project / "overlay.txt").write_text("changed")
    second = {s.id: s.key for s in load(project, plugins).plan().steps}
    changed = {k for k in first if first[k] != second[k]}
    assert changed == {
        "provider-image/img",
        "installer-iso/inst",
        "publish/provider-image/img",
        "publish/installer-iso/inst",
    }


def test_run_builds_everything_and_writes_the_manifest(project: Path, plugins: PluginManager):
    result = load(project, plugins).run()
    assert set(result.ran) == {s.id for s in result.plan.steps}
    manifest = json.loads((project / "dist" / "manifest.json").read_text())
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    assert set(by_name) == {
        "provider-image/img",
        "installer-iso/inst",
        "site-iso/store-1",
        "site-iso/store-2",
        "published-provider-image/img",
        "published-installer-iso/inst",
        "published-site-iso/store-1",
        "published-site-iso/store-2",
    }
    iso = by_name["installer-iso/inst"]
    assert iso["path"] == "iso/inst.iso"
    assert iso["step"] == "installer-iso/inst"
    data = (project / "dist" / "iso" / "inst.iso").read_bytes()
    assert iso["digest"] == sha(data)
    assert iso["size"] == len(data)
    # the kernel came through the image's symlink, the initrd from the top layer
    assert data.startswith(b"KERNEL\nINITRD\n#cloud-config\n")
    assert b"echo agent" in data  # the payload hook's file
    site = (project / "dist" / "sites" / "store-1.iso").read_text()
    assert "name: store-1" in site
    assert "city: oslo" in site
    assert "edgeHostToken: ekt_s3cr3t-token-value" in site
    assert "push-image:127.0.0.1:5000/fleet/edge/img:k3s-1.30.4-v0.1.0" in CALLS
    [iso_push] = [c for c in CALLS if "vnd.edgekit.iso" in c]
    assert iso_push == (
        "push-artifact:127.0.0.1:5000/fleet/edge/img:installer-inst:"
        f"application/vnd.edgekit.iso.v1:subject=sha256:{'1' * 64}"
    )


def test_secrets_stay_out_of_plan_state_and_manifest(project: Path, plugins: PluginManager):
    forge = load(project, plugins)
    forge.run()
    for path in (project / "dist" / "manifest.json", project / "dist" / ".edgekit" / "state.json"):
        assert "s3cr3t" not in path.read_text()
    assert "s3cr3t" not in json.dumps(forge.plan().to_dict())
    assert "s3cr3t" not in repr(forge.user_data_for(None))


def test_second_run_reuses_everything(project: Path, plugins: PluginManager):
    load(project, plugins).run()
    CALLS.clear()
    result = load(project, plugins).run()
    assert CALLS == []
    assert result.ran == ()
    assert set(result.cached) == {s.id for s in result.plan.steps}
    assert all(s.fresh for s in result.plan.steps)
    assert "installer-iso/inst" in result.artifacts


def test_changing_one_input_reruns_only_what_depends_on_it(project: Path, plugins: PluginManager):
    load(project, plugins).run()
    CALLS.clear()
    (project / "overlay.txt").write_text("changed")
    result = load(project, plugins).run()
    assert set(result.ran) == {
        "provider-image/img",
        "installer-iso/inst",
        "publish/provider-image/img",
        "publish/installer-iso/inst",
    }
    assert not any(c.startswith("sites:") for c in CALLS)


def test_changing_the_token_rebuilds_the_isos(
    project: Path, plugins: PluginManager, monkeypatch: pytest.MonkeyPatch
):
    load(project, plugins).run()
    monkeypatch.setenv("TEST_FORGE_TOKEN", "ekt_another")
    result = load(project, plugins).run()
    assert {"installer-iso/inst", "site-iso/store-1", "site-iso/store-2"} <= set(result.ran)
    assert "provider-image/img" in result.cached


def test_no_cache_runs_everything(project: Path, plugins: PluginManager):
    load(project, plugins).run()
    result = load(project, plugins).run(no_cache=True)
    assert set(result.ran) == {s.id for s in result.plan.steps}


def test_missing_output_is_rebuilt(project: Path, plugins: PluginManager):
    load(project, plugins).run()
    (project / "dist" / "sites" / "store-2.iso").unlink()
    forge = load(project, plugins)
    assert forge.plan().step("site-iso/store-2").reason == "output missing"
    result = forge.run()
    assert "site-iso/store-2" in result.ran
    assert "site-iso/store-1" in result.cached  # only the site whose ISO went missing
    assert (project / "dist" / "sites" / "store-2.iso").exists()


def test_events_and_hooks_follow_the_run(project: Path, plugins: PluginManager, hook_recorder):
    events: list[Any] = []
    load(project, plugins).run(events=events.append)
    started = [e.step.id for e in events if isinstance(e, StepStarted)]
    finished = [e.step.id for e in events if isinstance(e, StepFinished)]
    assert sorted(started) == sorted(finished)
    assert len(started) == 8  # 2 images/ISOs, 2 sites, and publishing each of those
    order = [
        (type(e).__name__, e.step.id) for e in events if isinstance(e, StepStarted | StepFinished)
    ]
    image_done = order.index(("StepFinished", "provider-image/img"))
    assert order.index(("StepStarted", "provider-image/img")) < image_done
    assert image_done < order.index(("StepStarted", "installer-iso/inst"))
    assert len(hook_recorder.named("edgekit_step_started")) == 8
    [manifest_call] = hook_recorder.named("edgekit_manifest_written")
    assert manifest_call.kwargs["path"].endswith("manifest.json")
    load(project, plugins).run()
    cached = [c for c in hook_recorder.named("edgekit_step_finished") if c.kwargs["cached"]]
    assert len(cached) == 8


def test_steps_run_on_the_callers_executor(project: Path, plugins: PluginManager):
    names: set[str] = set()

    class Recording(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            def wrapped() -> Any:
                names.add(threading.current_thread().name)
                return fn(*args, **kwargs)

            return super().submit(wrapped)

    with Recording(max_workers=3, thread_name_prefix="caller") as exe:
        load(project, plugins).run(executor=exe)
    assert names
    assert all(n.startswith("caller") for n in names)


def test_independent_steps_run_concurrently(project: Path, plugins: PluginManager):
    spans: dict[str, tuple[float, float]] = {}
    original = TinyIso.build_site_isos

    def slow_sites(self: TinyIso, requests: Any, ctx: BuildContext) -> list[Artifact]:
        start = time.monotonic()
        time.sleep(0.3)
        out = original(self, requests, ctx)
        spans["sites"] = (start, time.monotonic())
        return out

    original_image = TinyBuilder.build_image

    def slow_image(self: TinyBuilder, request: Any, ctx: BuildContext) -> Artifact:
        start = time.monotonic()
        time.sleep(0.3)
        out = original_image(self, request, ctx)
        spans["image"] = (start, time.monotonic())
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TinyIso, "build_site_isos", slow_sites)
        mp.setattr(TinyBuilder, "build_image", slow_image)
        load(project, plugins).run()
    (a0, a1), (b0, b1) = spans["sites"], spans["image"]
    assert a0 < b1
    assert b0 < a1  # the two overlapped


def test_a_failed_step_records_nothing_and_writes_no_manifest(
    project: Path, plugins: PluginManager
):
    FAIL["image"] = BuildError("base image missing")
    with pytest.raises(BuildError, match="base image missing"):
        load(project, plugins).run()
    assert not (project / "dist" / "manifest.json").exists()
    state_file = project / "dist" / ".edgekit" / "state.json"
    if state_file.exists():  # an independent step may have finished meanwhile, and is kept
        assert "provider-image/img" not in json.loads(state_file.read_text())["steps"]
    FAIL.clear()
    result = load(project, plugins).run()
    assert "provider-image/img" in result.ran
    assert (project / "dist" / "manifest.json").exists()


def test_unknown_backend_is_reported_before_anything_runs(project: Path, plugins: PluginManager):
    text = (project / "edgeforge.yaml").read_text().replace("imageBuilder: tiny", "imageBuilder: x")
    (project / "edgeforge.yaml").write_text(text)
    forge = load(project, plugins)
    # A plan-time error with the forge file's path (issue 15: not first found by run()).
    with pytest.raises(ConfigError) as planned:
        forge.plan()
    [problem] = planned.value.problems
    assert problem.path == "$.backends.imageBuilder"
    assert "no image-builder backend named 'x'; available: tiny" in problem.message
    with pytest.raises(ConfigError, match="no image-builder backend named 'x'; available: tiny"):
        forge.run()
    assert CALLS == []


def test_site_inventory_adds_sites_and_reports_duplicates(project: Path, plugins: PluginManager):
    (project / "sites.csv").write_text("name,tags\nstore-3,city=rome\nstore-1,\n")
    text = (project / "edgeforge.yaml").read_text() + "siteInventory: ./sites.csv\n"
    (project / "edgeforge.yaml").write_text(text)
    with pytest.raises(ConfigError, match="site 'store-1' appears twice"):
        load(project, plugins)
    (project / "sites.csv").write_text("name,tags\nstore-3,city=rome\n")
    forge = load(project, plugins)
    assert [s.name for s in forge.sites] == ["store-1", "store-2", "store-3"]


def test_missing_inventory_is_a_config_error(project: Path, plugins: PluginManager):
    text = (project / "edgeforge.yaml").read_text() + "siteInventory: ./nope.csv\n"
    (project / "edgeforge.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"\$\.siteInventory: cannot read .*nope\.csv"):
        load(project, plugins)


def test_output_dir_defaults_to_dist_of_the_current_directory(
    project: Path, plugins: PluginManager, tmp_path_factory: pytest.TempPathFactory
):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    spec = config.load(project / "edgeforge.yaml", ForgeSpec)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)
        forge = Forge(spec, base_dir=project, plugins=plugins)
    assert forge.output_dir == elsewhere / "dist"
    assert Forge(
        spec, base_dir=project, plugins=plugins, output_dir=elsewhere / "o"
    ).output_dir == (elsewhere / "o")


def test_extract_files_honours_whiteouts(tmp_path: Path):
    layout = tmp_path / "layout"
    base = tar_bytes([("boot/vmlinuz", b"K"), ("etc/motd", b"hi")])
    top = tar_bytes([("etc/.wh.motd", b"")])
    write_image(layout, "t", [base, top])
    got = extract_files(layout, "t", ["/boot/vmlinuz"], tmp_path / "out")
    assert got["/boot/vmlinuz"].read_bytes() == b"K"
    with pytest.raises(BuildError, match=r"has no /etc/motd"):
        extract_files(layout, "t", ["/etc/motd"], tmp_path / "out")
    with pytest.raises(BuildError, match=r"no image tagged 'nope' .* \(tags: t\)"):
        extract_files(layout, "nope", ["/boot/vmlinuz"], tmp_path / "out")


def test_a_secret_in_inline_user_data_is_part_of_the_keys_but_not_in_them(
    project: Path, plugins: PluginManager
):
    def with_password(word: str) -> dict[str, str]:
        (project / "edgeforge.yaml").write_text(
            FORGE.replace(
                "userData: {install: {poweroff: true}}",
                "userData: {install: {poweroff: true}, stages: {boot: [{users: "
                f"{{kairos: {{passwd: {word}}}}}}}]}}}}",
            )
        )
        return {s.id: s.key for s in load(project, plugins).plan().steps}

    first = with_password("first-s3cret")
    second = with_password("second-s3cret")
    changed = {k for k in first if first[k] != second[k]}
    # the installer and every site carry the password to the device: all rebuilt
    assert changed == {
        "installer-iso/inst",
        "publish/installer-iso/inst",
        "site-iso/store-1",
        "site-iso/store-2",
        "publish/site-iso/store-1",
        "publish/site-iso/store-2",
    }
    plan = load(project, plugins).plan()
    assert "second-s3cret" not in json.dumps(plan.to_dict())


def test_files_plugins_contribute_are_part_of_the_keys(project: Path, plugins: PluginManager):
    first = {s.id: s.key for s in load(project, plugins).plan().steps}
    (project / "agent.sh").write_text("#!/bin/sh\necho agent v2\n")
    second = {s.id: s.key for s in load(project, plugins).plan().steps}
    assert first["provider-image/img"] != second["provider-image/img"]
    assert first["installer-iso/inst"] != second["installer-iso/inst"]
    assert first["site-iso/store-1"] == second["site-iso/store-1"]
    assert first["site-iso/store-2"] == second["site-iso/store-2"]


def test_a_partial_run_keeps_the_manifest_whole(project: Path, plugins: PluginManager):
    load(project, plugins).run()
    before = json.loads((project / "dist" / "manifest.json").read_text())
    result = load(project, plugins).run(kinds=["site-isos"], no_cache=True)
    assert set(result.ran) == {"site-iso/store-1", "site-iso/store-2"}
    assert set(result.artifacts) == {"site-iso/store-1", "site-iso/store-2"}
    after = json.loads((project / "dist" / "manifest.json").read_text())
    assert {a["name"] for a in after["artifacts"]} == {a["name"] for a in before["artifacts"]}


def test_unknown_step_kind_is_a_config_error(project: Path, plugins: PluginManager):
    with pytest.raises(ConfigError, match="unknown step kind"):
        load(project, plugins).plan(["iso"])
