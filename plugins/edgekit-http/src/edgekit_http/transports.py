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

from edgekit.errors import RegistrationError
from edgekit.hub.airgap import write_bundle
from edgekit.hub.security import Secret, new_secret
from edgekit.plugins import Transport

__all__ = ["FileTransport", "HttpTransport", "normalise_endpoint"]

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


class HttpTransport(Transport):
    """Registers over HTTP(S): ``POST {endpoint}/v1/edgehosts/register``.

    Retries connection failures and 5xx answers with jittered exponential backoff, at most
    ``attempts`` tries. Each call sends a host credential as ``Authorization: Bearer``: the
    host's current one when ``host`` carries it as ``"credential"`` (needed to register an
    already registered uid again), else one made for the call, which the hub adopts for a
    new host, so a retry after a lost answer proves the same device. ``ca_cert`` is a PEM
    bundle to trust;
    ``proxies`` (``{"https": "http://proxy:3128"}``) are used as given, otherwise the
    environment's ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` apply. The token is sent in the
    ``EdgeHostToken`` header and never appears in errors, logs or this object's repr.
    """

    name: ClassVar[str] = "http"
    description: ClassVar[str] = "register with a hub over HTTP(S) (retries, custom CA, proxies)"

    def __init__(
        self,
        *,
        ca_cert: str | Path | None = None,
        proxies: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
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

    def _session(self) -> requests.Session:
        session = requests.Session()
        if self.proxies is not None:
            # Explicit proxies replace the environment's (trust_env would merge them back).
            session.trust_env = False
            session.proxies.update(self.proxies)
        return session

    def register(self, endpoint: str, token: str, host: Mapping[str, Any]) -> Mapping[str, Any]:
        """The hub's answer (the host record); its ``credential`` is a :class:`Secret`."""
        base = normalise_endpoint(endpoint)
        secret = token.reveal() if isinstance(token, Secret) else token
        if not secret:
            raise RegistrationError("the registration token is empty")
        if not isinstance(host.get("hostUid"), str):
            raise RegistrationError("the host has no hostUid")
        url = base + REGISTER_PATH
        # A credential made for this registration and sent with every attempt: the hub
        # adopts it for a new host, so a retry after a lost answer proves the same device.
        proof = host.get("credential") or new_secret("ekh_")
        proof = proof.reveal() if isinstance(proof, Secret) else str(proof)
        fields = {k: v for k, v in host.items() if k != "credential"}
        verify: str | bool = str(self.ca_cert) if self.ca_cert is not None else True
        delay = self.backoff
        with self._session() as session:
            for attempt in range(1, self.attempts + 1):
                last = attempt == self.attempts
                try:
                    response = session.post(
                        url,
                        json=fields,
                        headers={
                            "EdgeHostToken": secret,
                            "Accept": "application/json",
                            "Authorization": f"Bearer {proof}",
                        },
                        timeout=self.timeout,
                        verify=verify,
                    )
                except requests.exceptions.SSLError:
                    # Not transient: the certificate will not change between attempts.
                    raise RegistrationError(
                        f"TLS verification of {base} failed"
                        + ("" if self.ca_cert else " (pass ca_cert= for a private CA)")
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
                        return self._answer(response, base)
                    if response.status_code not in _RETRY_STATUS or last:
                        raise self._refused(response, base, attempt)
                    log.info(
                        "registration attempt %d to %s: hub answered %d",
                        attempt,
                        base,
                        response.status_code,
                    )
                self._sleep(min(delay, self.max_backoff) * (0.5 + random.random() / 2))
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _answer(response: requests.Response, base: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("credential"), str):
            raise RegistrationError(f"the hub at {base} sent an answer without a credential")
        data["credential"] = Secret(data["credential"])
        return data

    @staticmethod
    def _refused(response: requests.Response, base: str, attempt: int) -> RegistrationError:
        status = response.status_code
        message = _hub_message(response)
        if status in (401, 403):
            return RegistrationError(
                f"the hub at {base} refused the registration token ({message})"
            )
        if status in _RETRY_STATUS:
            return RegistrationError(
                f"the hub at {base} is unavailable after {attempt} attempts ({message})"
            )
        return RegistrationError(f"the hub at {base} refused the registration ({message})")


class FileTransport(Transport):
    """Writes a registration bundle to removable media, for sites with no route to the hub.

    ``register("file:///media/usb", token, host)`` writes
    ``/media/usb/edgekit-registration-<hostUid>.json`` (see :mod:`edgekit.hub.airgap` for
    the HMAC design); the hub imports it with ``import_registrations``.
    """

    name: ClassVar[str] = "file"
    description: ClassVar[str] = "write an HMAC-signed registration bundle for airgapped sites"

    def register(self, endpoint: str, token: str, host: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{"bundle": <path>, "hostUid": ..., "state": "pending-import"}``."""
        parsed = urlparse(endpoint)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise RegistrationError(
                f"endpoint {endpoint!r} is not a file:///path URL of the registration media"
            )
        # A host that is registered already proves it is the same device with its current
        # credential (the bundle's hostProof); the credential itself never goes on the media.
        fields = {k: v for k, v in host.items() if k != "credential"}
        path = write_bundle(
            Path(unquote(parsed.path)), token, fields, credential=host.get("credential")
        )
        return {"bundle": str(path), "hostUid": host["hostUid"], "state": "pending-import"}
