"""The cluster lifecycle's rules: published profile versions, update and scale with a plan
of upgrade kinds per host, optimistic concurrency, delete, agent reports and conditions.

Nothing here knows HTTP. An update is checked with the same model rules as a creation (the
body after the change goes through :func:`~edgekit.hub.validate.check_cluster`), every
problem at once, and nothing is stored when any is found or when ``dry_run`` is asked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from edgekit.config import structure, unstructure
from edgekit.errors import ConfigError, Problem
from edgekit.hub.domain import Hub
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.plans import UpdatePlan, host_changes
from edgekit.hub.records import ClusterRecord, profile_digest
from edgekit.hub.staging import Staging
from edgekit.hub.status import ClusterStatus, HostStatus, conditions
from edgekit.hub.store_clusters import ClusterTables, HolderRecord, ProfileRecord
from edgekit.hub.validate import check_cluster, edge_host
from edgekit.hub.views import ts
from edgekit.model import ClusterProfile, EdgeHost, Pack

__all__ = ["PHASES", "ClusterOps", "profile_differences"]

#: What an agent reports of an upgrade.
PHASES = ("downloading", "applying", "rebooting", "healthy", "failed", "rolled-back")
#: How many parsed profile versions an instance keeps.
PROFILE_CACHE = 256
#: The fields of a cluster an update may change (``spec`` keys).
UPDATABLE = ("profile", "values", "providerImage", "machinePoolConfig", "cloudConfig")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def profile_differences(old: ClusterProfile, new: ClusterProfile) -> list[str]:
    """What differs between two contents of one profile version, one sentence each."""
    out: list[str] = []
    if old.description != new.description:
        out.append("description differs")
    for change in old.diff(new):
        what = f"pack {change.pack!r}: {change.kind.value}"
        if change.old is not None or change.new is not None:
            what += f" {change.old} -> {change.new}"
        if change.keys:
            what += f" ({', '.join(change.keys)})"
        out.append(what)
    if not out and [p.name for p in old.packs] != [p.name for p in new.packs]:
        out.append("pack order differs")
    return out or ["content differs"]


def _with_values(profile: ClusterProfile, values: Mapping[str, Any]) -> ClusterProfile:
    """``profile`` with a cluster's per-pack values merged over each pack's own."""
    if not values:
        return profile
    packs = []
    for pack in profile.packs:
        extra = values.get(pack.name)
        if isinstance(extra, Mapping) and extra:
            merged = {**pack.values_mapping, **extra}
            pack = Pack(pack.name, pack.layer, pack.version, pack.source, pack.registry, merged)
        packs.append(pack)
    return ClusterProfile(profile.name, profile.version, tuple(packs), profile.description)


class ClusterOps:
    """Every cluster lifecycle operation over one :class:`Hub`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.tables = ClusterTables(hub.store)
        self.staging = Staging(self.tables)
        self._profiles: dict[tuple[str, str], ClusterProfile] = {}

    # -- profiles ------------------------------------------------------------------------
    def publish_profile(self, body: Mapping[str, Any]) -> tuple[ProfileRecord, bool]:
        """Publish a profile version; (record, created). Identical content again is the same
        version (idempotent); different content under a published version is a conflict."""
        try:
            profile = structure(dict(body), ClusterProfile)
        except ConfigError as exc:
            raise HubError(
                Refusal.INVALID, "InvalidProfile", "the profile is invalid", exc.problems
            ) from None
        content = unstructure(profile)
        digest = profile_digest(content)
        existing = self.tables.get_profile(profile.name, profile.version)
        if existing is not None:
            if existing.digest == digest:
                return existing, False
            before = structure(dict(existing.content), ClusterProfile)
            raise HubError(
                Refusal.CONFLICT,
                "ProfileVersionExists",
                f"profile {profile.name}@{profile.version} is published with other content "
                f"({'; '.join(profile_differences(before, profile))}); published versions are "
                "immutable: publish a new version",
            )
        return self.tables.add_profile(profile.name, profile.version, content, digest), True

    def profile(self, name: str, version: str) -> ProfileRecord:
        """One published version."""
        record = self.tables.get_profile(name, version)
        if record is None:
            raise HubError(
                Refusal.NOT_FOUND, "ProfileNotFound", f"profile {name}@{version} is not published"
            )
        return record

    def _model_profile(self, ref: Any) -> ClusterProfile | None:
        if not isinstance(ref, Mapping):
            return None
        key = (str(ref.get("name")), str(ref.get("version")))
        # Published versions are immutable, so a parsed one never goes stale.
        cached = self._profiles.get(key)
        if cached is not None:
            return cached
        record = self.tables.get_profile(*key)
        if record is None:
            return None
        profile = structure(dict(record.content), ClusterProfile)
        if len(self._profiles) >= PROFILE_CACHE:
            self._profiles.pop(next(iter(self._profiles)))
        self._profiles[key] = profile
        return profile

    def _profile_problems(self, spec: Mapping[str, Any]) -> list[Problem]:
        ref = spec.get("profile")
        if not isinstance(ref, Mapping) or not all(
            isinstance(ref.get(k), str) for k in ("name", "version")
        ):
            return []  # check_cluster reports the shape
        profile = self._model_profile(ref)
        if profile is None:
            return [
                Problem(
                    "$.spec.profile",
                    f"profile {ref['name']}@{ref['version']} was never published; publish it "
                    "first (edgekit profile publish FILE, or hub.profiles.publish)",
                )
            ]
        problems = []
        values = spec.get("values", {})
        if not isinstance(values, Mapping):
            return [Problem("$.spec.values", "must be an object of pack name -> values object")]
        names = {p.name for p in profile.packs}
        for pack, extra in values.items():
            if pack not in names:
                problems.append(
                    Problem(
                        f"$.spec.values.{pack}",
                        f"profile {profile.name}@{profile.version} has no pack {pack!r}",
                    )
                )
            elif not isinstance(extra, Mapping):
                problems.append(Problem(f"$.spec.values.{pack}", "must be an object"))
        return problems

    # -- clusters ------------------------------------------------------------------------
    def create(self, body: Mapping[str, Any]) -> ClusterRecord:
        """Form a cluster; its profile version must be published. Every problem at once."""
        spec = body.get("spec")
        problems = self._profile_problems(spec) if isinstance(spec, Mapping) else []
        labels, more = _labels(body)
        problems += more
        try:
            record: ClusterRecord | None = self.hub.create_cluster(body)
        except HubError as exc:
            if exc.kind is not Refusal.INVALID or not problems:
                raise
            raise HubError(exc.kind, exc.code, exc.message, [*exc.problems, *problems]) from None
        if problems:
            raise HubError(Refusal.INVALID, "InvalidCluster", "the cluster is invalid", problems)
        assert record is not None
        self.tables.set_labels(record.uid, labels)
        # The same desired-state shape as after an update: the cluster's values and what to do.
        values = dict(spec.get("values") or {}) if isinstance(spec, Mapping) else {}
        for uid in self.tables.member_uids(record.uid):
            host = self.hub.host(uid)
            desired = {
                **(host.desired or {}),
                "values": values,
                "action": "join",
                "upgrade": "none",
            }
            self.tables.assign(uid, record.uid, desired)
        return self.cluster(record.uid)

    def cluster(self, ident: str) -> ClusterRecord:
        """The cluster whose uid or name is ``ident``."""
        row = self.tables.find_cluster(ident)
        if row is None:
            raise HubError(Refusal.NOT_FOUND, "ClusterNotFound", f"no cluster {ident!r}")
        return row

    def _check_version(self, row: ClusterRecord, if_match: int | None) -> None:
        if if_match is not None and if_match != row.resource_version:
            raise HubError(
                Refusal.CONFLICT,
                "ResourceVersionConflict",
                f"cluster {row.name!r} is at resourceVersion {row.resource_version}, not "
                f"{if_match}: read it again and reapply the change",
            )

    def _lookup(self, row: ClusterRecord, now: float) -> Any:
        members = set(self.tables.member_uids(row.uid))

        def lookup(uid: str) -> EdgeHost | None:
            host = self.hub.store.get_host(uid)
            if host is None:
                return None
            state = host.effective_state(now, self.hub.unreachable_after)
            if uid in members:
                # A member stays available to its own cluster, even unhealthy or silent:
                # its cluster can still be updated, and the host scaled out of it.
                state = "ready"
            return edge_host(
                host.uid,
                site=host.site,
                arch=host.arch,
                mac=host.mac,
                address=host.address,
                tags=host.tags,
                state=state,
            )

        return lookup

    def update(
        self,
        ident: str,
        change: Mapping[str, Any],
        *,
        if_match: int | None = None,
        dry_run: bool = False,
        holder: str | None = None,
        max_unavailable: int | None = None,
    ) -> tuple[ClusterRecord, UpdatePlan]:
        """Apply ``change`` (``{"metadata": {"labels"}, "spec": {...}}``, spec keys from
        :data:`UPDATABLE` replacing the cluster's) with every creation rule; the plan says what
        each host gets. Stores nothing on any problem, on ``dry_run`` or when nothing changes.
        Refused (409 ``ClusterHeld``) while anything but ``holder`` holds the cluster.
        ``max_unavailable``: at most that many hosts get an upgrade at once, the others are
        held back (:mod:`edgekit.hub.staging`)."""
        now = time.time()
        row = self.cluster(ident)
        self._check_version(row, if_match)
        if not dry_run:
            self._refuse_if_held(row, "updated", holder)
        problems: list[Problem] = []
        raw_spec = change.get("spec", {})
        if not isinstance(raw_spec, Mapping):
            raise HubError(
                Refusal.INVALID,
                "InvalidRequest",
                "the request is invalid",
                [Problem("$.spec", "must be an object")],
            )
        problems += _shape_problems(change, raw_spec)
        for key in raw_spec:
            if key not in UPDATABLE:
                problems.append(
                    Problem(
                        f"$.spec.{key}", f"cannot be changed; changeable: {', '.join(UPDATABLE)}"
                    )
                )
        # A JSON round trip copies plain JSON data faster than deepcopy.
        spec = json.loads(_canonical(dict(row.spec)))
        spec.update(json.loads(_canonical(dict(raw_spec))))
        labels = dict(row.labels)
        if isinstance(change.get("metadata"), Mapping) and "labels" in change["metadata"]:
            labels, more = _labels(change)
            problems += more
        body = {"metadata": {"name": row.name}, "spec": spec}
        plan_model, more = check_cluster(body, self._lookup(row, now))
        # A wrong type already reported above is not reported again by the model's checks.
        shaped = {p.path for p in problems}
        problems += [p for p in more + self._profile_problems(spec) if p.path not in shaped]
        if plan_model is not None:
            problems += self._control_plane_kept(
                row, plan_model.cluster.control_plane.hosts, plan_model.pool_index[0]
            )
        if problems:
            raise HubError(Refusal.INVALID, "InvalidCluster", "the change is invalid", problems)
        assert plan_model is not None
        changes = host_changes(
            old_spec=row.spec,
            new_spec=spec,
            old_profile=self._effective(row.spec),
            new_profile=self._effective(spec),
            members=self.tables.member_uids(row.uid),
        )
        changed = _canonical(spec) != _canonical(dict(row.spec))
        generation = row.generation + 1 if changed else row.generation
        version = row.resource_version + (1 if changed or labels != dict(row.labels) else 0)
        plan = UpdatePlan(
            row.name,
            row.generation,
            generation,
            row.resource_version,
            version,
            tuple(changes),
            dry_run,
        )
        if dry_run or version == row.resource_version:
            return row, plan
        model = plan_model.cluster
        self.tables.save_cluster(
            row.uid,
            spec=spec,
            vip=model.vip,
            provider_image=spec.get("providerImage"),
            labels=labels,
            generation=generation,
            resource_version=version,
        )
        self._assign(row, spec, model, changes, generation, max_unavailable)
        return self.cluster(row.uid), plan

    def _control_plane_kept(self, row: ClusterRecord, hosts: Any, index: int) -> list[Problem]:
        old = {
            h.get("hostUid")
            for p in row.spec.get("machinePoolConfig", [])
            if p.get("poolConfig", {}).get("isControlPlane")
            for h in p.get("cloudConfig", {}).get("edgeHosts", [])
        }
        if old and not old & {h.uid for h in hosts}:
            return [
                Problem(
                    f"$.spec.machinePoolConfig[{index}].cloudConfig.edgeHosts",
                    "the control plane must keep at least one of its hosts "
                    f"({', '.join(sorted(str(u) for u in old))}); replace them one at a time",
                )
            ]
        return []

    def _effective(self, spec: Mapping[str, Any]) -> ClusterProfile | None:
        profile = self._model_profile(spec.get("profile"))
        if profile is None:
            return None
        return _with_values(profile, spec.get("values") or {})

    def _assign(
        self,
        row: ClusterRecord,
        spec: Mapping[str, Any],
        model: Any,
        changes: Any,
        generation: int,
        max_unavailable: int | None,
    ) -> None:
        roles = {
            h.uid: (pool.name, i == 0, i) for i, pool in enumerate(model.pools) for h in pool.hosts
        }
        # A new generation replaces what an earlier one held back; a host it never reached
        # gets this one whatever the plan says (it does not run the earlier one).
        dropped = self.staging.clear(row.uid) if generation != row.generation else []
        unreached = {r.host_uid: r.desired.get("upgrade", "none") for r in dropped}
        hosts = []
        for c in changes:
            if c.action == "none" and c.host not in unreached:
                continue
            if c.action == "release":
                self.tables.assign(c.host, None, _release(row, generation))
                continue
            pool, control, index = roles[c.host]
            desired = {
                "clusterUid": row.uid,
                "clusterName": row.name,
                "role": "control-plane" if control else "worker",
                "pool": pool,
                "providerImage": spec.get("providerImage"),
                "vip": model.vip,
                "profile": dict(spec["profile"]),
                "values": dict(spec.get("values") or {}),
                "generation": generation,
                "action": "update" if c.action == "none" else c.action,
                "upgrade": unreached[c.host] if c.action == "none" else c.upgrade,
            }
            hosts.append((c.host, desired, (control, index)))
        self.staging.split(
            row.uid,
            generation,
            hosts,
            max_unavailable,
            dropped=dropped,
            current=lambda uid: self.hub.host(uid).desired,
        )

    # -- holders: the seam for roll-outs (issue #12) ----------------------------------------
    def hold(self, ident: str, holder: str, *, reason: str = "") -> ClusterRecord:
        """Let ``holder`` (e.g. ``rollout/r-42``) hold the cluster: it cannot be deleted, nor
        updated but by the holder, until every holder released it. Holding again is a no-op
        (the reason is replaced). Roll-outs (:mod:`edgekit.hub.domain_rollouts`) hold their
        clusters through the same table, in the transaction that creates them."""
        row = self.cluster(ident)
        problems = []
        if not holder or len(holder) > 128 or not holder.isprintable():
            problems.append(Problem("holder", "must be 1-128 printable characters"))
        if len(reason) > 1024 or not reason.isprintable():
            problems.append(Problem("reason", "must be at most 1024 printable characters"))
        if problems:
            raise HubError(Refusal.INVALID, "InvalidRequest", "the holder is invalid", problems)
        self.tables.add_holder(row.uid, holder, reason, time.time())
        return row

    def release_hold(self, ident: str, holder: str) -> bool:
        """``holder`` no longer holds the cluster; False when it did not hold it."""
        return self.tables.remove_holder(self.cluster(ident).uid, holder)

    def holders(self, ident: str) -> list[HolderRecord]:
        """What holds the cluster, oldest first (empty: it may be deleted)."""
        return self.tables.holders(self.cluster(ident).uid)

    def delete(self, ident: str, *, if_match: int | None = None) -> ClusterRecord:
        """Delete a cluster: every host gets a desired state that releases it (it returns to
        ``ready`` when its agent confirms); the events keep the audit trail. Refused (409
        ``ClusterHeld``, naming each holder) while anything holds the cluster."""
        row = self.cluster(ident)
        self._check_version(row, if_match)
        self._refuse_if_held(row, "deleted", None)
        generation = row.generation + 1
        for uid in self.tables.member_uids(row.uid):
            self.tables.assign(uid, None, _release(row, generation))
        self.tables.delete_cluster(row.uid)
        return row

    def _refuse_if_held(self, row: ClusterRecord, what: str, holder: str | None) -> None:
        held = [h for h in self.tables.holders(row.uid) if h.holder != holder]
        if held:
            names = ", ".join(h.holder + (f" ({h.reason})" if h.reason else "") for h in held)
            raise HubError(
                Refusal.CONFLICT,
                "ClusterHeld",
                f"cluster {row.name!r} is held by {names}: it cannot be {what} until "
                "that is finished or cancelled",
            )

    def status(self, ident: str) -> ClusterStatus:
        """Desired against observed per member (and per host still releasing), conditions."""
        row = self.cluster(ident)
        now = time.time()

        def one(uid: str) -> HostStatus:
            host = self.hub.host(uid)
            desired = host.desired or {}
            applied = host.status or {}
            return HostStatus(
                host=uid,
                role=desired.get("role"),
                pool=desired.get("pool"),
                action=desired.get("action"),
                upgrade=desired.get("upgrade"),
                desired_generation=desired.get("generation"),
                observed_generation=applied.get("observedGeneration"),
                phase=applied.get("phase"),
                image_digest=applied.get("imageDigest"),
                message=applied.get("message"),
                state=host.effective_state(now, self.hub.unreachable_after),
                last_seen=ts(host.last_seen),
            )

        members = tuple(one(u) for u in self.tables.member_uids(row.uid))
        releasing = tuple(one(u) for u in self.tables.releasing_uids(row.uid))
        return ClusterStatus(
            row.name,
            row.uid,
            row.generation,
            row.resource_version,
            conditions(members),
            members,
            releasing,
        )

    # -- agents --------------------------------------------------------------------------
    def health(self, uid: str, state: str, message: str | None, agent_version: str | None) -> None:
        """Palette's health report: ``unhealthy`` makes the host ``unhealthy``; ``healthy``
        returns it to ``in_use`` (or ``ready``) unless its last upgrade failed or rolled back
        (that takes a ``healthy`` upgrade report)."""
        host = self.hub.host(uid)
        current = host.state
        phase = (host.status or {}).get("phase")
        if state == "unhealthy":
            current = "unhealthy"
        elif current == "unhealthy" and phase not in ("failed", "rolled-back"):
            released = host.desired is not None and host.desired.get("action") == "release"
            current = "in_use" if host.cluster_uid is not None or released else "ready"
        elif current == "registered":
            current = "ready"  # a first sign of life, as a heartbeat is
        report = {"state": state, "message": message, "reported": ts(time.time())}
        self.tables.record_health(uid, report, current, agent_version)

    def report(self, uid: str, status: Mapping[str, Any]) -> None:
        """Store an agent's report: ``phase`` (or the older ``state``), ``observedGeneration``
        (never above the desired one), image digest and message; derive the host's state."""
        host = self.hub.host(uid)
        desired = dict(host.desired) if host.desired else None
        want = int(desired["generation"]) if desired else 0
        observed = status.get("observedGeneration")
        if observed is not None and observed > want:
            raise HubError(
                Refusal.INVALID,
                "InvalidRequest",
                "the request is invalid",
                [
                    Problem(
                        "$.observedGeneration",
                        f"is {observed} but the host's desired generation is {want}",
                    )
                ],
            )
        # The generation the report is about: a failure carries no generation of its own
        # (its observed one stays the previous), so a gate could not tell it from an older one.
        status = {**status, "attemptedGeneration": want}
        phase = status.get("phase")
        state = host.state
        done = observed is None or observed >= want
        if phase in ("failed", "rolled-back"):
            state = "unhealthy"
        elif phase == "healthy" and done:
            if host.cluster_uid is not None:
                state = "in_use"
            else:
                state = "ready"
                if desired is not None and desired.get("action") == "release":
                    # The agent confirmed its release: the host is free, and generations
                    # count per cluster, so the old cluster's is no longer "observed".
                    desired = None
                    status = {**status, "observedGeneration": None, "generation": None}
                    status["attemptedGeneration"] = None
        self.tables.record_status(uid, status, state, desired, time.time())


#: The JSON type each changeable ``spec`` key must have (the model checks the content).
_SHAPES: dict[str, tuple[type, str]] = {
    "profile": (dict, "an object {name, version}"),
    "values": (dict, "an object of pack name -> values object"),
    "providerImage": (str, "a string"),
    "machinePoolConfig": (list, "a non-empty list of pools"),
    "cloudConfig": (dict, "an object"),
}


def _shape_problems(change: Mapping[str, Any], spec: Mapping[str, Any]) -> list[Problem]:
    """Wrong JSON types in a change (which the merge would otherwise store as given)."""
    problems = []
    if "metadata" in change and not isinstance(change["metadata"], Mapping):
        problems.append(Problem("$.metadata", "must be an object"))
    for key, (kind, what) in _SHAPES.items():
        if key in spec and not isinstance(spec[key], kind):
            problems.append(Problem(f"$.spec.{key}", f"must be {what}"))
    image = spec.get("providerImage")
    if isinstance(image, str) and not 0 < len(image) <= 1024:
        problems.append(Problem("$.spec.providerImage", "must be 1-1024 characters"))
    cloud = spec.get("cloudConfig")
    if isinstance(cloud, Mapping):
        endpoint = cloud.get("controlPlaneEndpoint")
        if endpoint is not None and not isinstance(endpoint, Mapping):
            problems.append(
                Problem("$.spec.cloudConfig.controlPlaneEndpoint", "must be an object {host}")
            )
    return problems


def _release(row: ClusterRecord, generation: int) -> dict[str, Any]:
    return {
        "action": "release",
        "clusterUid": row.uid,
        "clusterName": row.name,
        "generation": generation,
    }


def _labels(body: Mapping[str, Any]) -> tuple[dict[str, str], list[Problem]]:
    meta = body.get("metadata")
    labels = meta.get("labels", {}) if isinstance(meta, Mapping) else {}
    if labels is None:
        return {}, []
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 128 and len(v) <= 256
        for k, v in labels.items()
    ):
        return {}, [
            Problem(
                "$.metadata.labels",
                "must be an object of strings (keys <= 128, values <= 256 characters)",
            )
        ]
    if len(labels) > 64:
        return {}, [Problem("$.metadata.labels", "at most 64 labels")]
    return dict(labels), []
