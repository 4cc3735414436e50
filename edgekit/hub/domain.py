"""The hub's operations and rules, shared by the HTTP routes and the airgap import.

Nothing here knows HTTP: refusals are :class:`~edgekit.hub.errors.HubError` with a
:class:`~edgekit.hub.errors.Refusal` kind, and the store only persists.

Re-registration (see docs/hub.md, "Credentials"): a host uid that is already registered may
register again only when the request proves it is the same device -- its current credential
(or, until that is first used, the one before it, so that a retry after a lost answer
works), an airgap bundle signed with it, the very bundle that registered it, or an admin's
reset of the host. A new host may bring its own credential (at least
:data:`MIN_CREDENTIAL_LENGTH` characters), which makes its first registration safe to retry.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from edgekit.errors import Problem
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.fields import Fields
from edgekit.hub.schema import MAX_SITES, REGISTRATION
from edgekit.hub.security import hash_secret, new_secret, secret_matches
from edgekit.hub.store import (
    DEFAULT_UNREACHABLE_AFTER,
    ClusterRecord,
    HostFields,
    HostRecord,
    HubStore,
    PoolAssignment,
    TokenRecord,
)
from edgekit.hub.validate import check_cluster, check_host, check_token, edge_host
from edgekit.model import EdgeHost
from edgekit.model._base import is_dns_label

__all__ = [
    "API_KEY_SETTING",
    "MAX_TOKEN_SITES",
    "MIN_CREDENTIAL_LENGTH",
    "RESERVED_UIDS",
    "Hub",
    "Proof",
    "host_fields",
    "site_list_problems",
]

#: The settings row that holds sha256 of the admin API key.
API_KEY_SETTING = "api_key_sha256"
#: Path words that would shadow a host uid in /v1/edgehosts/{uid}.
RESERVED_UIDS = frozenset({"tokens", "register"})
#: A credential a host brings must be at least this long (128 bits as URL-safe base64 is 22
#: characters; 32 leaves room for a prefix and keeps weak hand-made values out).
MIN_CREDENTIAL_LENGTH = 32
MAX_CREDENTIAL_LENGTH = 512
#: The most sites one token can be bound to, or one batch can mint tokens for (a request
#: body of at most 64 KiB holds about this many site names anyway).
MAX_TOKEN_SITES = MAX_SITES

#: Checks a stored credential hash: True when the request proves it holds that credential.
Proof = Callable[[str], bool]


def host_fields(
    body: Mapping[str, Any], problems: list[Problem], path: str = "$"
) -> HostFields | None:
    """A registering host's fields out of a JSON object (Palette's names), checked against
    the model; None when any problem was found (all of them appended to ``problems``)."""
    before = len(problems)
    values = REGISTRATION.read_object(Fields(problems), body, path)
    uid, address, mac = values["hostUid"], values["hostAddress"], values["macAddress"]
    if uid in RESERVED_UIDS:
        problems.append(Problem(f"{path}.hostUid", f"{uid!r} is reserved"))
    # Without a reported arch a host is amd64, as the model's EdgeHost assumes.
    arch = values["arch"] or "amd64"
    site, tags, agent_version = values["site"], values["tags"], values["agentVersion"]
    model_host = None
    if uid is not None:
        model_host, more = check_host(
            uid=uid, site=site, arch=arch, mac=mac, address=address, tags=tags
        )
        # A field with a type problem was already reported; skip the model's echo of it.
        known = {q.path for q in problems}
        problems += [
            Problem(p.path.replace("$", path, 1), p.message)
            for p in more
            if p.path.replace("$", path, 1) not in known
        ]
    if len(problems) > before or uid is None or model_host is None:
        return None
    return HostFields(
        uid=uid,
        address=address,
        mac=model_host.mac,
        arch=arch,
        site=site,
        tags=tags,
        agent_version=agent_version,
    )


def _credential_problem(credential: str) -> str | None:
    if not MIN_CREDENTIAL_LENGTH <= len(credential) <= MAX_CREDENTIAL_LENGTH:
        return (
            f"a host credential must be {MIN_CREDENTIAL_LENGTH}-{MAX_CREDENTIAL_LENGTH} characters"
        )
    if not all(33 <= ord(c) <= 126 for c in credential):
        return "a host credential must be printable ASCII without spaces"
    return None


def _expiry_problems(expiry: float, now: float) -> list[Problem]:
    return [] if expiry > now else [Problem("$.spec.expiry", "must be in the future")]


def site_list_problems(sites: Sequence[str], path: str) -> list[Problem]:
    """Problems of a list of site names: at least one, at most :data:`MAX_TOKEN_SITES`,
    each a DNS label (the model's site name), none twice."""
    if not sites:
        return [Problem(path, "must name at least one site (leave it out for any site)")]
    if len(sites) > MAX_TOKEN_SITES:
        return [Problem(path, f"must name at most {MAX_TOKEN_SITES} sites")]
    problems = [
        Problem(f"{path}[{i}]", f"{site!r} is not a site name (a DNS label)")
        for i, site in enumerate(sites)
        if not is_dns_label(site)
    ]
    seen: dict[str, int] = {}
    for i, site in enumerate(sites):
        if site in seen:
            problems.append(Problem(f"{path}[{i}]", f"site {site!r} is also {path}[{seen[site]}]"))
        seen.setdefault(site, i)
    return problems


def _site_not_allowed(token: TokenRecord, site: str | None) -> HubError:
    """403: the token is valid but does not cover this site (a token of a forge's
    inventory, or of one site, cannot register a host into another site). The token's sites
    are not listed: whoever holds a leaked token should not learn the fleet's site names."""
    bound = len(token.sites) if token.sites else 1  # a single-site token: ``spec.site``
    if site is None:
        reason = "the host names no site"
        problem = "is required: the token is bound to sites"
    else:
        reason = f"site {site!r} is not one of them"
        problem = f"{site!r} is not a site of registration token {token.name!r}"
    return HubError(
        Refusal.FORBIDDEN,
        "SiteNotAllowed",
        f"registration token {token.name!r} is bound to {bound} site(s) and {reason}",
        [Problem("$.site", problem)],
    )


class Hub:
    """Every hub operation over one :class:`HubStore`."""

    def __init__(
        self, store: HubStore, *, unreachable_after: float = DEFAULT_UNREACHABLE_AFTER
    ) -> None:
        self.store = store
        self.unreachable_after = unreachable_after

    # -- tokens ----------------------------------------------------------------------------
    def create_token(
        self,
        name: str,
        *,
        expiry: float,
        project: str | None = None,
        site: str | None = None,
        max_hosts: int | None = None,
        sites: Sequence[str] | None = None,
        now: float | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token (the model's rules apply) and its secret, shown only now.

        ``site`` binds the token to one site (its hosts register into it); ``sites`` to a
        set of them, e.g. a forge's inventory (a host must name one of them)."""
        now = time.time() if now is None else now
        problems = _expiry_problems(expiry, now)
        problems += check_token(
            name=name,
            project=project,
            site=site,
            expires_at=datetime.fromtimestamp(expiry, UTC),
            max_hosts=max_hosts,
        )
        if sites is not None:
            problems += site_list_problems(sites, "$.spec.sites")
            if site is not None:
                problems.append(
                    Problem("$.spec.sites", "give either site (one) or sites (a set), not both")
                )
        if problems:
            raise HubError(Refusal.INVALID, "InvalidRequest", "the request is invalid", problems)
        with self.store.transaction():
            return self.store.create_token(
                name,
                expiry=expiry,
                project=project,
                site=site,
                max_hosts=max_hosts,
                sites=sites or (),
                now=now,
            )

    def create_site_tokens(
        self,
        sites: Sequence[str],
        *,
        expiry: float,
        name_prefix: str = "",
        project: str | None = None,
        max_hosts: int | None = None,
        now: float | None = None,
    ) -> list[tuple[TokenRecord, str]]:
        """One token per site, named ``name_prefix + site`` and bound to it, in one
        transaction: every site is checked first, and any problem creates none of them."""
        now = time.time() if now is None else now
        problems = _expiry_problems(expiry, now) + site_list_problems(sites, "$.spec.sites")
        for i, site in enumerate(sites):
            if not is_dns_label(site):
                continue  # reported above; its token name would only repeat it
            for problem in check_token(
                name=name_prefix + site,
                project=project,
                site=site,
                expires_at=datetime.fromtimestamp(expiry, UTC),
                max_hosts=max_hosts,
            ):
                if problem.path == "$.metadata.name":
                    problem = Problem(f"$.spec.sites[{i}]", f"token name: {problem.message}")
                if problem not in problems:
                    problems.append(problem)
        if problems:
            raise HubError(Refusal.INVALID, "InvalidRequest", "the request is invalid", problems)
        with self.store.transaction():
            return [
                self.store.create_token(
                    name_prefix + site,
                    expiry=expiry,
                    project=project,
                    site=site,
                    max_hosts=max_hosts,
                    now=now,
                )
                for site in sites
            ]

    def token(self, uid: str) -> TokenRecord:
        """The token with this uid."""
        token = self.store.get_token(uid)
        if token is None:
            raise HubError(Refusal.NOT_FOUND, "TokenNotFound", f"no registration token {uid!r}")
        return token

    def set_token_active(self, uid: str, active: bool) -> TokenRecord:
        """Revoke or re-enable a token."""
        self.token(uid)
        token = self.store.set_token_active(uid, active)
        assert token is not None
        return token

    def set_token_expiry(self, uid: str, expiry: float) -> TokenRecord:
        """Move a token's expiry (a past time expires it)."""
        self.token(uid)
        token = self.store.set_token_expiry(uid, expiry)
        assert token is not None
        return token

    def delete_token(self, uid: str) -> None:
        """Delete a token; hosts it registered keep their credentials."""
        if not self.store.delete_token(uid):
            raise HubError(Refusal.NOT_FOUND, "TokenNotFound", f"no registration token {uid!r}")

    # -- registration ----------------------------------------------------------------------
    def _token_for(self, token_hash: str, now: float) -> TokenRecord:
        token = self.store.token_by_hash(token_hash)
        if token is None:
            raise HubError(
                Refusal.UNAUTHENTICATED,
                "InvalidToken",
                "the registration token is not known",
                auth_target="tokens",
            )
        state = token.state(now)
        if state == "revoked":
            raise HubError(
                Refusal.FORBIDDEN, "TokenRevoked", f"registration token {token.name!r} is revoked"
            )
        if state == "expired":
            raise HubError(
                Refusal.FORBIDDEN, "TokenExpired", f"registration token {token.name!r} expired"
            )
        return token

    def register(
        self,
        fields: HostFields,
        *,
        token_secret: str | None = None,
        token_hash: str | None = None,
        credential: str | None = None,
        proof: Proof | None = None,
        bundle_digest: str | None = None,
        now: float | None = None,
    ) -> tuple[HostRecord, str]:
        """Register ``fields``' host with a token; returns the host and its credential.

        The token is given as its secret, or as its stored hash (``token_hash``, for an
        import that authenticated the host another way). ``credential`` is what the host
        presented (HTTP ``Authorization: Bearer``): its identity proof when the uid is
        registered, else the credential it wants. ``proof`` checks a stored credential
        hash another way (an airgap bundle's host signature); ``bundle_digest`` names the
        bundle a registration came from (importing that same bundle again is a replay of
        the same registration, not a takeover).

        All of it is one transaction: the ``max_hosts`` count cannot race.
        """
        if (token_secret is None) == (token_hash is None):
            raise TypeError("register() needs exactly one of token_secret and token_hash")
        lookup = hash_secret(token_secret) if token_secret is not None else token_hash
        assert lookup is not None
        now = time.time() if now is None else now
        with self.store.transaction():
            token = self._token_for(lookup, now)
            if fields.site is not None and token.site is not None and fields.site != token.site:
                raise _site_not_allowed(token, fields.site)
            site = token.site if token.site is not None else fields.site
            if token.sites and (site is None or site not in token.sites):
                raise _site_not_allowed(token, site)
            existing = self.store.get_host(fields.uid)
            if existing is not None:
                return self._reregister(
                    existing, fields, site, credential, proof, bundle_digest, now
                )
            if token.max_hosts is not None and token.host_count >= token.max_hosts:
                raise HubError(
                    Refusal.FORBIDDEN,
                    "TokenExhausted",
                    f"registration token {token.name!r} already registered its "
                    f"{token.max_hosts} host(s)",
                )
            if credential is not None:
                reason = _credential_problem(credential)
                if reason is not None:
                    raise HubError(
                        Refusal.INVALID,
                        "InvalidRequest",
                        "the request is invalid",
                        [Problem("Authorization", reason)],
                    )
                chosen = credential
            else:
                chosen = new_secret("ekh_")
            if self.store.credential_in_use(hash_secret(chosen)):
                raise HubError(
                    Refusal.CONFLICT, "CredentialInUse", "choose another host credential"
                )
            host = self.store.add_host(
                fields,
                token_uid=token.uid,
                site=site,
                credential_hash=hash_secret(chosen),
                bundle_digest=bundle_digest,
                now=now,
            )
        return host, chosen

    def _reregister(
        self,
        existing: HostRecord,
        fields: HostFields,
        site: str | None,
        credential: str | None,
        proof: Proof | None,
        bundle_digest: str | None,
        now: float,
    ) -> tuple[HostRecord, str]:
        uid = fields.uid
        if existing.site != site:
            raise HubError(
                Refusal.CONFLICT,
                "HostSiteConflict",
                f"host {uid!r} is registered in site {existing.site!r}; "
                # A request naming no site (with a token bound to none) would read "site
                # None": say what it asked instead.
                f"delete it before registering it "
                + (f"in site {site!r}" if site is not None else "without a site"),
            )
        held = self.store.host_secrets(uid)
        assert held is not None
        known = [h for h in (held.credential_hash, held.previous_credential_hash) if h]
        # The hash whose secret the request proved it holds (kept as the previous one).
        matched = next(
            (
                h
                for h in known
                if (credential is not None and secret_matches(credential, h))
                or (proof is not None and proof(h))
            ),
            None,
        )
        proven = held.reset_pending or matched is not None
        if not proven and bundle_digest is not None and held.bundle_digest is not None:
            proven = secrets.compare_digest(bundle_digest, held.bundle_digest)
        if not proven:
            presented = credential is not None or proof is not None
            raise HubError(
                Refusal.CONFLICT,
                "HostAlreadyRegistered",
                f"host {uid!r} is already registered and this request does not prove it is "
                "that host: "
                + (
                    "the credential it presented is not the host's"
                    if presented
                    else "send its current credential (Authorization: Bearer)"
                )
                + ", or ask an admin to reset the host",
                auth_target=f"host:{uid}" if presented else None,
            )
        fresh = new_secret("ekh_")
        # The credential that proved it stays valid for re-registration only, until the new
        # one is used: a retry after a lost answer must not lock the device out.
        previous = matched
        host = self.store.update_registration(
            fields,
            credential_hash=hash_secret(fresh),
            previous_credential_hash=previous,
            bundle_digest=bundle_digest,
            now=now,
        )
        return host, fresh

    # -- hosts -----------------------------------------------------------------------------
    def authenticate_host(self, credential: str, uid: str) -> HostRecord:
        """The host whose credential this is, which must be ``uid``."""
        host = self.store.host_for_credential(credential)
        if host is None:
            raise HubError(
                Refusal.UNAUTHENTICATED,
                "Unauthorized",
                "the host credential is not valid",
                auth_target=f"host:{uid}",
            )
        if host.uid != uid:
            raise HubError(Refusal.FORBIDDEN, "Forbidden", "a host may only use its own record")
        return host

    def host(self, uid: str) -> HostRecord:
        """The host with this uid."""
        host = self.store.get_host(uid)
        if host is None:
            raise HubError(Refusal.NOT_FOUND, "HostNotFound", f"host {uid!r} is not registered")
        return host

    def delete_host(self, uid: str) -> None:
        """Delete a host that belongs to no cluster; frees its token's slot."""
        if not self.store.delete_host(uid):
            raise HubError(Refusal.NOT_FOUND, "HostNotFound", f"host {uid!r} is not registered")

    def reset_host(self, uid: str) -> HostRecord:
        """Revoke a host's credential and let it register again (in its site) without one:
        for a device that was re-imaged or lost its credential. Cluster membership stays."""
        unusable = hash_secret(new_secret("ekr_"))  # its secret is dropped here
        host = self.store.reset_host(uid, unusable)
        if host is None:
            raise HubError(Refusal.NOT_FOUND, "HostNotFound", f"host {uid!r} is not registered")
        return host

    def heartbeat(self, uid: str, address: str | None) -> HostRecord:
        """The host is alive (and at this address)."""
        return self.store.heartbeat(uid, address=address)

    def report_status(self, uid: str, status: Mapping[str, Any]) -> HostRecord:
        """What the host's agent applied."""
        return self.store.report_status(uid, status)

    def model_host(self, uid: str, now: float) -> EdgeHost | None:
        """A registered host as a model :class:`EdgeHost` (its effective state), or None."""
        record = self.store.get_host(uid)
        if record is None:
            return None
        return edge_host(
            record.uid,
            site=record.site,
            arch=record.arch,
            mac=record.mac,
            address=record.address,
            tags=record.tags,
            state=record.effective_state(now, self.unreachable_after),
        )

    # -- clusters --------------------------------------------------------------------------
    def create_cluster(self, body: Mapping[str, Any]) -> ClusterRecord:
        """Form a cluster from a Palette-shaped ``edge-native`` body (every problem at once)."""
        problems: list[Problem] = []
        provider_image = Fields(problems).str_(
            body.get("spec"), "providerImage", "$.spec", max_len=1024
        )
        now = time.time()
        plan, more = check_cluster(body, lambda uid: self.model_host(uid, now))
        problems += more
        if problems:
            raise HubError(Refusal.INVALID, "InvalidCluster", "the cluster is invalid", problems)
        assert plan is not None
        model = plan.cluster
        pools = [
            PoolAssignment(pool.name, i == 0, tuple(h.uid for h in pool.hosts))
            for i, pool in enumerate(model.pools)
        ]
        return self.store.create_cluster(
            model.name,
            vip=model.vip,
            provider_image=provider_image,
            pools=pools,
            spec=body["spec"],
            profile={"name": model.profile.name, "version": model.profile.version},
        )

    def cluster(self, uid: str) -> ClusterRecord:
        """The cluster with this uid."""
        cluster = self.store.get_cluster(uid)
        if cluster is None:
            raise HubError(Refusal.NOT_FOUND, "ClusterNotFound", f"no cluster {uid!r}")
        return cluster
