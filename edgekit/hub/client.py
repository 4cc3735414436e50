"""Python clients of the hub: :class:`HubClient` for admins, :class:`HostClient` for agents."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests
import urllib3

from edgekit.errors import Problem, RegistrationError
from edgekit.hub import client_rollouts as _rollouts
from edgekit.hub.client_clusters import (
    ClusterApi,
    EventApi,
    HostList,
    HostSummary,
    HubCluster,
    ProfileApi,
    cluster_body,
    summary,
)
from edgekit.hub.results import DesiredState, Host, Registration, Token
from edgekit.hub.security import Secret, new_secret

if TYPE_CHECKING:
    from edgekit.plugins import RegistrationReceipt
    from edgekit.plugins.manager import PluginManager

__all__ = [
    "DesiredState",
    "Host",
    "HostClient",
    "HostSummary",
    "HubClient",
    "HubCluster",
    "HubRequestError",
    "Registration",
    "Token",
    "cluster_body",
    "connect",
    "parse_duration",
]

T = TypeVar("T")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class HubRequestError(RegistrationError):
    """The hub refused a request; ``status``, ``code`` and ``problems`` say why."""

    def __init__(
        self, status: int, code: str, message: str, problems: Sequence[Problem] = ()
    ) -> None:
        self.status = status
        self.code = code
        self.problems = tuple(problems)
        lines = [f"hub refused the request ({status} {code}): {message}"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


#: OpenSSL's reasons when the other end does not speak TLS (a plain-http hub).
_NOT_TLS = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long")


def _unreachable_hint(exc: requests.RequestException, ca_cert: bool = False) -> str:
    """What to check for the failures a new user meets (the exception's own text is not
    shown: it can be long and names nothing the user can act on; only OpenSSL's reason
    codes in it are looked at). ``ca_cert``: whether a CA bundle was given."""
    if isinstance(exc, requests.exceptions.SSLError):
        text = str(exc)
        if any(reason in text for reason in _NOT_TLS):
            return " (the server does not speak TLS: is the hub serving plain http? use http://)"
        if "NO_CERTIFICATE_OR_CRL_FOUND" in text or "PEM lib" in text:
            return " (the CA bundle given, --ca-cert or ca_cert=, holds no PEM certificate)"
        if ca_cert:
            return (
                " (TLS verification failed with the CA bundle given: did that CA sign the"
                " hub's certificate, and does the certificate name the URL's host?)"
            )
        return (
            " (TLS verification failed: a hub with a private CA needs its CA bundle,"
            " --ca-cert or ca_cert=)"
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return " (no answer in time: is the hub overloaded, or the address filtered?)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return " (nothing answered: is a hub serving at that URL? --hub or $EDGEKIT_HUB_URL)"
    return ""


def parse_duration(value: str | timedelta) -> timedelta:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"90s"``, ``"2w"`` (or a timedelta) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION_RE.match(value)
    if match is None:
        raise RegistrationError(
            f"duration {value!r} is not understood: use a number and a unit s, m, h, d or w"
        )
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        raise RegistrationError(f"time {value!r} has no time zone")
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _site_names(sites: Iterable[str | Any]) -> list[str]:
    """Site names out of names or model ``Site`` objects (anything with a ``name``)."""
    return [s if isinstance(s, str) else str(s.name) for s in sites]


# -- transport ------------------------------------------------------------------------------
def _connect_failed(exc: requests.RequestException) -> bool:
    """Whether the request surely never reached the hub (safe to retry any call)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError | ConnectionRefusedError)


class _Transport:
    """A requests session with a base URL, JSON errors and retries with backoff."""

    def __init__(
        self,
        url: str,
        *,
        ca_cert: str | Path | None,
        timeout: float,
        retry_for: float,
    ) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        # Passed per request: requests lets REQUESTS_CA_BUNDLE override ``session.verify``.
        self.verify: str | bool = str(ca_cert) if ca_cert is not None else True
        self.timeout = timeout
        self.retry_for = retry_for

    def call(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request; retry (jittered exponential backoff, up to ``retry_for`` seconds)
        on connection failures and 502/503/504, and on any failure when ``idempotent``."""
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            try:
                response = self.session.request(
                    method,
                    self.url + path,
                    headers=dict(headers or {}),
                    json=body,
                    params=dict(params) if params else None,
                    timeout=self.timeout if timeout is None else timeout,
                    verify=self.verify,
                )
            except requests.RequestException as exc:
                retry = idempotent or _connect_failed(exc)
                if not retry or time.monotonic() + delay > deadline:
                    # The exception's text names the URL only; headers are not in it.
                    raise RegistrationError(
                        f"cannot reach the hub at {self.url}: {type(exc).__name__}"
                        f"{_unreachable_hint(exc, ca_cert=self.verify is not True)}"
                    ) from None
            else:
                if response.status_code in (502, 503, 504) and time.monotonic() + delay < deadline:
                    pass
                else:
                    return self._answer(response)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    @staticmethod
    def _answer(response: requests.Response) -> Any:
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.ok:
            return data
        if not isinstance(data, dict):
            data = {"code": "HttpError", "message": response.reason or "no message"}
        problems = [Problem(p["path"], p["message"]) for p in data.get("problems", [])]
        raise HubRequestError(
            response.status_code,
            str(data.get("code")),
            str(data.get("message")),
            problems,
        )


# -- admin client ---------------------------------------------------------------------------
class TokenApi:
    """Registration tokens (``client.tokens``)."""

    def __init__(self, client: HubClient) -> None:
        self._c = client

    def create(
        self,
        name: str,
        *,
        site: str | None = None,
        expires_in: str | timedelta = "30d",
        expiry: datetime | None = None,
        max_hosts: int | None = None,
        project: str | None = None,
        sites: Iterable[str] | None = None,
    ) -> Token:
        """A new token; its ``secret`` is only ever available on this returned object.

        ``site`` binds it to one site (hosts register into it); ``sites`` to a set, e.g. a
        forge's inventory (``forge.sites``): a host must name one of them, and any other
        is refused (403 ``SiteNotAllowed``)."""
        when = expiry if expiry is not None else datetime.now(UTC) + parse_duration(expires_in)
        spec: dict[str, Any] = {"expiry": _rfc3339(when)}
        if site is not None:
            spec["site"] = site
        if max_hosts is not None:
            spec["maxHosts"] = max_hosts
        if project is not None:
            spec["defaultProjectUid"] = project
        if sites is not None:
            spec["sites"] = _site_names(sites)
        data = self._c._admin(
            "POST", "/v1/edgehosts/tokens", {"metadata": {"name": name}, "spec": spec}
        )
        return Token.from_json(data)

    def create_many(
        self,
        sites: Iterable[str | Any],
        *,
        name_prefix: str = "",
        expires_in: str | timedelta = "30d",
        expiry: datetime | None = None,
        max_hosts: int | None = None,
        project: str | None = None,
    ) -> list[Token]:
        """One token per site (a name, or a model ``Site`` such as ``forge.sites``' items),
        each named ``name_prefix + site`` and bound to its site, in the sites' order.

        One request and one transaction: when any site is refused (every problem is
        reported at once), no token is created."""
        when = expiry if expiry is not None else datetime.now(UTC) + parse_duration(expires_in)
        spec: dict[str, Any] = {"expiry": _rfc3339(when), "sites": _site_names(sites)}
        if max_hosts is not None:
            spec["maxHosts"] = max_hosts
        if project is not None:
            spec["defaultProjectUid"] = project
        body = {"metadata": {"namePrefix": name_prefix}, "spec": spec}
        data = self._c._admin("POST", "/v1/edgehosts/tokens/batch", body)
        return [Token.from_json(t) for t in data["items"]]

    def list(self) -> list[Token]:
        """Every token (without secrets)."""
        data = self._c._admin("GET", "/v1/edgehosts/tokens")
        return [Token.from_json(t) for t in data["items"]]

    def get(self, uid: str) -> Token:
        """One token."""
        return Token.from_json(self._c._admin("GET", f"/v1/edgehosts/tokens/{uid}"))

    def revoke(self, token: Token | str) -> Token:
        """Refuse further registrations with this token."""
        return self._set_active(token, False)

    def activate(self, token: Token | str) -> Token:
        """Accept registrations with a revoked token again."""
        return self._set_active(token, True)

    def expire(self, token: Token | str, at: datetime | None = None) -> Token:
        """Set a token's expiry (now, by default)."""
        uid = token.uid if isinstance(token, Token) else token
        body = {"spec": {"expiry": _rfc3339(at or datetime.now(UTC))}}
        return Token.from_json(self._c._admin("PUT", f"/v1/edgehosts/tokens/{uid}", body))

    def delete(self, token: Token | str) -> None:
        """Delete a token; hosts it registered stay registered."""
        uid = token.uid if isinstance(token, Token) else token
        self._c._admin("DELETE", f"/v1/edgehosts/tokens/{uid}")

    def _set_active(self, token: Token | str, active: bool) -> Token:
        uid = token.uid if isinstance(token, Token) else token
        data = self._c._admin("PUT", f"/v1/edgehosts/tokens/{uid}/state", {"isActive": active})
        return Token.from_json(data)


class HostApi:
    """Registered hosts (``client.hosts``)."""

    def __init__(self, client: HubClient) -> None:
        self._c = client

    def search(
        self,
        *,
        site: str | Iterable[str] | None = None,
        state: str | Iterable[str] | None = None,
        tags: Mapping[str, str] | None = None,
        page_size: int = 500,
    ) -> HostList:
        """Hosts matching every given filter (all pages), by uid; ``.total`` counts them
        (a list that also renders as a table: ``str()``, ``_repr_html_``, ``to_dataframe``)."""
        flt: dict[str, Any] = {}
        if site is not None:
            flt["site"] = [site] if isinstance(site, str) else list(site)
        if state is not None:
            flt["state"] = [state] if isinstance(state, str) else list(state)
        if tags:
            flt["tags"] = dict(tags)
        hosts = HostList()
        while True:
            body = {"filter": flt, "limit": page_size, "offset": len(hosts)}
            data = self._c._admin("POST", "/v1/dashboard/edgehosts/search", body)
            hosts += [Host.from_json(h) for h in data["items"]]
            hosts.total = data["listmeta"]["count"]
            if not data["items"] or len(hosts) >= hosts.total:
                return hosts

    def summary(self, group_by: Sequence[str] = ("state",)) -> HostSummary:
        """Host counts per group of ``group_by`` keys (state, site, arch, cluster, phase,
        tag:KEY), counted by the hub in SQL; ``.to_dataframe()`` for pandas."""
        return summary(self._c, group_by)

    def get(self, uid: str) -> Host:
        """One host."""
        return Host.from_json(self._c._admin("GET", f"/v1/edgehosts/{uid}"))

    def delete(self, host: Host | str) -> None:
        """Delete a host that belongs to no cluster."""
        uid = host.uid if isinstance(host, Host) else host
        self._c._admin("DELETE", f"/v1/edgehosts/{uid}")

    def reset(self, host: Host | str) -> Host:
        """Revoke a host's credential and let it register again without one (a re-imaged
        device, a lost credential); it keeps its site and cluster."""
        uid = host.uid if isinstance(host, Host) else host
        return Host.from_json(self._c._admin("POST", f"/v1/edgehosts/{uid}/reset"))


class HubClient:
    """An admin's connection to a hub: ``tokens``, ``hosts``, ``clusters``, ``profiles`` and
    ``events``."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | Secret,
        ca_cert: str | Path | None = None,
        timeout: float = 10.0,
        retry_for: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._key = api_key if isinstance(api_key, Secret) else Secret(api_key)
        self._ca_cert = ca_cert
        self._t = _Transport(url, ca_cert=ca_cert, timeout=timeout, retry_for=retry_for)
        self.tokens = TokenApi(self)
        self.hosts = HostApi(self)
        self.clusters = ClusterApi(self)
        self.profiles = ProfileApi(self)
        self.events = EventApi(self)
        self.rollouts = _rollouts.RolloutApi(self)

    def __repr__(self) -> str:
        return f"HubClient({self.url!r})"

    def close(self) -> None:
        """Close the client's connections."""
        self._t.session.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host_client(self, uid: str, *, credential: Secret | None = None) -> HostClient:
        """A host-side client for ``uid`` against the same hub (for tests and simulations)."""
        return HostClient(self.url, uid, credential=credential, ca_cert=self._ca_cert)

    def _admin(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        return self._t.call(
            method,
            path,
            headers={"ApiKey": self._key.reveal(), **(headers or {})},
            body=body,
            idempotent=method in ("GET", "PUT", "DELETE"),
            params=params,
            timeout=timeout,
        )


def connect(
    url: str,
    api_key: str | Secret,
    *,
    ca_cert: str | Path | None = None,
    timeout: float = 10.0,
    retry_for: float = 10.0,
) -> HubClient:
    """An admin client for the hub at ``url`` (``ca_cert``: a PEM bundle to trust for HTTPS)."""
    return HubClient(url, api_key=api_key, ca_cert=ca_cert, timeout=timeout, retry_for=retry_for)


# -- host client ----------------------------------------------------------------------------
class HostClient:
    """What a host's agent calls: register, heartbeat, desired state, status.

    Every call is idempotent on the hub (registration is keyed by host uid), so every call
    retries with backoff for up to ``retry_for`` seconds while the hub is unreachable.
    """

    def __init__(
        self,
        url: str,
        uid: str,
        *,
        credential: Secret | None = None,
        ca_cert: str | Path | None = None,
        timeout: float = 10.0,
        retry_for: float = 60.0,
        transport: str = "http",
        transport_options: Mapping[str, Any] | None = None,
        plugins: PluginManager | None = None,
    ) -> None:
        self.uid = uid
        self.credential = credential
        self._pending: Secret | None = None
        self._t = _Transport(url, ca_cert=ca_cert, timeout=timeout, retry_for=retry_for)
        self._ca_cert = Path(ca_cert) if ca_cert is not None else None
        #: The registration transport backend (``http`` built in); a third-party transport
        #: (MQTT, a gateway) plugs in by name. The other calls are the hub's HTTP API.
        self.transport = transport
        self._transport_options = dict(transport_options or {})
        self._plugins = plugins

    def __repr__(self) -> str:
        return f"HostClient({self._t.url!r}, {self.uid!r})"

    def close(self) -> None:
        """Close the client's connections."""
        self._t.session.close()

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(
        self,
        token: str | Secret,
        *,
        address: str | None = None,
        mac: str | None = None,
        arch: str | None = None,
        site: str | None = None,
        tags: Mapping[str, str] | None = None,
        agent_version: str | None = None,
    ) -> Registration:
        """Register with a token; keeps the returned credential for the later calls.

        The request proves this is the host: with the credential this client holds (a
        re-registration), or with one it makes now and sends along (a first registration),
        so that a retry after a lost answer is recognised as the same device.
        """
        # A first registration's own credential is kept until one registration succeeds,
        # so that calling register() again after a lost answer still proves the same device.
        held = self.credential or self._pending or Secret(new_secret("ekh_"))
        self._pending = held if self.credential is None else None
        body: dict[str, Any] = {"hostUid": self.uid}
        for key, value in (
            ("hostAddress", address),
            ("macAddress", mac),
            ("arch", arch),
            ("site", site),
            ("tags", dict(tags) if tags else None),
            ("agentVersion", agent_version),
        ):
            if value is not None:
                body[key] = value
        receipt = self._register_via_transport(token, held, body)
        credential = receipt.credential
        if not receipt.record or credential is None:
            where = f" to {receipt.bundle}" if receipt.bundle else ""
            raise RegistrationError(
                f"the {self.transport!r} transport carried the registration of {self.uid!r}"
                f"{where} ({receipt.state}); the hub registers it on import, not now"
            )
        credential = credential if isinstance(credential, Secret) else Secret(str(credential))
        self.credential = credential
        self._pending = None
        return Registration(Host.from_json(dict(receipt.record)), credential)

    def _register_via_transport(
        self, token: str | Secret, held: Secret, body: Mapping[str, Any]
    ) -> RegistrationReceipt:
        """Registration goes through the selected transport backend: the retries, the
        proof of identity and the hub's refusals are the transport's (one implementation)."""
        from edgekit.plugins import BuildContext, RegistrationRequest, SelectedBackend
        from edgekit.plugins.manager import get_plugin_manager

        manager = self._plugins or get_plugin_manager()
        cwd = Path.cwd()
        ctx = BuildContext(
            base_dir=cwd,
            output_dir=cwd,
            cache_dir=cwd,
            step="register",
            plugins=manager,
            selected={"transport": SelectedBackend(self.transport, self._transport_options)},
        )
        request = RegistrationRequest(
            endpoint=self._t.url,
            token=token,
            host=body,
            credential=held,
            ca_cert=self._ca_cert,
            timeout=self._t.timeout,
            retry_for=self._t.retry_for,
        )
        return manager.transport(self.transport).register(request, ctx)

    def get(self) -> Host:
        """This host's record."""
        return self._host_call("GET", "", None, Host.from_json)

    def heartbeat(self, address: str | None = None) -> Host:
        """Tell the hub this host is alive (and its current address)."""
        body = {"hostAddress": address} if address is not None else {}
        return self._host_call("POST", "/heartbeat", body, Host.from_json)

    def desired_state(self) -> DesiredState | None:
        """What this host should run, or None before it is assigned to a cluster."""
        data = self._host_call("GET", "/desired-state", None, lambda d: d)
        desired = data.get("desired")
        return DesiredState.from_json(desired) if desired else None

    def report_status(
        self,
        state: str,
        *,
        generation: int | None = None,
        message: str | None = None,
        provider_image: str | None = None,
    ) -> Host:
        """Report what the agent applied: ``applying``, ``applied`` or ``failed``."""
        body: dict[str, Any] = {"state": state}
        if generation is not None:
            body["generation"] = generation
        if message is not None:
            body["message"] = message
        if provider_image is not None:
            body["providerImage"] = provider_image
        return self._host_call("POST", "/status", body, Host.from_json)

    def _host_call(self, method: str, suffix: str, body: Any, parse: Callable[[Any], T]) -> T:
        if self.credential is None:
            raise RegistrationError(f"host {self.uid!r} has no credential: register it first")
        data = self._t.call(
            method,
            f"/v1/edgehosts/{self.uid}{suffix}",
            headers={"Authorization": f"Bearer {self.credential.reveal()}"},
            body=body,
            idempotent=True,
        )
        return parse(data)
