"""Roll-outs' operations and rules: create (plan the waves, hold the clusters), pause,
resume, abort, rollback, approve, and the JSON a roll-out is shown as.

Nothing here knows HTTP. What moves a roll-out forward is :mod:`edgekit.hub.controller`;
this module only records what a user asks, each request in one transaction with its
transition (a ``rollout`` event).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from edgekit.config import structure, unstructure
from edgekit.errors import ConfigError, Problem
from edgekit.hub.domain import Hub
from edgekit.hub.domain_checks import checks_json, post_verdict
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.eta import estimate
from edgekit.hub.store_rollouts import (
    ACTIVE,
    RolloutClusterRow,
    RolloutRow,
    RolloutTables,
    TransitionRow,
)
from edgekit.hub.views import ts
from edgekit.model.rollouts import Rollout, plan_waves

__all__ = ["CLUSTER_STATES", "STATES", "RolloutOps", "holder", "rollout_json"]

#: What a roll-out can be in; the first three are active (its clusters are held).
STATES = ("running", "paused", "rolling-back", "completed", "rolled-back", "aborted")
#: What one cluster of a roll-out can be in.
CLUSTER_STATES = (
    "pending",  # its wave has not reached it
    "updating",  # updated; its hosts converge
    "converged",  # every host at the new generation and healthy
    "failed",  # counted against its wave's gate
    "rollback-pending",  # to be put back to its previous profile version
    "rolling-back",  # put back; its hosts converge
    "rolled-back",
    "rollback-failed",
    "skipped",  # never updated (the roll-out was aborted or rolled back first)
)


def holder(name: str) -> str:
    """The cluster holder a roll-out is recorded as."""
    return f"rollout/{name}"


def _conflict(code: str, message: str) -> HubError:
    return HubError(Refusal.CONFLICT, code, message)


class RolloutOps:
    """Every user operation on roll-outs over one :class:`Hub`."""

    def __init__(self, hub: Hub, clusters: ClusterOps | None = None) -> None:
        self.hub = hub
        self.clusters = clusters or ClusterOps(hub)
        self.tables = RolloutTables(hub.store)

    # -- reading ---------------------------------------------------------------------------
    def rollout(self, name: str) -> RolloutRow:
        """The roll-out ``name``."""
        row = self.tables.get(name)
        if row is None:
            raise HubError(Refusal.NOT_FOUND, "RolloutNotFound", f"no roll-out {name!r}")
        return row

    def document(self, row: RolloutRow) -> Rollout:
        """The roll-out's document (stored after validation, so it always converts)."""
        return structure(dict(row.spec), Rollout)

    # -- create ----------------------------------------------------------------------------
    def create(self, body: Mapping[str, Any]) -> RolloutRow:
        """Validate a ``kind: Rollout`` document (every problem at once), plan its waves over
        the clusters its selector matches, hold each planned cluster. 409 when the name is
        taken or a cluster is in another active roll-out."""
        data = dict(body)
        problems: list[Problem] = []
        data.pop("apiVersion", None)
        kind = data.pop("kind", "Rollout")
        if kind != "Rollout":
            problems.append(Problem("$.kind", "must be Rollout"))
        try:
            rollout: Rollout | None = structure(data, Rollout)
        except ConfigError as exc:
            problems += exc.problems
            rollout = None
        if rollout is None or problems:
            raise HubError(Refusal.INVALID, "InvalidRollout", "the roll-out is invalid", problems)
        if self.tables.get(rollout.name) is not None:
            raise _conflict(
                "RolloutExists", f"a roll-out {rollout.name!r} exists; roll-out names are unique"
            )
        ref = rollout.profile
        if self.clusters.tables.get_profile(ref.name, ref.version) is None:
            problems.append(
                Problem(
                    "$.profile",
                    f"profile {ref.name}@{ref.version} was never published; publish it first "
                    "(edgekit profile publish FILE, or hub.profiles.publish)",
                )
            )
        rows, _ = self.clusters.tables.list_clusters(
            labels=dict(rollout.clusters.tags), profile=rollout.clusters.profile
        )
        by_name = {r.name: r for r in rows}
        plan: Sequence[Any] = ()
        if not rows:
            problems.append(Problem("$.clusters", "selects no cluster"))
        else:
            try:
                plan = plan_waves(rollout.waves, by_name)
            except ValueError as exc:
                problems.append(Problem("$.waves", str(exc)))
        if problems:
            raise HubError(Refusal.INVALID, "InvalidRollout", "the roll-out is invalid", problems)
        members = [
            (by_name[c].uid, c, i, pos)
            for i, wave in enumerate(plan)
            for pos, c in enumerate(wave.clusters)
        ]
        taken = self.tables.active_holder([m[0] for m in members])
        if taken:
            names = sorted(f"{m[1]} (rollout/{taken[m[0]]})" for m in members if m[0] in taken)
            raise _conflict(
                "ClusterHeld",
                "at most one active roll-out per cluster: "
                + ", ".join(names[:20])
                + (f" and {len(names) - 20} more" if len(names) > 20 else "")
                + " already in one",
            )
        now = time.time()
        with self.hub.store.transaction():
            self.tables.add(rollout.name, unstructure(rollout), members, now)
            reason = f"{ref.name}@{ref.version}"
            for uid, _, i, _ in members:
                self.clusters.tables.add_holder(
                    uid, holder(rollout.name), f"{reason}, wave {plan[i].name}", now
                )
            self.tables.transition(
                rollout.name,
                "created",
                now,
                data={
                    "profile": f"{ref.name}@{ref.version}",
                    "clusters": len(members),
                    "waves": [{"name": w.name, "clusters": len(w.clusters)} for w in plan],
                },
            )
        return self.rollout(rollout.name)

    # -- control ---------------------------------------------------------------------------
    def _active(self, name: str, what: str, states: Sequence[str] = ACTIVE) -> RolloutRow:
        row = self.rollout(name)
        if row.state not in states:
            raise _conflict(
                "RolloutState",
                f"roll-out {name!r} is {row.state}: it cannot be {what} "
                f"(only when {' or '.join(states)})",
            )
        return row

    def pause(self, name: str) -> RolloutRow:
        """Stop starting anything new; what runs keeps running on the devices."""
        row = self._active(name, "paused", ("running",))
        now = time.time()
        with self.hub.store.transaction():
            self.tables.set_rollout(name, now, state="paused", message="paused by a user")
            self.tables.transition(name, "paused", now, wave=row.wave, data={"by": "user"})
        return self.rollout(name)

    def resume(self, name: str) -> RolloutRow:
        """Go on; a failed wave is evaluated again with a fresh timeout (no cluster is
        updated twice)."""
        row = self._active(name, "resumed", ("paused",))
        now = time.time()
        with self.hub.store.transaction():
            more: dict[str, Any] = {}
            if row.wave_state == "failed":
                more = {"wave_state": "waiting", "wave_started": now, "soak_started": None}
                for m in self.tables.clusters(name, row.wave):
                    if m.state != "failed":
                        continue
                    if m.to_generation is not None:
                        self.tables.set_cluster(name, m.cluster_uid, state="updating")
                    else:
                        # Its update was refused, so it was never updated: try it again.
                        self.tables.set_cluster(name, m.cluster_uid, state="pending", message="")
                        more["wave_state"] = "updating"
            elif row.wave_state == "soaking" and (row.spec.get("gate") or {}).get("checks"):
                # Paused while its checks awaited verdicts (none is taken while paused): the
                # soak, and so their deadlines, start again; verdicts already given stand.
                more = {"wave_state": "waiting", "soak_started": None}
            self.tables.set_rollout(name, now, state="running", message="", **more)
            self.tables.transition(name, "resumed", now, wave=row.wave)
        return self.rollout(name)

    def verdict(self, name: str, body: Mapping[str, Any]) -> RolloutRow:
        """Record an admin client's verdict on a declared gate check of the current wave
        (:func:`edgekit.hub.domain_checks.post_verdict`: 400, 404, 409 as it says)."""
        row = self.rollout(name)
        with self.hub.store.transaction():
            post_verdict(self.tables, row, self.document(row), body)
        return self.rollout(name)

    def approve(self, name: str) -> RolloutRow:
        """Let the wave that waits for an approval start."""
        row = self._active(name, "approved", ("running", "paused"))
        if row.wave_state != "waiting-approval":
            raise _conflict(
                "NothingToApprove",
                f"roll-out {name!r} has no wave waiting for an approval (wave {row.wave} is "
                f"{row.wave_state})",
            )
        now = time.time()
        with self.hub.store.transaction():
            # Pending again at once: the next tick starts it (inside its window).
            self.tables.set_rollout(name, now, approved=row.wave, wave_state="pending")
            self.tables.transition(name, "approved", now, wave=row.wave)
        return self.rollout(name)

    def abort(self, name: str) -> RolloutRow:
        """Stop for good and release every cluster; nothing is put back."""
        row = self._active(name, "aborted")
        now = time.time()
        with self.hub.store.transaction():
            for m in self.tables.clusters(name):
                if m.state in ("pending", "rollback-pending"):
                    self.tables.set_cluster(name, m.cluster_uid, state="skipped", finished=now)
            self.release(row.name)
            self.tables.set_rollout(
                name, now, state="aborted", finished=now, message="aborted by a user"
            )
            self.tables.transition(name, "aborted", now, wave=row.wave)
        return self.rollout(name)

    def rollback(self, name: str) -> RolloutRow:
        """Put every cluster the roll-out changed back to its previous profile version (the
        controller does it: state ``rolling-back``, then ``rolled-back``). A ``completed``
        roll-out holds its clusters again for it; 409 when one was changed since."""
        row = self._active(name, "rolled back", ("running", "paused", "completed"))
        now = time.time()
        members = self.tables.clusters(name)
        with self.hub.store.transaction():
            data: dict[str, Any] = {"by": "user"}
            if row.state == "completed":
                data["after"] = "completed"
                self._hold_again(row, members, now)
            self.mark_rollback(row, members, now)
            self.tables.set_rollout(
                name, now, state="rolling-back", message="rollback asked by a user", finished=None
            )
            self.tables.transition(name, "rollback-started", now, wave=row.wave, data=data)
        return self.rollout(name)

    def _hold_again(
        self, row: RolloutRow, members: Sequence[RolloutClusterRow], now: float
    ) -> None:
        """Hold the clusters a completed roll-out changed again, or refuse (409, nothing
        changes) when one is gone, held by anything else, or changed since the roll-out."""
        changed = [m for m in members if m.to_generation is not None]
        taken = self.tables.active_holder([m.cluster_uid for m in changed])
        problems = []
        for m in changed:
            current = self.clusters.tables.find_cluster(m.cluster_uid)
            if current is None:
                problems.append(f"{m.cluster_name} was deleted")
            elif m.cluster_uid in taken:
                problems.append(f"{m.cluster_name} is in roll-out {taken[m.cluster_uid]!r}")
            elif current.generation != m.to_generation:
                problems.append(
                    f"{m.cluster_name} is at generation {current.generation}, not the "
                    f"{m.to_generation} this roll-out made"
                )
            elif held := self.clusters.tables.holders(m.cluster_uid):
                problems.append(f"{m.cluster_name} is held by {held[0].holder}")
        if problems:
            raise _conflict(
                "ClusterChanged",
                f"roll-out {row.name!r} cannot be rolled back: "
                + "; ".join(problems[:20])
                + (f" and {len(problems) - 20} more" if len(problems) > 20 else "")
                + ". Update those clusters by hand, or create a new roll-out to the version "
                "they had",
            )
        ref = row.spec.get("profile") or {}
        for m in changed:
            self.clusters.tables.add_holder(
                m.cluster_uid,
                holder(row.name),
                f"rollback of {ref.get('name')}@{ref.get('version')}",
                now,
            )

    def mark_rollback(
        self, row: RolloutRow, members: Sequence[RolloutClusterRow], now: float
    ) -> None:
        """Mark the changed ones of ``members`` to be put back; those never updated of the
        roll-out are skipped."""
        for m in members:
            if m.to_generation is not None and m.state in ("updating", "converged", "failed"):
                self.tables.set_cluster(row.name, m.cluster_uid, state="rollback-pending")
        for m in self.tables.clusters(row.name):
            if m.state == "pending":
                self.tables.set_cluster(row.name, m.cluster_uid, state="skipped", finished=now)

    def release(self, name: str) -> None:
        """Release every cluster the roll-out holds; hosts its ``maxUnavailable`` still holds
        back keep the desired state they have (an abort starts nothing new)."""
        for m in self.tables.clusters(name):
            self.clusters.tables.remove_holder(m.cluster_uid, holder(name))
            self.clusters.staging.clear(m.cluster_uid)


# -- JSON ------------------------------------------------------------------------------------
def _cluster_json(m: RolloutClusterRow, wave_names: Sequence[str]) -> dict[str, Any]:
    def version(p: Mapping[str, Any] | None) -> str | None:
        return None if p is None else f"{p.get('name')}@{p.get('version')}"

    return {
        "name": m.cluster_name,
        "uid": m.cluster_uid,
        "wave": wave_names[m.wave] if m.wave < len(wave_names) else str(m.wave),
        "state": m.state,
        "fromVersion": version(m.from_profile),
        "toVersion": version(m.to_profile),
        "fromImage": m.from_provider_image,
        "toImage": m.to_provider_image,
        "fromGeneration": m.from_generation,
        "toGeneration": m.to_generation,
        "rollbackGeneration": m.rollback_generation,
        "started": ts(m.started),
        "converged": ts(m.converged),
        "finished": ts(m.finished),
        "message": m.message,
    }


def _wave_state(row: RolloutRow, index: int) -> str:
    if index < row.wave:
        return "passed"
    if index > row.wave:
        return "pending"
    return row.wave_state


def rollout_json(
    row: RolloutRow,
    members: Sequence[RolloutClusterRow],
    transitions: Sequence[TransitionRow] = (),
    *,
    clusters: bool = True,
    durations: Mapping[int, float] | None = None,
    now: float | None = None,
    verdicts: Sequence[TransitionRow] | None = None,
) -> dict[str, Any]:
    """A roll-out as the API shows it: its document, where it is, counts per wave and per
    state, (``clusters``) every cluster's progress and (``durations``: its measured waves,
    :func:`edgekit.hub.eta.wave_durations`) its ETA and (``verdicts``: its gate-check
    transitions) its checks per wave; all from the rows of one read."""
    names = [str(w.get("name")) for w in row.spec.get("waves", [])]
    checks: dict[int, list[dict[str, Any]]] = {}
    if verdicts is not None and (row.spec.get("gate") or {}).get("checks"):
        checks = checks_json(
            structure(dict(row.spec), Rollout),
            row,
            verdicts,
            time.time() if now is None else now,
        )
    per_wave: dict[int, Counter[str]] = {i: Counter() for i in range(len(names))}
    for m in members:
        per_wave.setdefault(m.wave, Counter())[m.state] += 1
    waves = [
        {
            "name": name,
            "index": i,
            "state": _wave_state(row, i),
            "clusters": sum(per_wave[i].values()),
            "counts": dict(sorted(per_wave[i].items())),
            **({"checks": checks[i]} if i in checks else {}),
        }
        for i, name in enumerate(names)
    ]
    status: dict[str, Any] = {
        "state": row.state,
        "message": row.message,
        "wave": {
            "index": row.wave,
            "name": names[row.wave] if row.wave < len(names) else None,
            "state": row.wave_state,
            "started": ts(row.wave_started),
            "soakStarted": ts(row.soak_started),
            # The wave's attempt (its start as stored): a verdict may name it, so one made
            # for an attempt that a resume replaced cannot count for the new one.
            "attempt": row.wave_started,
            **({"checks": checks[row.wave]} if row.wave in checks else {}),
        },
        "approvedWave": row.approved,
        "finished": ts(row.finished),
        "counts": dict(sorted(Counter(m.state for m in members).items())),
        "waves": waves,
    }
    if durations is not None:
        status["eta"] = estimate(
            structure(dict(row.spec), Rollout),
            state=row.state,
            wave=row.wave,
            wave_state=row.wave_state,
            wave_started=row.wave_started,
            soak_started=row.soak_started,
            finished=row.finished,
            sizes={i: sum(c.values()) for i, c in per_wave.items()},
            durations=durations,
            now=time.time() if now is None else now,
        ).to_json()
    if clusters:
        status["clusters"] = [_cluster_json(m, names) for m in members]
    if transitions:
        status["transitions"] = [
            {
                "time": ts(t.time),
                "type": t.type,
                "wave": t.wave,
                "cluster": t.cluster,
                "data": dict(t.data),
            }
            for t in transitions
        ]
    return {
        "metadata": {
            "name": row.name,
            "creationTimestamp": ts(row.created),
            "lastModifiedTimestamp": ts(row.updated),
        },
        "spec": dict(row.spec),
        "status": status,
    }
