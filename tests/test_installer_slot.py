"""The installer's slot A holds what a repave of the same image stages (docs/installer-iso.md,
"What a slot holds"): the image's layers after its base, whiteouts applied, the persistence
hook, the agent as the image has it. Checked against the agent's own ``stage_payload`` run
in busybox sh on the same OCI layout, and read back out of a real installer ISO."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from edgekit_agent.plugin import edgekit_installer_payload_files
from edgekit_iso.build import build_installer_iso
from edgekit_iso.diskboot import PERSIST_HOOK, persist_hook
from edgekit_iso.slotpayload import build_slot_overlay
from edgekit_iso.spec import BootMenu, InstallerIsoSpec
from newc import newc_entries
from test_device_repave import sh

from edgekit.errors import BuildError
from edgekit.testing import UpgradableImages

ISO_USER_DATA = "#cloud-config\nstylus:\n  site:\n    name: slot-a\ninstall:\n  poweroff: true\n"
EXTRA = "usr/share/edgekit-test/extra.conf"

#: path -> (type, permission bits, sha256 of a file / target of a symlink / "" for a dir)
Listing = dict[str, tuple[str, int, str]]


def newc_listing(path: Path) -> Listing:
    """Every member of a gzip'd newc archive: kind, permission bits, content digest."""
    out: Listing = {}
    for name, mode, body in newc_entries(path):
        kind = {0o100000: "file", 0o040000: "dir", 0o120000: "symlink"}[mode & 0o170000]
        value = {"file": hashlib.sha256(body).hexdigest(), "symlink": body.decode(), "dir": ""}
        assert name not in out, f"{name} twice"
        out[name] = (kind, mode & 0o7777, value[kind])
    return out


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, body in members:
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0)


def _info(name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, mode: int = 0o644,
          link: str = "") -> tarfile.TarInfo:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.linkname = kind, size, mode, link
    return info


def _file(name: str, body: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, size=len(body), mode=mode), body


def _put_blob(layout: Path, data: bytes) -> str:
    hexd = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hexd).write_bytes(data)
    return f"sha256:{hexd}"


def add_layer(source: Path, dest: Path, layer: bytes) -> Path:
    """A copy of OCI layout ``source`` whose image has ``layer`` (tar+gzip) on top."""
    shutil.copytree(source, dest)
    index = json.loads((dest / "index.json").read_text())
    desc = index["manifests"][0]
    blobs = dest / "blobs" / "sha256"
    manifest = json.loads((blobs / desc["digest"].removeprefix("sha256:")).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].removeprefix("sha256:")).read_text())
    config["rootfs"]["diff_ids"].append(
        f"sha256:{hashlib.sha256(gzip.decompress(layer)).hexdigest()}"
    )
    config_raw = json.dumps(config).encode()
    manifest["config"].update(digest=_put_blob(dest, config_raw), size=len(config_raw))
    manifest["layers"].append({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": _put_blob(dest, layer), "size": len(layer),
    })  # fmt: skip
    manifest_raw = json.dumps(manifest).encode()
    desc.update(digest=_put_blob(dest, manifest_raw), size=len(manifest_raw))
    (dest / "index.json").write_text(json.dumps(index))
    return dest


def upper_files(layout: Path) -> list[str]:
    """Regular files in the layers after the first (the sample image's base is its first)."""
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    names: list[str] = []
    for layer in manifest["layers"][1:]:
        with tarfile.open(blobs / layer["digest"][7:]) as tar:
            names += [m.name.removeprefix("./") for m in tar if m.isreg()]
    return names


@pytest.fixture(scope="module")
def image(upgradable_images: UpgradableImages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v2 (its overlay /etc/os-release) plus a layer that whites out one file of an earlier
    upper layer and adds a file, a directory and a symlink."""
    v2 = upgradable_images.v2.layout
    victim = next(n for n in upper_files(v2) if n != "etc/os-release" and "edgekit" not in n)
    parent, _, name = victim.rpartition("/")
    layer = _tar_gz([
        (_info(f"{parent}/.wh.{name}"), b""),
        (_info("usr/share/edgekit-test", tarfile.DIRTYPE, mode=0o750), None),
        _file(EXTRA, b"extra=1\n", 0o600),
        (_info("usr/share/edgekit-test/link", tarfile.SYMTYPE, mode=0o777, link="extra.conf"),
         None),
    ])  # fmt: skip
    layout = add_layer(v2, tmp_path_factory.mktemp("slot") / "layout", layer)
    (layout / "victim").write_text(victim)  # read by the tests (not a layout file)
    return layout


def staged_by_agent(layout: Path, tmp_path: Path) -> Path:
    """The edgekit.cpio.gz the agent's repave stages from ``layout`` (its own shell code)."""
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    hook = tmp_path / "device-hook"
    hook.write_bytes(persist_hook())  # on a device: the hook the installer put in slot A
    out = sh(
        f'umask 022; layout_source "{layout}" "{digest}" "{tmp_path}/src" '
        '|| { echo "E: $OCI_ERROR"; exit 1; }\n'
        f'stage_payload "{tmp_path}/src" "registry.invalid/edgekit/sample:v2" "{digest}" '
        f'"{tmp_path}/staged" || {{ echo "E: $STAGE_ERROR"; exit 1; }}',
        tmp_path,
        EDGEKIT_AGENT_PERSIST_HOOK=str(hook),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return tmp_path / "staged" / "edgekit.cpio.gz"


def _extract(iso: Path, inner: str, dest: Path) -> Path:
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", inner, str(dest)],
        capture_output=True, check=True,
    )  # fmt: skip
    return dest


def test_slot_a_holds_what_a_repave_of_the_image_stages(
    upgradable_images: UpgradableImages, image: Path, tmp_path: Path
) -> None:
    payload = {k: Path(v) for k, v in edgekit_installer_payload_files(iso_name="i").items()}
    spec = InstallerIsoSpec.from_image_tree(
        upgradable_images.sample_os,
        ISO_USER_DATA,
        oci_layout_dir=image,
        installer_files=payload,
        boot_menu=BootMenu(timeout_s=0),
        source_date_epoch=1_700_000_000,
    )
    iso = build_installer_iso(spec, tmp_path / "installer.iso", backend="xorriso").path
    overlay = _extract(iso, "/edgekit/slot/edgekit.cpio.gz", tmp_path / "slot.cpio.gz")
    listing = newc_listing(overlay)

    # The image's overlay file and the new layer, as the image has them.
    os_release = listing["etc/os-release"]
    assert os_release[0] == "file"
    assert b"VERSION=v2\n" in gzip.decompress(overlay.read_bytes())
    assert listing[EXTRA] == ("file", 0o600, hashlib.sha256(b"extra=1\n").hexdigest())
    assert listing["usr/share/edgekit-test"] == ("dir", 0o750, "")
    assert listing["usr/share/edgekit-test/link"] == ("symlink", 0o777, "extra.conf")
    # The whiteout removed the earlier layer's file, and is not carried itself.
    victim = (image / "victim").read_text()
    assert victim not in listing
    assert not any(".wh." in name for name in listing)
    assert not any(name.startswith("boot/") for name in listing)  # the base stays in initrd
    # The persistence hook and the agent (the image's copy, the same as the payload's here).
    assert listing[PERSIST_HOOK] == ("file", 0o755, hashlib.sha256(persist_hook()).hexdigest())
    agent = payload["usr/bin/edgekit-agent"].read_bytes()
    assert listing["usr/bin/edgekit-agent"][2] == hashlib.sha256(agent).hexdigest()

    # Exactly what the agent's stage_payload makes of the same image: paths, types, modes,
    # contents (the two archives differ only in owners and timestamps).
    assert listing == newc_listing(staged_by_agent(image, tmp_path))

    info = json.loads(_extract(iso, "/edgekit/slot/image.json", tmp_path / "i.json").read_text())
    assert info["overlay"] == {
        "path": "edgekit.cpio.gz",
        "sha256": hashlib.sha256(overlay.read_bytes()).hexdigest(),
        "size": overlay.stat().st_size,
    }


def test_the_same_inputs_give_the_same_bytes(image: Path, tmp_path: Path) -> None:
    payload = {k: Path(v) for k, v in edgekit_installer_payload_files(iso_name="i").items()}
    built = []
    for n in (1, 2):
        work = tmp_path / f"w{n}"
        work.mkdir()
        built.append(
            build_slot_overlay(
                layout=image, persist_hook=(PERSIST_HOOK, persist_hook()),
                payload_files=payload, dest=work / "o.cpio.gz", work=work, epoch=1_700_000_000,
            ).read_bytes()
        )  # fmt: skip
        assert sorted(p.name for p in work.iterdir()) == ["o.cpio.gz"]  # no temporary left
    assert built[0] == built[1]
    assert int(gzip.decompress(built[0])[46:54], 16) == 1_700_000_000  # the first mtime


# --- small synthetic layouts: the payload rule and the refusals ------------------------------


def layout_of(root: Path, *layers: bytes) -> Path:
    """An OCI layout whose image is a base layer (boot/vmlinuz, boot/initrd) + ``layers``."""
    (root / "blobs" / "sha256").mkdir(parents=True)
    base = _tar_gz([_file("boot/vmlinuz", b"k"), _file("boot/initrd", b"i"), _file("etc/b", b"b")])
    descs = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
         "digest": _put_blob(root, blob), "size": len(blob)}
        for blob in (base, *layers)
    ]  # fmt: skip
    config = _put_blob(root, b"{}")
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": config}, "layers": descs})
    digest = _put_blob(root, manifest.encode())
    (root / "index.json").write_text(json.dumps({"manifests": [{"digest": digest}]}))
    return root


def overlay_of(layout: Path, tmp_path: Path, payload: dict[str, Path] | None = None) -> Listing:
    work = tmp_path / "work"
    work.mkdir()
    dest = build_slot_overlay(
        layout=layout, persist_hook=(PERSIST_HOOK, b"#!/bin/sh\n"), payload_files=payload or {},
        dest=work / "o.cpio.gz", work=work, epoch=0,
    )  # fmt: skip
    return newc_listing(dest)


def test_the_payload_adds_only_what_the_image_lacks(tmp_path: Path) -> None:
    image_hook = b"#!/bin/sh\necho the image's own\n"
    layout = layout_of(
        tmp_path / "l",
        _tar_gz([_file("usr/bin/tool", b"image"), _file(PERSIST_HOOK, image_hook, 0o700)]),
    )
    mine, extra = tmp_path / "tool", tmp_path / "extra"
    mine.write_bytes(b"payload")
    extra.write_bytes(b"new")
    listing = overlay_of(layout, tmp_path, {"usr/bin/tool": mine, "usr/lib/x/extra": extra})
    assert listing["usr/bin/tool"][2] == hashlib.sha256(b"image").hexdigest()
    assert listing["usr/lib/x/extra"] == ("file", 0o644, hashlib.sha256(b"new").hexdigest())
    assert listing[PERSIST_HOOK] == ("file", 0o700, hashlib.sha256(image_hook).hexdigest())
    assert "etc/b" not in listing  # the base layer's files are in its initrd already


def test_later_layers_win_and_opaque_markers_hide_the_lower_layers(tmp_path: Path) -> None:
    layout = layout_of(
        tmp_path / "l",
        _tar_gz([_file("d/a", b"1"), _file("d/b", b"1"), _file("f", b"old", 0o755),
                 _file("gone/x/y", b"y"), _file("s", b"a file")]),
        _tar_gz([(_info("d/.wh..wh..opq"), b""), _file("f", b"new", 0o640), _file("d/c", b"2"),
                 (_info(".wh.gone"), b""), (_info("s", tarfile.SYMTYPE, link="f"), None)]),
    )  # fmt: skip
    listing = overlay_of(layout, tmp_path)
    assert listing["f"] == ("file", 0o640, hashlib.sha256(b"new").hexdigest())
    assert listing["s"] == ("symlink", 0o777, "f")
    assert not any(name.startswith("gone") for name in listing)  # the whole directory
    # The opaque marker hides what the lower layer put in d: only this layer's d/c is seen.
    assert {n for n in listing if n.startswith("d/")} == {"d/c"}
    assert listing["d"][0] == "dir"


@pytest.mark.parametrize("marker_first", [True, False])
def test_opaque_directories_agree_with_the_agent(tmp_path: Path, marker_first: bool) -> None:
    """An opaque directory hides the lower layers' entries, whether its marker comes before
    or after the layer's own entries in it; a directory that is there only for a child of
    this layer is made again (0755, as tar makes it): the build and the agent agree."""
    marker = [(_info("o/.wh..wh..opq"), b"")]
    own = [_file("o/sub/c", b"c"), _file("o/new", b"n")]
    layout = layout_of(
        tmp_path / "l",
        _tar_gz([_file(PERSIST_HOOK, b"#!/bin/sh\n", 0o755), (_info("o", tarfile.DIRTYPE,
                 mode=0o750), None), _file("o/a", b"a"), (_info("o/sub", tarfile.DIRTYPE,
                 mode=0o700), None), _file("o/sub/b", b"b"), _file("keep/k", b"k")]),
        _tar_gz(marker + own if marker_first else own + marker),
    )  # fmt: skip
    listing = overlay_of(layout, tmp_path)
    assert {n for n in listing if n.startswith("o/")} == {"o/sub", "o/sub/c", "o/new"}
    assert listing["o"] == ("dir", 0o750, "")  # the opaque directory itself keeps its mode
    assert listing["o/sub"] == ("dir", 0o755, "")
    assert "keep/k" in listing  # outside the opaque directory nothing changes
    (tmp_path / "agent").mkdir()
    assert listing == newc_listing(staged_by_agent(layout, tmp_path / "agent"))


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ((_info("/etc/abs"), b""), "member '/etc/abs': an absolute member name"),
        ((_info("../up"), b""), r"member '../up': a member name that leaves the tree"),
        ((_info("h", tarfile.LNKTYPE, link="etc/a"), None), "member 'h': a hard link"),
        ((_info("dev/x", tarfile.CHRTYPE), None), "member 'dev/x': a device node"),
        ((_info("l", tarfile.SYMTYPE, link="/etc"), None), "member 'l/f': l/f lies under l"),
    ],
)
def test_unsafe_members_are_refused_naming_layer_and_member(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    layer = _tar_gz([_file("etc/a", b"a"), member, _file("l/f", b"escape?")])
    layout = layout_of(tmp_path / "l", layer)
    digest = f"sha256:{hashlib.sha256(layer).hexdigest()}"
    with pytest.raises(BuildError, match=f"layer {digest}, {message}"):
        overlay_of(layout, tmp_path)
    assert not (tmp_path / "work" / "o.cpio.gz").exists()
    assert not (tmp_path / "work" / "slot-tree").exists()


def test_a_layer_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    layer = _tar_gz([_file("etc/a", b"a")])
    layout = layout_of(tmp_path / "l", layer)
    blob = layout / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()
    blob.write_bytes(_tar_gz([_file("etc/a", b"evil")]))
    with pytest.raises(BuildError, match="does not match its digest"):
        overlay_of(layout, tmp_path)


def test_an_image_without_a_kernel_layer_is_refused(tmp_path: Path) -> None:
    layout = layout_of(tmp_path / "l")
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    other = _tar_gz([_file("etc/a", b"a")])
    manifest["layers"] = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": _put_blob(layout, other), "size": len(other)}]  # fmt: skip
    index["manifests"][0]["digest"] = _put_blob(layout, json.dumps(manifest).encode())
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(BuildError, match="holds boot/vmlinuz: not a bootable provider image"):
        overlay_of(layout, tmp_path)


@pytest.mark.qemu
def test_an_installed_host_runs_the_image_overlay_from_its_first_boot(
    upgradable_images: UpgradableImages, tmp_path: Path
) -> None:
    """Install v1 (BIOS, TCG), boot the disk alone: the agent's first line about the slot
    prints /etc/os-release's PRETTY_NAME, which only v1's overlay layer sets."""
    from qemu_hosts import build_installer

    from edgekit.vm import VirtualMachine, create_disk

    v1 = upgradable_images.v1
    installer = build_installer(upgradable_images, tmp_path / "installer.iso")
    disk = create_disk(tmp_path / "disk.raw", size_mib=2048)
    with VirtualMachine(iso=installer, disks=[disk], serial_log=tmp_path / "install.log") as vm:
        log = vm.wait_exit(timeout=900)
    assert "edgekit-installer: installed" in log, log
    with VirtualMachine(disk=disk, serial_log=tmp_path / "boot.log") as vm:
        log = vm.wait_for(re.compile(r"edgekit-agent: running slot A: image [^\n]*\n"), timeout=600)
    pretty = "edgekit sample OS 12 v1 (demos and tests only, NOT production)"
    assert f"version v1 {v1.digest} ({pretty})" in log, log
