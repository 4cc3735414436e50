"""HTTP client for the OCI distribution API, built on oras-py's session and credential lookup.

oras-py supplies the ``requests`` session and Docker ``config.json`` reading (``auths``,
``credsStore``, ``credHelpers``).  Everything that moves bytes is done here instead: uploads
stream from file (oras-py's monolithic upload reads a whole blob into memory), manifests are
PUT byte-exact with their own media type, bearer tokens are cached per scope (oras-py keeps a
single token, which breaks cross-repository mounts), and retries use a bounded, configurable
exponential backoff. The options, credentials, retry policy and errors of a connection are
:mod:`.connection`'s (re-exported here).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlencode, urljoin

import oras.auth.utils  # type: ignore[import-untyped]
import oras.provider  # type: ignore[import-untyped]
import oras.utils  # type: ignore[import-untyped]
import requests
from requests.adapters import HTTPAdapter

from edgekit import limits
from edgekit import oci_types as mt
from edgekit.errors import PublishError

from .connection import (
    AuthError,
    ConnectionOptions,
    Credentials,
    NotFound,
    RetryPolicy,
    TransientError,
    _load_docker_auth,
)

__all__ = [
    "AuthError",
    "ConnectionOptions",
    "Credentials",
    "NotFound",
    "RegistryClient",
    "RetryPolicy",
    "TransientError",
]

T = TypeVar("T")


class _FileSlice:
    """``size`` bytes of a file from ``offset``, as a re-iterable request body of known length.

    requests sends an iterable with ``__len__`` with a Content-Length, pulling 1 MiB at a time,
    so a blob of any size costs only one chunk of memory.  Re-iterating reopens the file, which
    lets a request be re-sent after an auth challenge.
    """

    def __init__(
        self,
        opener: Callable[[], BinaryIO],
        offset: int,
        size: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self._opener, self._offset, self._size, self._on_bytes = opener, offset, size, on_bytes

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        left = self._size
        with self._opener() as f:
            f.seek(self._offset)
            while left > 0:
                chunk = f.read(min(1 << 20, left))
                if not chunk:
                    raise PublishError(
                        f"local blob file ended {left} bytes early (changed during push?)"
                    )
                left -= len(chunk)
                if self._on_bytes is not None:
                    self._on_bytes(len(chunk))
                yield chunk


_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """One registry host: authenticated, retried requests and the distribution API calls."""

    def __init__(self, host: str, options: ConnectionOptions | None = None) -> None:
        self.host = host
        self.options = options or ConnectionOptions()
        o = self.options
        verify: bool | str = str(o.ca_cert) if o.ca_cert is not None else True
        why = None if o.ca_cert is None else limits.file_kind_problem(Path(o.ca_cert))
        if why == "no such file":
            raise PublishError(f"CA certificate {o.ca_cert} does not exist")
        if why is not None:  # a FIFO or a directory is there, just not a certificate file
            raise PublishError(f"CA certificate {o.ca_cert}: {why}")
        # oras-py gives a session with cookies disabled; we keep its credential lookup too.
        self._oras = oras.provider.Registry(
            host, insecure=o.plain_http, tls_verify=verify, auth_backend="basic"
        )
        self.session: requests.Session = self._oras.session
        self._verify = verify
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(10, o.concurrency * 2))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.base = f"{'http' if o.plain_http else 'https'}://{host}"
        self._basic: str | None = o.credentials.basic() if o.credentials else None
        self._basic_loaded = o.credentials is not None
        self._scheme: str | None = None  # "basic" or "bearer" once challenged
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RegistryClient(host={self.host!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    # --- auth ---------------------------------------------------------------------------
    def _basic_auth(self) -> str | None:
        with self._lock:
            if not self._basic_loaded:
                self._basic = _load_docker_auth(self.host, self.options.auth_config, self._oras)
                self._basic_loaded = True
            return self._basic

    def _auth_header(self, scope: str) -> dict[str, str]:
        if self._scheme == "basic":
            b = self._basic_auth()
            return {"Authorization": f"Basic {b}"} if b else {}
        if self._scheme == "bearer":
            token = self._tokens.get(scope)
            return {"Authorization": f"Bearer {token}"} if token else {}
        return {}

    def _answer_challenge(self, resp: requests.Response, scope: str, sent_auth: bool) -> None:
        header = resp.headers.get("WWW-Authenticate", "")
        scheme = header.split(" ", 1)[0].lower()
        if scheme == "basic":
            if sent_auth and self._scheme == "basic":
                raise AuthError(
                    f"registry {self.host} rejected the username or password (401 Unauthorized)"
                )
            if self._basic_auth() is None:
                raise AuthError(
                    f"registry {self.host} requires authentication and no credentials were "
                    "given or found in the Docker config (docker login, or pass credentials)"
                )
            self._scheme = "basic"
            return
        if scheme == "bearer":
            params = dict(_CHALLENGE_RE.findall(header))
            realm = params.get("realm")
            if not realm:
                raise AuthError(f"registry {self.host} sent a bearer challenge without a realm")
            if sent_auth and self._scheme == "bearer" and scope in self._tokens:
                # A token we just got was refused: drop it and fetch once more below.
                del self._tokens[scope]
                if params.get("error") != "invalid_token":
                    raise AuthError(f"registry {self.host} refused access to {scope} (401)")
            query: list[tuple[str, str]] = []
            if params.get("service"):
                query.append(("service", params["service"]))
            scopes = {s for s in scope.split(" ") if s}
            if params.get("scope"):
                scopes.update(params["scope"].split(" "))
            query += [("scope", s) for s in sorted(scopes)]
            headers = {}
            b = self._basic_auth()
            if b:
                headers["Authorization"] = f"Basic {b}"
            try:
                r = self.session.get(
                    realm,
                    params=query,
                    headers=headers,
                    timeout=self.options.timeout,
                    verify=self._verify,
                )
            except requests.RequestException as e:
                raise TransientError(
                    f"token server of {self.host} unreachable: {type(e).__name__}"
                ) from None
            if r.status_code in (401, 403):
                raise AuthError(
                    f"token server of {self.host} rejected the credentials ({r.status_code})"
                )
            if r.status_code >= 500:
                raise TransientError(f"token server of {self.host} answered {r.status_code}")
            if r.status_code != 200:
                raise AuthError(f"token server of {self.host} answered {r.status_code}")
            try:
                body = r.json()
                token = body.get("token") or body.get("access_token")
            except ValueError:
                token = None
            if not isinstance(token, str) or not token:
                raise AuthError(f"token server of {self.host} returned no token")
            self._scheme = "bearer"
            self._tokens[scope] = token
            return
        raise AuthError(f"registry {self.host} answered 401 with an unsupported challenge")

    # --- requests -----------------------------------------------------------------------
    def url(self, path: str) -> str:
        """Absolute URL for *path* (``/v2/...``) or a Location the registry returned."""
        return urljoin(self.base + "/", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        ok: tuple[int, ...],
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        """One request, answering auth challenges; raises on statuses outside *ok*.

        5xx/429 and connection failures raise :class:`TransientError`; 404 raises
        :class:`NotFound`; 401/403 after authenticating raise :class:`AuthError`.
        """
        url = self.url(path)
        for _ in range(3):
            h = dict(headers or {})
            auth = self._auth_header(scope)
            h.update(auth)
            try:
                # verify= per request: a session-level value loses to REQUESTS_CA_BUNDLE.
                resp = self.session.request(
                    method,
                    url,
                    headers=h,
                    data=data,
                    stream=stream,
                    timeout=self.options.timeout,
                    verify=self._verify,
                )
            except requests.exceptions.SSLError as e:
                raise PublishError(
                    f"TLS verification failed for {self.host}: {_reason(e)} "
                    # Named for each way in: the CLI, the Python API and the forge file.
                    "(a private CA: --ca-cert FILE, ca_cert= or registry.caCert; a registry"
                    " without TLS: --plain-http, plain_http=True or registry.plainHttp)"
                ) from None
            except (requests.ConnectionError, requests.Timeout) as e:
                raise TransientError(f"cannot reach {self.host}: {_reason(e)}") from None
            if resp.status_code == 401:
                resp.close()
                self._answer_challenge(resp, scope, bool(auth))
                continue
            if resp.status_code in ok:
                return resp
            detail = _error_detail(resp)
            resp.close()
            if resp.status_code == 403:
                raise AuthError(f"registry {self.host} denied {method} {_path(url)}{detail}")
            if resp.status_code == 404:
                raise NotFound(f"{method} {_path(url)}: not found{detail}")
            if resp.status_code >= 500 or resp.status_code == 429:
                raise TransientError(
                    f"{method} {_path(url)}: registry answered {resp.status_code}{detail}"
                )
            raise PublishError(
                f"{method} {_path(url)}: registry answered {resp.status_code}{detail}"
            )
        raise AuthError(f"registry {self.host}: authentication did not succeed for {scope}")

    def retry(self, what: str, fn: Callable[[], T]) -> T:
        """Run *fn*, retrying :class:`TransientError` with the configured backoff."""
        policy = self.options.retry
        for attempt in range(policy.attempts):
            try:
                return fn()
            except TransientError as e:
                if attempt + 1 >= policy.attempts:
                    raise TransientError(
                        f"{what}: gave up after {policy.attempts} attempts: {e}"
                    ) from None
                time.sleep(policy.delay(attempt))
        raise AssertionError("unreachable")

    # --- distribution API -----------------------------------------------------------------
    def ping(self, repository: str) -> None:
        """Check the registry answers and accepts our credentials for *repository*."""
        self.retry(
            f"ping {self.host}",
            lambda: self.request("GET", "/v2/", scope=_scope(repository), ok=(200,)).close(),
        )

    def blob_exists(self, repository: str, digest: str) -> bool:
        """HEAD the blob."""

        def head() -> bool:
            try:
                self.request(
                    "HEAD", f"/v2/{repository}/blobs/{digest}", scope=_scope(repository), ok=(200,)
                ).close()
            except NotFound:
                return False
            return True

        return self.retry(f"HEAD blob {digest}", head)

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Try a cross-repository mount; True if the registry mounted the blob."""
        scope = f"{_scope(repository)} repository:{source}:pull"
        q = urlencode({"mount": digest, "from": source})

        def post() -> bool:
            r = self.request(
                "POST", f"/v2/{repository}/blobs/uploads/?{q}", scope=scope, ok=(201, 202)
            )
            r.close()
            if r.status_code == 202 and "Location" in r.headers:
                # Not mounted; the registry opened an upload session we will not use.
                with contextlib.suppress(PublishError):
                    self.request(
                        "DELETE", r.headers["Location"], scope=scope, ok=(204, 404)
                    ).close()
            return r.status_code == 201

        try:
            return self.retry(f"mount {digest}", post)
        except NotFound:
            return False

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        opener: Callable[[], BinaryIO],
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Upload a blob streamed from *opener*, chunked or in one PUT, with retries.

        In chunked mode a retry resumes the same upload session from the offset the registry
        reports (``GET`` on the session, ``Range: 0-<last>``), so a registry restart mid-blob
        does not resend what it already stored; if the session is gone it starts afresh.
        """
        scope = _scope(repository)
        o = self.options
        session: list[str] = []  # the last upload Location the registry gave us

        def attempt() -> None:
            resumed = self._resume_upload(session[0], scope) if o.chunked and session else None
            if resumed is not None:
                location, offset = resumed
            else:
                session.clear()
                r = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, ok=(202,))
                r.close()
                location, offset = _location(r), 0
            if o.chunked:
                session[:] = [location]
                while offset < size:
                    n = min(o.chunk_size, size - offset)
                    r = self.request(
                        "PATCH",
                        location,
                        scope=scope,
                        ok=(202,),
                        data=_FileSlice(opener, offset, n, on_bytes),
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{offset + n - 1}",
                        },
                    )
                    r.close()
                    location = _location(r)
                    session[:] = [location]
                    offset += n
                body: Any = b""
            else:
                body = _FileSlice(opener, 0, size, on_bytes)
            sep = "&" if "?" in location else "?"
            try:
                self.request(
                    "PUT",
                    f"{location}{sep}{urlencode({'digest': digest})}",
                    scope=scope,
                    ok=(201,),
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                ).close()
            except (TransientError, AuthError):
                raise
            except PublishError as e:
                if resumed is None:
                    raise
                # The resumed session did not add up: start over in a new session.
                session.clear()
                raise TransientError(f"resumed upload of {digest} was refused ({e})") from None

        self.retry(f"upload blob {digest}", attempt)

    def _resume_upload(self, location: str, scope: str) -> tuple[str, int] | None:
        """``(location, offset)`` to continue an upload session, or None to start afresh."""
        try:
            r = self.request("GET", location, scope=scope, ok=(204,))
        except TransientError:
            raise
        except PublishError:
            return None
        r.close()
        m = re.fullmatch(r"0-(\d+)", r.headers.get("Range", ""))
        new_location = r.headers.get("Location") or location
        # "0-0" means either nothing or one byte was stored: ambiguous, so start afresh.
        if m is None or int(m[1]) == 0:
            return None
        return new_location, int(m[1]) + 1

    def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> Mapping[str, str]:
        """PUT manifest *data* byte-exact with its own media type; returns response headers."""

        def put() -> Mapping[str, str]:
            r = self.request(
                "PUT",
                f"/v2/{repository}/manifests/{reference}",
                scope=_scope(repository),
                ok=(201,),
                data=data,
                headers={"Content-Type": media_type},
            )
            r.close()
            return r.headers

        return self.retry(f"PUT manifest {reference}", put)

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """``(bytes, media type)`` of a manifest or index by tag or digest."""

        def get() -> tuple[bytes, str]:
            r = self.request(
                "GET",
                f"/v2/{repository}/manifests/{reference}",
                scope=_scope(repository, push=False),
                ok=(200,),
                headers={"Accept": mt.ACCEPT},
            )
            content = r.content
            mtype = r.headers.get("Content-Type", "").split(";")[0].strip()
            if not mtype or mtype == "application/json":
                try:
                    mtype = json.loads(content).get("mediaType", mt.OCI_MANIFEST)
                except (ValueError, AttributeError):
                    raise PublishError(f"manifest {reference} is not a JSON object") from None
            return content, mtype

        return self.retry(f"GET manifest {reference}", get)

    def open_blob(
        self, repository: str, digest: str, *, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        """A streaming GET of a blob (the caller verifies while reading, and closes).

        *headers* may ask for a ``Range``; the answer is then 206 (that range) or 200 (the
        registry ignored it and sends everything).
        """
        return self.request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            scope=_scope(repository, push=False),
            ok=(200, 206) if headers and "Range" in headers else (200,),
            headers=headers,
            stream=True,
        )

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None:
        """The referrers API index for *digest*, or None if the registry lacks the API."""

        def get() -> dict[str, Any] | None:
            try:
                r = self.request(
                    "GET",
                    f"/v2/{repository}/referrers/{digest}",
                    scope=_scope(repository, push=False),
                    ok=(200,),
                    headers={"Accept": mt.OCI_INDEX},
                )
            except NotFound:
                return None
            if r.headers.get("Content-Type", "").split(";")[0].strip() != mt.OCI_INDEX:
                return None
            data: dict[str, Any] = r.json()
            return data

        return self.retry(f"GET referrers {digest}", get)


def _location(resp: requests.Response) -> str:
    location = resp.headers.get("Location")
    if not location:
        raise PublishError(f"{resp.request.method} {_path(resp.url)}: registry sent no Location")
    return location


def _scope(repository: str, *, push: bool = True) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


def _path(url: str) -> str:
    # Drop the upload session state and digest query so messages stay short.
    return url.split("?", 1)[0]


def _reason(e: Exception) -> str:
    text = str(e)
    for marker in (
        "Connection refused",
        "Connection reset",
        "timed out",
        "Name or service not known",
        "Failed to resolve",
        "Temporary failure in name resolution",
    ):
        if marker in text:
            return marker.lower()
    return type(e).__name__


def _error_detail(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        msgs = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return ""
    return f" ({'; '.join(msgs)})" if msgs else ""
