"""Sources for packs: URLs pinned by sha256, local files and directories, OCI artifacts.

Downloads stream into a temporary file in the cache while being hashed, and are renamed
to ``<cache>/sha256/<hex>`` only when the digest matches: a wrong digest or a broken
download leaves nothing in the cache. OCI artifact sources are resolved by a fetcher the
caller supplies (the ORAS publisher will provide one).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Protocol

import attrs
import requests

from edgekit.errors import SourceError

__all__ = [
    "ArtifactFetcher",
    "LocalSource",
    "OciArtifactSource",
    "Source",
    "SourceCache",
    "UrlSource",
    "redact_url",
]

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def _sha256_validator(_: object, __: object, value: str) -> None:
    if not _HEX_RE.match(value.removeprefix("sha256:")):
        raise SourceError(f"sha256 {value!r} is not 64 lowercase hex digits")


@attrs.frozen
class UrlSource:
    """A file at ``url`` whose content must hash to ``sha256`` (hex, ``sha256:`` optional)."""

    url: str
    sha256: str = attrs.field(validator=_sha256_validator)

    @property
    def hex(self) -> str:
        return self.sha256.removeprefix("sha256:")


@attrs.frozen
class LocalSource:
    """A file or directory on this machine, used in place."""

    path: Path = attrs.field(converter=Path)


@attrs.frozen
class OciArtifactSource:
    """An OCI artifact (``registry/repo:tag`` or ``@sha256:``), fetched by an ArtifactFetcher."""

    reference: str


Source = UrlSource | LocalSource | OciArtifactSource


class ArtifactFetcher(Protocol):
    """Pulls an OCI artifact into ``dest`` (a fresh directory) and returns its path."""

    def __call__(self, reference: str, dest: Path) -> Path: ...


def _describe_failure(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return "the server's TLS certificate could not be verified"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "the proxy refused or could not be reached"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timed out connecting to the server"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "could not connect to the server (refused, unreachable, or no such host)"
    if isinstance(exc, requests.exceptions.Timeout):
        return "the server stopped sending data (timed out)"
    return type(exc).__name__


def redact_url(url: str) -> str:
    """``url`` without user info or query string, safe for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + query


class SourceCache:
    """Fetches sources; downloads are kept under ``path`` keyed by their sha256."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        session: requests.Session | None = None,
        timeout: float = 60.0,
        artifact_fetcher: ArtifactFetcher | None = None,
    ) -> None:
        self.path = Path(path)
        self._session = session or requests.Session()
        self._timeout = timeout
        self._artifact_fetcher = artifact_fetcher

    def cached_path(self, sha256_hex: str) -> Path:
        """Where a download with this digest is (or would be) kept."""
        return self.path / "sha256" / sha256_hex

    def fetch(self, source: Source) -> Path:
        """A local path holding the source's content."""
        if isinstance(source, LocalSource):
            if not source.path.exists():
                raise SourceError(f"local source {source.path} does not exist")
            return source.path
        if isinstance(source, UrlSource):
            return self._fetch_url(source)
        if self._artifact_fetcher is None:
            raise SourceError(
                f"OCI artifact source {source.reference}: no artifact fetcher is configured "
                "(install the edgekit-oras plugin)"
            )
        dest = self.path / "artifacts" / hashlib.sha256(source.reference.encode()).hexdigest()
        dest.mkdir(parents=True, exist_ok=True)
        return self._artifact_fetcher(source.reference, dest)

    def _fetch_url(self, source: UrlSource) -> Path:
        final = self.cached_path(source.hex)
        if final.is_file():
            return final  # only verified content is ever renamed to this name
        shown = redact_url(source.url)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-download-", dir=final.parent)
        except OSError as exc:
            raise SourceError(f"cannot use source cache {self.path}: {exc.strerror}") from exc
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                try:
                    with self._session.get(source.url, stream=True, timeout=self._timeout) as resp:
                        if resp.status_code != 200:
                            raise SourceError(
                                f"downloading {shown} failed: HTTP {resp.status_code} "
                                f"{resp.reason or ''}".rstrip()
                            )
                        for chunk in resp.iter_content(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                except requests.RequestException as exc:
                    # The exception text may repeat credentials from the URL: say what
                    # happened in our own words.
                    raise SourceError(
                        f"downloading {shown} failed: {_describe_failure(exc)}"
                    ) from None
            actual = digest.hexdigest()
            if actual != source.hex:
                raise SourceError(
                    f"sha256 mismatch for {shown}: expected {source.hex}, got {actual}"
                )
            os.replace(tmp, final)
        except OSError as exc:
            raise SourceError(
                f"cannot store {shown} in {self.path}: {exc.strerror or exc}"
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return final
