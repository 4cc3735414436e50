"""Helpers for edgekit-oras tests: images built with umoci, digests read with skopeo."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests


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


Intercept = Callable[[str, str, bytes], "tuple[int, dict[str, str], bytes] | None"]
AddHeaders = Callable[[str, str, bytes, int], dict[str, str]]


class Proxy:
    """An HTTP proxy on 127.0.0.1 in front of *upstream* (a registry URL) for fault tests.

    ``intercept(method, path, body)`` may answer a request itself: a ``(status, headers,
    body)`` tuple, or ``RESET`` to drop the connection; ``None`` forwards it.
    ``add_headers(method, path, body, status)`` adds headers to forwarded answers.
    Locations the registry sends are rewritten to point at the proxy.
    """

    RESET: tuple[int, dict[str, str], bytes] = (-1, {}, b"")

    def __init__(
        self,
        upstream: str,
        intercept: Intercept | None = None,
        add_headers: AddHeaders | None = None,
    ) -> None:
        self.upstream = upstream
        self.intercept = intercept
        self.add_headers = add_headers
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", headers.get("Content-Length", str(len(data))))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                method = self.command
                answer = owner.intercept(method, self.path, body) if owner.intercept else None
                if answer == Proxy.RESET:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if answer is not None:
                    self._reply(*answer)
                    # Close after a made-up answer, so a short body ends in EOF, not a stall.
                    self.close_connection = True
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                r = requests.request(
                    method, owner.upstream + self.path, headers=headers, data=body,
                    allow_redirects=False, timeout=30,
                )  # fmt: skip
                out = {
                    k: v.replace(owner.upstream, owner.url)
                    for k, v in r.headers.items()
                    if k.lower() not in ("transfer-encoding", "connection", "content-length")
                }
                if "Content-Length" in r.headers and method == "HEAD":
                    out["Content-Length"] = r.headers["Content-Length"]
                if owner.add_headers:
                    out.update(owner.add_headers(method, self.path, body, r.status_code))
                self._reply(r.status_code, out, r.content)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop the proxy."""
        self.server.shutdown()
        self.server.server_close()
