"""The roll-out controller's member steps: what both phases do to a roll-out's clusters
(advance held-back hosts, read their observations, move a member with its transition) and
the rolling-back phase itself. :class:`~edgekit.hub.controller.RolloutController` adds the
loop and the running phase (waves and gates).

Every step here writes in the caller's transaction or opens its own, as the controller's
module docstring says: a member's state and its transition commit together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from edgekit.hub.domain import Hub
from edgekit.hub.domain_rollouts import RolloutOps, holder
from edgekit.hub.errors import HubError
from edgekit.hub.plans import UpdatePlan
from edgekit.hub.records import ClusterRecord
from edgekit.hub.store_rollouts import HostReport, RolloutClusterRow, RolloutRow
from edgekit.model.rollouts import HostObservation, Rollout, duration_seconds

__all__ = ["UPDATES_PER_STEP", "MemberSteps", "RollbackSteps"]

log = logging.getLogger("edgekit.hub")

#: Cluster updates in one step before the loop yields to requests again.
UPDATES_PER_STEP = 50


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class MemberSteps:
    """The member steps both phases share, over one :class:`Hub` (``clock``: seconds since
    the epoch)."""

    def __init__(self, hub: Hub, clock: Callable[[], float]) -> None:
        self.ops = RolloutOps(hub)
        self.tables = self.ops.tables
        self.clusters = self.ops.clusters
        self.clock = clock

    def _advance(self, row: RolloutRow, members: list[RolloutClusterRow], state: str) -> None:
        """Give held-back hosts of the ``state`` members their desired states as in-flight
        ones report healthy (``maxUnavailable``), each cluster in one transaction with its
        transition."""
        now = self.clock()
        progress = self.clusters.staging.progress()  # one query, whatever the fleet's size
        for m in members:
            found = progress.get(m.cluster_uid)
            if m.state != state or found is None or found.failed:
                continue
            if found.in_flight >= found.max_unavailable:
                continue  # no room: no transaction either
            with self.tables.store.transaction():
                given = self.clusters.staging.advance(m.cluster_uid, found)
                if given:
                    self.tables.transition(
                        row.name,
                        "hosts-updated",
                        now,
                        wave=m.wave,
                        cluster=m.cluster_name,
                        data={"hosts": given, "heldBack": found.held - len(given)},
                    )

    def _patch_member(
        self, row: RolloutRow, doc: Rollout, m: RolloutClusterRow, patch: Mapping[str, object]
    ) -> tuple[ClusterRecord, UpdatePlan]:
        """Change member ``m``'s cluster spec by ``patch`` through the cluster lifecycle (as
        ``PATCH`` does), as the roll-out holding it and within its ``maxUnavailable``."""
        return self.clusters.update(
            m.cluster_uid,
            {"spec": patch},
            holder=holder(row.name),
            max_unavailable=doc.max_unavailable,
        )

    def _member_to(
        self,
        row: RolloutRow,
        m: RolloutClusterRow,
        state: str,
        now: float,
        *,
        data: dict[str, Any] | None = None,
        **columns: Any,
    ) -> None:
        """Move member ``m`` to ``state`` (and ``columns``) with its ``cluster-<state>``
        transition, in the caller's transaction."""
        self.tables.set_cluster(row.name, m.cluster_uid, state=state, **columns)
        self.tables.transition(
            row.name, f"cluster-{state}", now, wave=m.wave, cluster=m.cluster_name, data=data
        )

    def _member_failed(
        self,
        row: RolloutRow,
        m: RolloutClusterRow,
        state: str,
        now: float,
        why: str,
        **columns: Any,
    ) -> None:
        """``m`` ``failed`` or ``rollback-failed`` for the reason ``why`` (column and event)."""
        self._member_to(row, m, state, now, data={"message": why}, message=why, **columns)

    @staticmethod
    def _observations(
        m: RolloutClusterRow,
        generation: int,
        hosts: dict[str, list[HostReport]],
    ) -> list[HostObservation]:
        return [
            HostObservation(
                cluster=m.cluster_name,
                uid=uid,
                desired_generation=generation,
                observed_generation=observed,
                phase=phase,
                last_seen=_dt(last_seen),
                message=message,
                attempted_generation=attempted,
            )
            for uid, observed, phase, message, last_seen, attempted in hosts.get(m.cluster_uid, [])
        ]


class RollbackSteps(MemberSteps):
    """The rolling-back phase: put each member back, then wait for its hosts."""

    def _rolling_back(self, row: RolloutRow) -> bool:
        doc = self.ops.document(row)
        now = self.clock()
        members = self.tables.clusters(row.name)
        todo = [m for m in members if m.state == "rollback-pending"]
        for m in todo[:UPDATES_PER_STEP]:
            self._roll_back_cluster(row, doc, m, now)
        if len(todo) > UPDATES_PER_STEP:
            return True
        timeout = duration_seconds(doc.gate.timeout) or 0
        self._advance(row, members, "rolling-back")
        reports = self.tables.member_hosts(row.name)
        waiting = False
        with self.tables.store.transaction():
            for m in members:
                if m.state != "rolling-back" or m.rollback_generation is None:
                    continue
                obs = self._observations(m, m.rollback_generation, reports)
                failed = [h for h in obs if h.failed]
                if failed:
                    # A failure of the rollback generation itself is known at once.
                    why = "; ".join(
                        f"{h.uid}: {h.phase}" + (f": {h.message}" if h.message else "")
                        for h in failed
                    )[:1000]
                    self._member_failed(row, m, "rollback-failed", now, why)
                elif all(
                    h.observed_generation >= h.desired_generation and h.phase == "healthy"
                    for h in obs
                ):
                    self._member_to(row, m, "rolled-back", now, finished=now)
                elif m.finished is not None and now - m.finished > timeout:
                    why = (
                        f"did not converge to generation {m.rollback_generation} within "
                        f"{doc.gate.timeout}"
                    )
                    self._member_failed(row, m, "rollback-failed", now, why)
                else:
                    waiting = True
            if not waiting and not todo:
                self.ops.release(row.name)
                self.tables.set_rollout(row.name, now, state="rolled-back", finished=now)
                self.tables.transition(row.name, "rolled-back", now, wave=row.wave)
                log.info("roll-out %s rolled back", row.name)
        return False

    def _roll_back_cluster(
        self, row: RolloutRow, doc: Rollout, m: RolloutClusterRow, now: float
    ) -> None:
        """Put one cluster back to the profile version it had before the roll-out, recorded
        in the same transaction as the update (``finished`` is when the rollback began)."""
        patch: dict[str, object] = {"profile": dict(m.from_profile or {})}
        if m.to_provider_image is not None and m.from_provider_image is not None:
            patch["providerImage"] = m.from_provider_image  # the image it had, back too
        with self.tables.store.transaction():
            try:
                after, _ = self._patch_member(row, doc, m, patch)
            except HubError as exc:
                # The event keeps the whole message; the member's column, its first 1000.
                self._member_to(
                    row,
                    m,
                    "rollback-failed",
                    now,
                    data={"message": exc.message},
                    message=exc.message[:1000],
                )
                return
            self._member_to(
                row,
                m,
                "rolling-back",
                now,
                data={
                    "from": m.to_generation,
                    "to": after.generation,
                    "profile": dict(m.from_profile or {}),
                },
                rollback_generation=after.generation,
                finished=now,
            )
