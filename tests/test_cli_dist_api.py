"""`edgekit.dist`: the Python functions behind `edgekit push|pull|referrers|iso inspect`,
against a real docker-registry on 127.0.0.1 (fixtures from edgekit_oras.testing), with
images made by umoci and checked with skopeo."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest
from edgekit_iso.siteiso import write_site_iso
from umoci_images import tool, umoci_layout

import edgekit as ek
from edgekit.errors import BackendResultError, ConfigError, PluginError, SourceError
from edgekit.plugins import IsoAssembler, Publisher, hookimpl
from edgekit.plugins.interfaces import Progress, PushResult, RegistryOptions


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, str]:
    """A small image built by umoci (an independent tool), tagged v1; (layout, digest)."""
    return umoci_layout(tmp_path)


def test_dist_loads_on_first_use():
    assert callable(ek.dist.push)
    assert {"push", "pull", "referrers", "inspect_iso"} <= set(ek.dist.__all__)


def test_push_pull_referrers_from_python(registry, layout, tmp_path: Path):
    lay, digest = layout
    repo = f"{registry.host}/fleet/py"
    plain = RegistryOptions(plain_http=True)
    seen: list[Progress] = []

    pushed = ek.dist.push(f"oci:{lay}:v1", f"{repo}:v1", options=plain, progress=seen.append)
    assert isinstance(pushed, ek.dist.Pushed)
    assert pushed.digest == digest
    assert pushed.uploaded_bytes > 0
    assert seen  # progress reached the callback
    remote = json.loads(tool("skopeo", "inspect", "--tls-verify=false", f"docker://{repo}:v1"))
    assert remote["Digest"] == digest
    assert pushed.to_dict()["uploadedBytes"] == pushed.uploaded_bytes
    assert digest in pushed._repr_html_()

    iso = tmp_path / "store-1.iso"
    write_site_iso(iso, user_data="#cloud-config\n{}\n")
    # The manifest-level title is what a referrers listing shows (the layer has its own).
    notes = {"org.opencontainers.image.title": "store-1.iso", "dev.example.shelf": "3"}
    attached = ek.dist.push(iso, repo, subject=digest, annotations=notes, options=plain)
    found = ek.dist.referrers(f"{repo}:v1", options=plain)
    assert isinstance(found, ek.dist.Referrers)
    [ref] = list(found)
    assert ref.digest == attached.digest
    assert ref.artifact_type == "application/vnd.edgekit.iso.v1"
    assert ref.title == "store-1.iso"
    assert ref.annotations["dev.example.shelf"] == "3"
    assert found.to_dict()["referrers"][0]["artifactType"] == ref.artifact_type
    assert "<table>" in found._repr_html_()
    assert "store-1.iso" in found._repr_html_()
    other = ek.dist.referrers(f"{repo}:v1", artifact_type="application/x-other", options=plain)
    assert len(other) == 0

    dest = tmp_path / "pulled"
    pulled = ek.dist.pull(f"{repo}:v1", dest, options=plain)
    assert (pulled.digest, pulled.path) == (digest, dest)
    assert json.loads(tool("skopeo", "inspect", f"oci:{dest}:v1"))["Digest"] == digest
    back = ek.dist.pull(f"{repo}@{attached.digest}", tmp_path / "back.iso", options=plain)
    assert back.path.read_bytes() == iso.read_bytes()
    assert str(back.path) in back._repr_html_()


def test_push_checks_its_arguments_before_any_transfer(tmp_path: Path):
    with pytest.raises(ConfigError, match="is not oci:PATH:TAG") as bad_source:
        ek.dist.push("oci:nolayout", "127.0.0.1:9/x:v1")
    assert bad_source.value.problems[0].path == "source"
    with pytest.raises(ConfigError, match="no such file"):
        ek.dist.push(tmp_path / "missing.iso", "127.0.0.1:9/x:v1")
    odd = tmp_path / "notes.txt"
    odd.write_text("x")
    with pytest.raises(ConfigError, match="give artifact_type") as no_type:
        ek.dist.push(odd, "127.0.0.1:9/x:v1")
    assert no_type.value.problems[0].path == "artifact_type"


class RecordingPublisher(Publisher):
    """A publisher that writes nothing and records what it was asked (a third party's)."""

    name = "recording"
    calls: ClassVar[list[tuple[str, ...]]] = []

    def push_image(self, request, ctx):
        self.calls.append(("image", str(request.layout), request.tag, request.target))
        return PushResult(request.target, "sha256:" + "1" * 64, "application/x", 1)

    def push_artifact(self, request, ctx):
        r = request
        self.calls.append(
            ("file", r.path.name, r.artifact_type, str(r.subject), str(dict(r.annotations)))
        )
        return PushResult(r.target, "sha256:" + "2" * 64, "application/x", 2)

    def pull(self, request, ctx):
        raise NotImplementedError


def test_the_publisher_comes_from_the_given_plugin_manager(
    edgekit_plugins, register_plugin, tmp_path: Path
):
    class Plugin:
        @hookimpl
        def edgekit_publishers(self) -> list[type[Publisher]]:
            return [RecordingPublisher]

    register_plugin(Plugin(), name="recording-plugin")
    RecordingPublisher.calls.clear()
    file = tmp_path / "bundle.zst"
    file.write_bytes(b"zz")
    ek.dist.push("oci:some/layout:v2", "oci:out", publisher="recording", plugins=edgekit_plugins)
    got = ek.dist.push(
        file,
        "oci:out",
        annotations={"k": "v"},
        subject="sha256:" + "3" * 64,
        publisher="recording",
        plugins=edgekit_plugins,
    )
    assert got.size == 2
    assert RecordingPublisher.calls == [
        ("image", "some/layout", "v2", "oci:out"),
        (
            "file",
            "bundle.zst",
            "application/vnd.edgekit.content-bundle.v1",
            "sha256:" + "3" * 64,
            "{'k': 'v'}",
        ),
    ]
    with pytest.raises(ek.EdgekitError, match="cannot list referrers"):
        ek.dist.referrers("oci:out", publisher="recording", plugins=edgekit_plugins)


def test_inspect_iso_is_typed(tmp_path: Path):
    iso = tmp_path / "store-9.iso"
    write_site_iso(iso, user_data="#cloud-config\nstylus:\n  site:\n    name: store-9\n")
    info = ek.dist.inspect_iso(iso)
    assert isinstance(info, ek.dist.IsoInspection)
    assert info.volume_label == "cidata"
    assert not info.bootable
    assert not info.hybrid
    assert {f.path for f in info.files} == {"/user-data", "/meta-data"}
    assert info.user_data is not None
    assert "name: store-9" in info.user_data
    doc = info.to_dict()
    assert isinstance(doc, Mapping)
    assert doc["volume_label"] == "cidata"
    html = info._repr_html_()
    assert "cidata" in html
    assert "name: store-9" in html
    with pytest.raises(SourceError, match="no such file"):
        ek.dist.inspect_iso(tmp_path / "nope.iso")


def test_iso_inspection_reads_boot_entries_and_gpt(tmp_path: Path):
    # What a hybrid installer ISO's description looks like (edgekit-iso's JSON form).
    details = {
        "volume_label": "EDGEKIT",
        "boot_entries": [
            {"platform": "bios", "image_path": "/boot/isolinux.bin", "emulation": "no-emulation",
             "load_size": 4},
            {"platform": "efi", "image_path": None, "load_rba": 1234, "emulation": "no-emulation",
             "load_size": 0},
        ],
        "hybrid": {
            "is_hybrid": True,
            "mbr_partitions": [{"number": 1}],
            "gpt": {"header_crc_valid": True, "entries_crc_valid": False, "backup_valid": True,
                    "partitions": [{}, {}]},
        },
        "files": [{"path": "/config.yaml", "size": 10}],
        "user_data": "#cloud-config\n",
    }  # fmt: skip
    info = ek.dist.IsoInspection.from_details(tmp_path / "x.iso", details)
    assert info.bootable
    assert [e.image for e in info.boot_entries] == ["/boot/isolinux.bin", "sector 1234"]
    assert info.hybrid
    assert not info.gpt_valid
    assert info.partition_tables == (
        "MBR with 1 partition(s)",
        "GPT with 2 partition(s), CRCs INVALID",
    )
    assert info.to_dict() == details


def test_an_iso_assembler_returning_the_wrong_type_is_named(
    edgekit_plugins, register_plugin, tmp_path: Path
):
    class Listing(IsoAssembler):
        name = "listing"

        def build_installer(self, request, ctx):
            raise NotImplementedError

        def build_site_isos(self, requests, ctx):
            raise NotImplementedError

        def inspect_iso(self, request, ctx):
            return ["not", "a", "mapping"]

    class Plugin:
        @hookimpl
        def edgekit_iso_assemblers(self) -> list[type[IsoAssembler]]:
            return [Listing]

    register_plugin(Plugin(), name="listing-plugin")
    # The manager's boundary check names it; a BackendResultError is a PluginError.
    with pytest.raises(PluginError) as exc:
        ek.dist.inspect_iso(tmp_path / "x.iso", backend="listing", plugins=edgekit_plugins)
    assert isinstance(exc.value, BackendResultError)
    assert str(exc.value).startswith(
        "iso-assembler 'listing' (<local>) returned list, expected IsoInspection "
        "(from inspect_iso() at "
    )
