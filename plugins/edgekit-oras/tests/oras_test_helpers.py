"""Helpers for edgekit-oras tests: images built with umoci, digests read with skopeo."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest


def run(*argv: str) -> str:
    """Run a tool; fail the test with its stderr if it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed: {proc.stderr}")
    return proc.stdout


def umoci_image(layout: Path, tag: str, files: dict[str, bytes], workdir: Path) -> str:
    """Build image *tag* in *layout* with umoci from *files*; return its manifest digest."""
    if not (layout / "oci-layout").exists():
        run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:{tag}")
    tree = workdir / f"tree-{tag}"
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    run("umoci", "insert", "--image", f"{layout}:{tag}", str(tree), "/")
    return layout_digest(layout, tag)


def layout_digest(layout: Path, tag: str) -> str:
    """The digest index.json gives for *tag*."""
    for d in json.loads((layout / "index.json").read_text())["manifests"]:
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return str(d["digest"])
    raise KeyError(tag)


def add_index(layout: Path, tag: str, children: dict[str, str]) -> str:
    """Tag a multi-arch index over umoci-built images ``{arch: tag}``; return its digest."""
    index = json.loads((layout / "index.json").read_text())
    manifests = []
    for arch, child_tag in children.items():
        d = next(
            m
            for m in index["manifests"]
            if m["annotations"]["org.opencontainers.image.ref.name"] == child_tag
        )
        manifests.append(
            {
                "mediaType": d["mediaType"],
                "digest": d["digest"],
                "size": d["size"],
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        },
        indent=3,  # deliberately unusual formatting: byte-exact pushes must keep it
    ).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(body)
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": len(body),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    (layout / "index.json").write_text(json.dumps(index))
    return digest


def skopeo_digest(ref: str, *extra: str) -> str:
    """Digest of the manifest at ``docker://ref`` as skopeo computes it from the raw bytes."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", *extra, f"docker://{ref}"],
        capture_output=True,
        check=False,
    )
    if raw.returncode != 0:
        pytest.fail(f"skopeo inspect --raw {ref} failed: {raw.stderr.decode()}")
    return "sha256:" + hashlib.sha256(raw.stdout).hexdigest()
