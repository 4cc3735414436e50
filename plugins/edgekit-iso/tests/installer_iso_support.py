"""Helpers shared by the installer ISO tests: inputs, QEMU boots, external tool checks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Literal

from edgekit.cpio import CpioEntry, write_initrd_gz
from edgekit.vm import VirtualMachine

REPO = Path(__file__).resolve().parents[3]
DEB_CACHE = REPO / ".edgekit-cache" / "debs"
IMAGE_REF = "registry.example.com/edgekit/sample:1.0"

USER_DATA = """#cloud-config
stylus:
  site:
    paletteEndpoint: api.example.com
    edgeHostToken: not-a-real-token
    tags:
      name: decoy
    name: "store-installer-042"  # from the installer ISO
install:
  device: /dev/vda
  poweroff: true
"""

SITE_USER_DATA = USER_DATA.replace("store-installer-042", "store-site-777").replace(
    "/dev/vda", "/dev/sdb"
)


def fake_image_tree(root: Path) -> Path:
    """A provider image tree with a stand-in kernel and a real gzip'd cpio initrd."""
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz").write_bytes(bytes(range(256)) * 400)
    write_initrd_gz(
        [CpioEntry.file("init", b"#!/bin/sh\necho base\n", mode=0o755)], root / "boot" / "initrd"
    )
    return root


def oci_layout(root: Path) -> Path:
    """A minimal OCI image layout tagged :data:`IMAGE_REF` (contents are not booted)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    blob = b'{"schemaVersion":2}'
    import hashlib

    digest = hashlib.sha256(blob).hexdigest()
    (blobs / digest).write_bytes(blob)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{digest}",
                "size": len(blob),
                "annotations": {"org.opencontainers.image.ref.name": IMAGE_REF},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    return root


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool and capture text output (stdout+stderr in one string on ``stdout``)."""
    return subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=check
    )


def xorriso_report(iso: Path) -> str:
    return run(
        [
            "xorriso",
            "-indev",
            str(iso),
            "-report_system_area",
            "plain",
            "-report_el_torito",
            "plain",
        ]
    ).stdout


def extract(iso: Path, iso_path: str, dest: Path) -> Path:
    run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", iso_path, str(dest)])
    return dest


def boot(
    iso: Path,
    log: Path,
    *,
    firmware: Literal["bios", "uefi"],
    media: Literal["cd", "disk"],
    extra_cds: tuple[Path, ...] = (),
    timeout: float = 300,
) -> str:
    """Boot ``iso`` in QEMU (TCG) until it powers off; return the serial log.

    QEMU is always killed; a hung boot fails with the log's tail (edgekit.vm.VmError).
    """
    with VirtualMachine(
        iso=iso, firmware=firmware, media=media, cdroms=extra_cds, network=False, serial_log=log
    ) as vm:
        return vm.wait_exit(timeout=timeout)
