"""Registration transports: ``http`` (the hub's register call) and ``file`` (airgap bundles)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlparse

import requests

from edgekit.errors import Problem, RegistrationError
from edgekit.hub.airgap import find_bundles, write_bundle
from edgekit.hub.client import HubRequestError
from edgekit.hub.security import Secret, new_secret
from edgekit.plugins import (
    BuildContext,
    Received,
    ReceiveRequest,
    RegistrationReceipt,
    RegistrationRequest,
    Transport,
)

__all__ = ["FileTransport", "HttpTransport", "RegistrationRefused", "normalise_endpoint"]

log = logging.getLogger("edgekit.transport")

REGISTER_PATH = "/v1/edgehosts/register"
#: Statuses worth retrying: the hub (or a proxy in front of it) is briefly unavailable.
_RETRY_STATUS = frozenset({500, 502, 503, 504})


def normalise_endpoint(endpoint: str) -> str:
    """A base URL: Palette-style ``api.example.com`` becomes ``https://api.example.com``."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise RegistrationError("the registration endpoint is empty")
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RegistrationError(f"endpoint {endpoint!r} is not an http(s) URL")
    return endpoint


def _hub_message(response: requests.Response) -> str:
    """``"401 InvalidToken: the registration token is not known"`` from the hub's JSON."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and "message" in data:
        text = f"{response.status_code} {data.get('code', 'Error')}: {data['message']}"
        problems = data.get("problems")
        if isinstance(problems, list):
            text += "".join(
                f"\n  {p.get('path')}: {p.get('message')}" for p in problems if isinstance(p, dict)
            )
        return text
    return f"{response.status_code} {response.reason or 'error'}"


class RegistrationRefused(HubRequestError):
    """The hub answered a registration with an error: ``status``, ``code``, ``problems``."""

    def __init__(self, status: int, code: str, hub_message: str, text: str, problems: Any) -> None:
        super().__init__(status, code, hub_message, problems)
        self.args = (text,)  # the message says what happened, in the transport's words

    def __str__(self) -> str:
        return str(self.args[0])


def _option_problems(options: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for key, value in options.items():
        if key == "proxies":
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                problems.append(Problem("proxies", "must map a scheme to a proxy URL"))
        elif key == "attempts":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(
                    Problem("attempts", f"must be an integer of at least 1, not {value!r}")
                )
        else:
            problems.append(
                Problem(str(key), "unknown option; the http transport takes proxies, attempts")
            )
    return problems


class HttpTransport(Transport):
    """Registers over HTTP(S): ``POST {endpoint}/v1/edgehosts/register``.

    The one implementation of registration with retries: :class:`edgekit.hub.HostClient`
    registers through it. Retries connection failures and 5xx answers with jittered
    exponential backoff for up to the request's ``retry_for`` seconds (and at most
    ``attempts`` tries when set). Each call sends a host credential as ``Authorization:
    Bearer``: the request's ``credential`` (the host's current one, needed to register an
    already registered uid again, or one made for a first registration), else one made for
    the call, which the hub adopts for a new host, so a retry after a lost answer proves the
    same device. ``ca_cert`` is a PEM bundle to trust (the request's wins); ``proxies``
    (``{"https": "http://proxy:3128"}``) are used as given, otherwise the environment's
    ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` apply. Forge-file options: ``proxies``,
    ``attempts``. The token is sent in the ``EdgeHostToken`` header and never appears in
    errors, logs or this object's repr. A refusal is a
    :class:`~edgekit.hub.client.HubRequestError` (``status``, ``code``, ``problems``).
    """

    name: ClassVar[str] = "http"
    description: ClassVar[str] = "register with a hub over HTTP(S) (retries, custom CA, proxies)"

    def __init__(
        self,
        *,
        ca_cert: str | Path | None = None,
        proxies: Mapping[str, str] | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts is not None and attempts < 1:
            raise RegistrationError(f"attempts must be at least 1, not {attempts}")
        self.ca_cert = Path(ca_cert) if ca_cert is not None else None
        self.proxies = dict(proxies) if proxies is not None else None
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"HttpTransport(ca_cert={self.ca_cert!r}, attempts={self.attempts})"

    @classmethod
    def options_problems(cls, options: Mapping[str, Any]) -> list[Problem]:
        return _option_problems(options)

    def _session(self, proxies: Mapping[str, str] | None) -> requests.Session:
        session = requests.Session()
        if proxies is not None:
            # Explicit proxies replace the environment's (trust_env would merge them back).
            session.trust_env = False
            session.proxies.update(proxies)
        return session

    def register(self, request: RegistrationRequest, ctx: BuildContext) -> RegistrationReceipt:
        """The hub's answer: the host record and its credential (a :class:`Secret`)."""
        base = normalise_endpoint(request.endpoint)
        token = request.token
        secret = token.reveal() if isinstance(token, Secret) else str(token or "")
        if not secret:
            raise RegistrationError("the registration token is empty")
        host = request.host
        uid = host.get("hostUid")
        if not isinstance(uid, str):
            raise RegistrationError("the host has no hostUid")
        options = self.options(ctx)
        proxies = options.get("proxies", self.proxies)
        attempts = options.get("attempts", self.attempts)
        ca_cert = request.ca_cert or self.ca_cert
        timeout = self.timeout if self.timeout is not None else request.timeout
        url = base + REGISTER_PATH
        # A credential made for this registration and sent with every attempt: the hub
        # adopts it for a new host, so a retry after a lost answer proves the same device.
        proof = request.credential or host.get("credential") or new_secret("ekh_")
        proof = proof.reveal() if isinstance(proof, Secret) else str(proof)
        fields = {k: v for k, v in host.items() if k != "credential"}
        verify: str | bool = str(ca_cert) if ca_cert is not None else True
        deadline = time.monotonic() + request.retry_for
        delay = self.backoff
        attempt = 0
        with self._session(proxies) as session:
            while True:
                attempt += 1
                wait = min(delay, self.max_backoff) * (0.5 + random.random() / 2)
                last = (attempts is not None and attempt >= attempts) or (
                    time.monotonic() + wait > deadline
                )
                try:
                    response = session.post(
                        url,
                        json=fields,
                        headers={
                            "EdgeHostToken": secret,
                            "Accept": "application/json",
                            "Authorization": f"Bearer {proof}",
                        },
                        timeout=timeout,
                        verify=verify,
                    )
                except requests.exceptions.SSLError:
                    # Not transient: the certificate will not change between attempts.
                    raise RegistrationError(
                        f"TLS verification of {base} failed"
                        + ("" if ca_cert else " (pass ca_cert= for a private CA)")
                    ) from None
                except requests.RequestException as exc:
                    # Only the exception's type: its text could name a proxy's credentials.
                    reason = type(exc).__name__
                    if last:
                        raise RegistrationError(
                            f"cannot reach the hub at {base} after {attempt} attempts: {reason}"
                        ) from None
                    log.info("registration attempt %d to %s failed: %s", attempt, base, reason)
                else:
                    if response.ok:
                        return self._answer(response, base, uid)
                    if response.status_code not in _RETRY_STATUS or last:
                        raise self._refused(response, base, attempt)
                    log.info(
                        "registration attempt %d to %s: hub answered %d",
                        attempt,
                        base,
                        response.status_code,
                    )
                self._sleep(wait)
                delay *= 2

    @staticmethod
    def _answer(response: requests.Response, base: str, uid: str) -> RegistrationReceipt:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("credential"), str):
            raise RegistrationError(f"the hub at {base} sent an answer without a credential")
        credential = Secret(data.pop("credential"))
        return RegistrationReceipt(uid, "registered", data, credential=credential)

    @staticmethod
    def _refused(response: requests.Response, base: str, attempt: int) -> RegistrationRefused:
        status = response.status_code
        message = _hub_message(response)
        if status in (401, 403):
            text = f"the hub at {base} refused the registration token ({message})"
        elif status in _RETRY_STATUS:
            text = f"the hub at {base} is unavailable after {attempt} attempts ({message})"
        else:
            text = f"the hub at {base} refused the registration ({message})"
        try:
            data = response.json()
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        problems = [
            Problem(str(p.get("path")), str(p.get("message")))
            for p in data.get("problems", [])
            if isinstance(p, dict)
        ]
        code = str(data.get("code", "HttpError"))
        return RegistrationRefused(
            status, code, str(data.get("message", response.reason or "")), text, problems
        )


class FileTransport(Transport):
    """Writes a registration bundle to removable media, for sites with no route to the hub.

    ``register`` with endpoint ``file:///media/usb`` writes
    ``/media/usb/edgekit-registration-<hostUid>.json`` (see :mod:`edgekit.hub.airgap` for
    the HMAC design); on the hub, ``receive`` collects the bundles from the media
    (``edgekit hub import /media/usb``) and the hub imports them.
    """

    name: ClassVar[str] = "file"
    description: ClassVar[str] = "write an HMAC-signed registration bundle for airgapped sites"

    def register(self, request: RegistrationRequest, ctx: BuildContext) -> RegistrationReceipt:
        """A receipt in state ``pending-import`` naming the bundle written."""
        endpoint = request.endpoint
        parsed = urlparse(endpoint)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise RegistrationError(
                f"endpoint {endpoint!r} is not a file:///path URL of the registration media"
            )
        host = request.host
        # A host that is registered already proves it is the same device with its current
        # credential (the bundle's hostProof); the credential itself never goes on the media.
        credential = request.credential or host.get("credential")
        fields = {k: v for k, v in host.items() if k != "credential"}
        token = request.token.reveal() if isinstance(request.token, Secret) else request.token
        path = write_bundle(Path(unquote(parsed.path)), token, fields, credential=credential)
        return RegistrationReceipt(str(host["hostUid"]), "pending-import", bundle=path)

    def receive(self, request: ReceiveRequest, ctx: BuildContext) -> Received:
        """The bundles at ``request.source``: a bundle file, a directory of them, or a
        ``file:///`` URL of either."""
        source = request.source
        parsed = urlparse(source)
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else ctx.resolve(source)
        return Received(tuple(find_bundles([path])))
