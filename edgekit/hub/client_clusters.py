"""The admin client's cluster lifecycle: ``hub.profiles``, ``hub.clusters``, ``hub.events``
and the fleet summary behind ``hub.hosts.summary``. What they return is
:mod:`edgekit.hub.results_clusters`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgekit import model
from edgekit.config import unstructure
from edgekit.errors import RegistrationError
from edgekit.hub.plans import HostChange, UpdatePlan
from edgekit.hub.results_clusters import (
    ClusterList,
    Event,
    EventPage,
    HostList,
    HostSummary,
    HubCluster,
    PublishedProfile,
    cluster_body,
    pool_json,
)
from edgekit.hub.status import ClusterStatus, Condition, HostStatus
from edgekit.model.selectors import Selector

if TYPE_CHECKING:
    from edgekit.hub.client import HubClient

__all__ = [
    "ClusterApi",
    "ClusterList",
    "ClusterStatus",
    "Condition",
    "Event",
    "EventApi",
    "EventPage",
    "HostChange",
    "HostList",
    "HostStatus",
    "HostSummary",
    "HubCluster",
    "ProfileApi",
    "PublishedProfile",
    "UpdatePlan",
    "cluster_body",
    "pool_json",
    "summary",
]


# -- APIs -----------------------------------------------------------------------------------
def _ident(cluster: HubCluster | str) -> str:
    return cluster.uid if isinstance(cluster, HubCluster) else cluster


def _if_match(value: int | str | None) -> dict[str, str]:
    return {} if value is None else {"If-Match": f'"{value}"'}


class ProfileApi:
    """Profile versions published in the hub (``client.profiles``)."""

    def __init__(self, client: HubClient) -> None:
        self._c = client

    def publish(self, profile: model.ClusterProfile) -> PublishedProfile:
        """Publish ``profile``'s version. Publishing the same content again is a no-op;
        other content under a published version is refused (409 naming what differs)."""
        return PublishedProfile.from_json(
            self._c._admin("POST", "/v1/clusterprofiles", unstructure(profile))
        )

    def publish_all(self, profiles: Iterable[model.ClusterProfile]) -> list[PublishedProfile]:
        """Publish several profiles, e.g. a forge's: ``publish_all(forge.profiles.values())``.
        Stops at the first refusal (those before it stay published: each is immutable)."""
        return [self.publish(p) for p in profiles]

    def list(self, name: str | None = None) -> list[PublishedProfile]:
        """Published versions (of profile ``name``), by name then publication order."""
        params = {"name": name} if name is not None else None
        data = self._c._admin("GET", "/v1/clusterprofiles", params=params)
        return [PublishedProfile.from_json(p) for p in data["items"]]

    def get(self, name: str, version: str) -> PublishedProfile:
        """One published version."""
        return PublishedProfile.from_json(
            self._c._admin("GET", f"/v1/clusterprofiles/{name}/{version}")
        )


class ClusterApi:
    """Clusters formed from registered hosts (``client.clusters``), by uid or name."""

    def __init__(self, client: HubClient) -> None:
        self._c = client

    def create(
        self,
        cluster: model.Cluster,
        *,
        provider_image: str | None = None,
        labels: Mapping[str, str] | None = None,
        profile: model.ClusterProfile | None = None,
    ) -> HubCluster:
        """Form ``cluster`` from registered hosts; each host then gets its desired state.

        The hub checks the hosts (registered, available, matching each pool's arch) and the
        profile version (published) and raises :class:`HubRequestError` with every problem
        at once; nothing is stored then. ``profile``: the cluster's profile, published
        first (a no-op when that version is already published with this content).
        """
        if profile is not None:
            if profile.ref != cluster.profile:
                raise RegistrationError(
                    f"cluster {cluster.name!r} runs {cluster.profile.name}@"
                    f"{cluster.profile.version}, not {profile.name}@{profile.version}"
                )
            self._c.profiles.publish(profile)
        return self.create_from_body(cluster_body(cluster, provider_image, labels=labels))

    def create_from_body(self, body: Mapping[str, Any]) -> HubCluster:
        """Form a cluster from a Palette-shaped ``edge-native`` body."""
        return HubCluster.from_json(
            self._c._admin("POST", "/v1/spectroclusters/edge-native", dict(body))
        )

    def get(self, cluster: HubCluster | str) -> HubCluster:
        """One cluster, by uid or name."""
        return HubCluster.from_json(self._c._admin("GET", f"/v1/spectroclusters/{_ident(cluster)}"))

    def list(self, selector: Selector | None = None, *, page_size: int = 500) -> ClusterList:
        """Clusters matching ``selector`` (every page), by name; ``.total`` counts them."""
        flt: dict[str, Any] = {}
        if selector is not None:
            flt["labels"] = dict(selector.tags)
            if selector.profile is not None:
                flt["profile"] = selector.profile
        out = ClusterList()
        while True:
            body = {"filter": flt, "limit": page_size, "offset": len(out)}
            data = self._c._admin("POST", "/v1/dashboard/spectroclusters/search", body)
            out += [HubCluster.from_json(c) for c in data["items"]]
            out.total = data["listmeta"]["count"]
            if not data["items"] or len(out) >= out.total:
                return out

    def update(
        self,
        cluster: HubCluster | str,
        *,
        profile: model.ProfileRef | None = None,
        values: Mapping[str, Mapping[str, Any]] | None = None,
        provider_image: str | None = None,
        pools: Sequence[model.Pool] | None = None,
        labels: Mapping[str, str] | None = None,
        dry_run: bool = False,
        if_match: int | str | None = None,
    ) -> Any:
        """Change a cluster's profile version, per-pack values, provider image, pools (the
        control plane first, then workers) or labels. Checked like a creation, atomically.

        Returns the :class:`UpdatePlan` when ``dry_run`` (nothing stored), else the updated
        :class:`HubCluster` (its ``plan`` says what each host gets). ``if_match``: the
        ``resource_version`` the change is based on; a stale one is a 409.
        """
        spec: dict[str, Any] = {}
        if profile is not None:
            spec["profile"] = {"name": profile.name, "version": profile.version}
        if values is not None:
            spec["values"] = {k: dict(v) for k, v in values.items()}
        if provider_image is not None:
            spec["providerImage"] = provider_image
        if pools is not None:
            spec["machinePoolConfig"] = [
                pool_json(p, control_plane=i == 0, cp_as_worker=i == 0 and len(pools) == 1)
                for i, p in enumerate(pools)
            ]
        body: dict[str, Any] = {"spec": spec}
        if labels is not None:
            body["metadata"] = {"labels": dict(labels)}
        return self._patch(_ident(cluster), body, dry_run=dry_run, if_match=if_match)

    def _patch(self, ident: str, body: Any, *, dry_run: bool, if_match: int | str | None) -> Any:
        data = self._c._admin(
            "PATCH",
            f"/v1/spectroclusters/{ident}",
            body,
            headers=_if_match(if_match),
            params={"dryRun": "true"} if dry_run else None,
        )
        plan = UpdatePlan.from_json(data["plan"])
        return plan if dry_run else HubCluster.from_json(data["cluster"], plan)

    def scale(
        self,
        cluster: HubCluster | str,
        *,
        workers: Sequence[model.Pool | str] | None = None,
        control_plane: Sequence[str] | model.Pool | None = None,
        vip: str | None = None,
        dry_run: bool = False,
        if_match: int | str | None = None,
    ) -> Any:
        """Add or remove hosts. ``workers``: the worker pools, or host uids for the cluster's
        one worker pool (created as ``workers`` if it has none; ``[]`` removes every worker);
        ``control_plane``: its hosts (grow 1 -> 3 where the model allows it: with a ``vip``).

        Reads the cluster and sends the change with its ``resource_version``: a concurrent
        change makes this a 409 instead of being overwritten (``if_match``: the version the
        caller based the change on, checked instead). Returns like :meth:`update`.
        """
        current = self.get(cluster)
        raw = [dict(p) for p in current.spec["machinePoolConfig"]]
        cp_raw = next(p for p in raw if p["poolConfig"].get("isControlPlane"))
        worker_raw = [p for p in raw if p is not cp_raw]
        if isinstance(control_plane, model.Pool):
            cp_raw = pool_json(control_plane, control_plane=True)
        elif control_plane is not None:
            cp_raw = _with_hosts(cp_raw, control_plane)
        if workers is not None:
            pools = [w for w in workers if isinstance(w, model.Pool)]
            uids = [w for w in workers if isinstance(w, str)]
            if pools and uids:
                raise RegistrationError("scale(workers=...) takes pools or host uids, not both")
            if pools:
                worker_raw = [pool_json(p, control_plane=False) for p in pools]
            elif not uids:
                worker_raw = []
            else:
                base = worker_raw[0] if worker_raw else _new_worker_pool(cp_raw)
                worker_raw = [_with_hosts(base, uids), *worker_raw[1:]]
        cp_raw["poolConfig"] = {**cp_raw["poolConfig"], "useControlPlaneAsWorker": not worker_raw}
        spec: dict[str, Any] = {"machinePoolConfig": [cp_raw, *worker_raw]}
        if vip is not None:
            cloud = dict(current.spec.get("cloudConfig") or {})
            spec["cloudConfig"] = {**cloud, "controlPlaneEndpoint": {"host": vip, "type": "IP"}}
        body = {"spec": spec}
        based_on = current.resource_version if if_match is None else if_match
        return self._patch(current.uid, body, dry_run=dry_run, if_match=based_on)

    def delete(
        self, cluster: HubCluster | str, *, if_match: int | str | None = None
    ) -> tuple[str, ...]:
        """Delete a cluster; returns the hosts it released (each returns to ``ready`` once
        its agent confirms). The hub's events keep the audit trail."""
        data = self._c._admin(
            "DELETE", f"/v1/spectroclusters/{_ident(cluster)}", headers=_if_match(if_match)
        )
        return tuple(data["releasedHosts"])

    def status(self, cluster: HubCluster | str) -> ClusterStatus:
        """Desired against observed for each host, and the Ready/Updating/Degraded conditions."""
        return ClusterStatus.from_json(
            self._c._admin("GET", f"/v1/spectroclusters/{_ident(cluster)}/status")
        )


def _with_hosts(pool: Mapping[str, Any], uids: Sequence[str]) -> dict[str, Any]:
    known = {h["hostUid"]: h for h in pool["cloudConfig"]["edgeHosts"]}
    hosts = [known.get(u, {"hostUid": u}) for u in uids]
    return {
        "cloudConfig": {**pool["cloudConfig"], "edgeHosts": hosts},
        "poolConfig": {**pool["poolConfig"], "size": len(hosts)},
    }


def _new_worker_pool(cp: Mapping[str, Any]) -> dict[str, Any]:
    cfg = cp["poolConfig"]
    return {
        "cloudConfig": {"edgeHosts": []},
        "poolConfig": {
            "name": "workers",
            "isControlPlane": False,
            "archType": cfg.get("archType"),
            "size": 0,
            "labels": {},
            "taints": [],
        },
    }


def summary(client: HubClient, group_by: Sequence[str], *, page_size: int = 1000) -> HostSummary:
    """Host counts grouped by ``group_by`` (state, site, arch, cluster, phase, tag:KEY),
    computed by the hub in one SQL query per page."""
    rows: list[tuple[Mapping[str, Any], int]] = []
    while True:
        params = {"groupBy": ",".join(group_by), "limit": str(page_size), "offset": str(len(rows))}
        data = client._admin("GET", "/v1/dashboard/edgehosts/summary", params=params)
        rows += [(dict(i["key"]), int(i["count"])) for i in data["items"]]
        groups = int(data["listmeta"]["count"])
        if not data["items"] or len(rows) >= groups:
            return HostSummary(tuple(group_by), tuple(rows), groups, int(data["hosts"]))


class EventApi:
    """Host, cluster and profile changes (``client.events``)."""

    def __init__(self, client: HubClient) -> None:
        self._c = client

    def list(
        self,
        since: int | None = None,
        *,
        timeout: float = 0,
        limit: int = 1000,
        kinds: Sequence[str] = (),
    ) -> EventPage:
        """Events after revision ``since`` (None: from now), waiting up to ``timeout``
        seconds (at most 60) for one to happen."""
        params = {"timeout": str(int(timeout)), "limit": str(limit)}
        if since is not None:
            params["since"] = str(since)
        if kinds:
            params["kind"] = ",".join(kinds)
        data = self._c._admin("GET", "/v1/events", params=params, timeout=timeout + 10)
        return EventPage(tuple(Event.from_json(e) for e in data["items"]), int(data["revision"]))

    def revision(self) -> int:
        """The newest revision now: watch from it to see only what happens next."""
        return self.list(None).revision

    def watch(
        self,
        since: int | None = None,
        *,
        kinds: Sequence[str] = (),
        poll: float = 30,
        until: float | None = None,
    ) -> Iterator[Event]:
        """Every event after ``since`` (None: from now), as it happens, forever (or until
        ``until`` seconds have passed). Reconnects by itself when the hub is unreachable or
        restarts, resuming from the last revision it yielded: nothing lost, nothing twice."""
        from edgekit.hub.client import HubRequestError

        deadline = None if until is None else time.monotonic() + until
        delay = 0.2
        while deadline is None or time.monotonic() < deadline:
            wait = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            try:
                page = self.list(since, timeout=wait, kinds=kinds)
            except HubRequestError as exc:
                if exc.status < 500 and exc.status != 429:
                    raise
                page = None
            except RegistrationError:  # unreachable: the transport gave up for now
                page = None
            if page is None:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            for event in page.events:
                yield event
                since = event.revision
            since = page.revision if since is None or page.revision > since else since
