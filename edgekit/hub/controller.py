"""The roll-out controller: an asyncio task inside the hub process that drives every active
roll-out, one tick every ``interval`` seconds.

It runs on the server's event loop, the thread every request runs on, so a step never
interleaves with a request (the store is single-threaded by design). Each step is one
transaction holding its effect *and* its transition: "cluster X updated to generation G by
roll-out R" is written with the cluster update itself, so a hub killed at any instant
restarts with either both or neither, and the next tick goes on from what is stored: no
cluster is updated twice, none is skipped. The gate rules (:func:`evaluate_gate`) are pure
and take ``now``, so their verdict after a restart is the one they would have given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from edgekit.hub.controller_rollback import UPDATES_PER_STEP, RollbackSteps, _dt
from edgekit.hub.domain import Hub
from edgekit.hub.domain_checks import verdicts_for
from edgekit.hub.errors import HubError
from edgekit.hub.gate_webhook import PENDING, GateWebhooks
from edgekit.hub.store_rollouts import RolloutClusterRow, RolloutRow
from edgekit.model.rollouts import (
    CheckState,
    GateState,
    HostObservation,
    OnFailure,
    Rollout,
    checks_failure,
    evaluate_checks,
    evaluate_gate,
)

__all__ = ["DEFAULT_INTERVAL", "UPDATES_PER_STEP", "RolloutController"]

log = logging.getLogger("edgekit.hub")

#: Seconds between two ticks.
DEFAULT_INTERVAL = 1.0


class RolloutController(RollbackSteps):
    """Drives active roll-outs over one :class:`Hub` (``clock``: seconds since the epoch).

    The member steps and the rolling-back phase are in :mod:`.controller_rollback`."""

    def __init__(
        self,
        hub: Hub,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(hub, clock)
        self.interval = interval
        self.webhooks = GateWebhooks()

    async def run(self) -> None:
        """Tick until cancelled; a step that raises is logged and tried again next tick."""
        try:
            await self._loop()
        finally:
            self.webhooks.close()

    async def _loop(self) -> None:
        while True:
            try:
                busy = True
                while busy:
                    busy = self.tick()
                    await asyncio.sleep(0)  # let requests in between steps
            except Exception as exc:  # the controller must outlive a bad step
                log.error("roll-out controller step failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.interval)

    def tick(self) -> bool:
        """One step of every active roll-out; True when one has more to do right away."""
        more = False
        for row in self.tables.list_rollouts(("running", "rolling-back")):
            if row.state == "running":
                more |= self._running(row)
            else:
                more |= self._rolling_back(row)
        return more

    # -- running ---------------------------------------------------------------------------
    def _running(self, row: RolloutRow) -> bool:
        doc = self.ops.document(row)
        now = self.clock()
        if row.wave_state in ("pending", "waiting-window", "waiting-approval"):
            return self._start_wave(row, doc, now)
        if row.wave_state == "updating":
            return self._update_wave(row, doc, now)
        if row.wave_state in ("waiting", "soaking"):
            return self._gate(row, doc, now)
        return False

    def _set_wave_state(self, row: RolloutRow, state: str, now: float, **data: Any) -> None:
        with self.tables.store.transaction():
            self.tables.set_rollout(row.name, now, wave_state=state)
            self.tables.transition(row.name, state, now, wave=row.wave, data=data)

    def _start_wave(self, row: RolloutRow, doc: Rollout, now: float) -> bool:
        if doc.approve_each_wave and row.wave > 0 and row.approved < row.wave:
            if row.wave_state != "waiting-approval":
                self._set_wave_state(row, "waiting-approval", now)
            return False
        if doc.window is not None and not doc.window.is_open(_dt(now)):
            if row.wave_state != "waiting-window":
                nxt = doc.window.next_open(_dt(now)).astimezone(UTC)
                self._set_wave_state(
                    row, "waiting-window", now, nextOpen=nxt.isoformat().replace("+00:00", "Z")
                )
            return False
        with self.tables.store.transaction():
            self.tables.set_rollout(
                row.name, now, wave_state="updating", wave_started=now, soak_started=None
            )
            self.tables.transition(
                row.name,
                "wave-started",
                now,
                wave=row.wave,
                data={"name": doc.waves[row.wave].name},
            )
        return True

    def _update_wave(self, row: RolloutRow, doc: Rollout, now: float) -> bool:
        pending = [m for m in self.tables.clusters(row.name, row.wave) if m.state == "pending"]
        for m in pending[:UPDATES_PER_STEP]:
            self._update_cluster(row, doc, m, now)
        if len(pending) > UPDATES_PER_STEP:
            return True
        with self.tables.store.transaction():
            self.tables.set_rollout(row.name, now, wave_state="waiting")
        return True

    def _update_cluster(
        self, row: RolloutRow, doc: Rollout, m: RolloutClusterRow, now: float
    ) -> None:
        """Update one cluster through the cluster lifecycle (as ``PATCH`` does), recording it
        in the same transaction: a crash leaves both or neither."""
        target = {"name": doc.profile.name, "version": doc.profile.version}
        patch: dict[str, object] = {"profile": target}
        if doc.provider_image is not None:
            patch["providerImage"] = doc.provider_image  # the cluster lifecycle: a repave
        with self.tables.store.transaction():
            try:
                before = self.clusters.cluster(m.cluster_uid)
                after, plan = self._patch_member(row, doc, m, patch)
            except HubError as exc:
                message = exc.message + "".join(f"; {p.path}: {p.message}" for p in exc.problems)
                self._member_failed(row, m, "failed", now, message[:1000], started=now)
                return
            self.tables.set_cluster(
                row.name,
                m.cluster_uid,
                state="updating",
                started=now,
                from_generation=before.generation,
                to_generation=after.generation,
                from_profile=dict(before.spec.get("profile") or {}),
                to_profile=target,
                **(
                    {}
                    if doc.provider_image is None
                    else {
                        "from_provider_image": before.spec.get("providerImage"),
                        "to_provider_image": doc.provider_image,
                    }
                ),
            )
            self.tables.transition(
                row.name,
                "cluster-updated",
                now,
                wave=m.wave,
                cluster=m.cluster_name,
                data={
                    "from": before.generation,
                    "to": after.generation,
                    "hosts": [c.to_json() for c in plan.hosts][:50],
                    "heldBack": self.clusters.staging.held_back(m.cluster_uid),
                },
            )

    def _gate(self, row: RolloutRow, doc: Rollout, now: float) -> bool:
        members = self.tables.clusters(row.name, row.wave)
        self._advance(row, members, "updating")
        reports = self.tables.member_hosts(row.name, row.wave)  # one query for the wave
        hosts: list[HostObservation] = []
        per_cluster: dict[str, list[HostObservation]] = {}
        for m in members:
            if m.state == "failed" and m.to_generation is None:
                # The update itself was refused: the cluster counts against the gate.
                obs = [
                    HostObservation(
                        m.cluster_name,
                        f"cluster:{m.cluster_name}",
                        1,
                        0,
                        "failed",
                        _dt(now),
                        m.message,
                    )
                ]
            elif m.to_generation is None:
                continue
            else:
                obs = self._observations(m, m.to_generation, reports)
            per_cluster[m.cluster_uid] = obs
            hosts += obs
        started = row.wave_started if row.wave_started is not None else now
        verdict = evaluate_gate(
            doc.gate,
            hosts,
            now=_dt(now),
            wave_started=_dt(started),
            soak_started=_dt(row.soak_started) if row.soak_started is not None else None,
        )
        failed = set(verdict.failed_clusters)
        with self.tables.store.transaction():
            for m in members:
                if m.cluster_uid not in per_cluster:
                    continue
                obs = per_cluster[m.cluster_uid]
                if m.cluster_name in failed and m.state != "failed":
                    why = "; ".join(
                        f"{h.uid}: {verdict.reasons[h.uid]}"
                        for h in obs
                        if h.uid in verdict.reasons
                    )
                    self._member_failed(row, m, "failed", now, why[:1000])
                elif m.state == "updating" and all(
                    h.observed_generation >= h.desired_generation and h.phase == "healthy"
                    for h in obs
                ):
                    self._member_to(row, m, "converged", now, converged=now)
            if verdict.state is GateState.FAILED:
                self._wave_failed(row, doc, members, sorted(failed), now)
                return False
            if doc.gate.checks:
                # A failed verdict fails the wave even if a host just stopped being healthy;
                # deadlines run only while the hosts pass (since the soak's start).
                hosts_passed = verdict.state in (GateState.PASSED, GateState.SOAKING)
                since = verdict.soak_started if hosts_passed else None
                state, why = self._checks(row, doc, since, now)
                if state is GateState.FAILED:
                    self._wave_failed(row, doc, members, [], now, why=why)
                    return False
                if state is not GateState.PASSED and verdict.state is GateState.PASSED:
                    verdict = attrs.evolve(verdict, state=GateState.SOAKING)
            if verdict.state is GateState.PASSED and doc.gate.webhook:
                answer = self._webhook(row, doc, now)
                if answer is not None and answer != PENDING:
                    self._wave_failed(row, doc, members, [], now, why=answer)
                    return False
                if answer is None:
                    self._wave_passed(row, doc, now)
                    return True
                verdict = attrs.evolve(verdict, state=GateState.SOAKING)
            elif verdict.state is GateState.PASSED:
                self._wave_passed(row, doc, now)
                return True
            if verdict.state is GateState.SOAKING and row.wave_state != "soaking":
                assert verdict.soak_started is not None
                self.tables.set_rollout(
                    row.name,
                    now,
                    wave_state="soaking",
                    soak_started=verdict.soak_started.timestamp(),
                )
                self.tables.transition(row.name, "soak-started", now, wave=row.wave)
            elif verdict.state is GateState.WAITING and row.wave_state == "soaking":
                self.tables.set_rollout(row.name, now, wave_state="waiting", soak_started=None)
                self.tables.transition(row.name, "soak-reset", now, wave=row.wave)
        return False

    def _checks(
        self, row: RolloutRow, doc: Rollout, since: datetime | None, now: float
    ) -> tuple[GateState, str]:
        """The declared checks' part of the gate of a wave whose hosts passed (``since``:
        when they did, the soak's start): a check with no verdict by its deadline gets a
        ``gate-check-timed-out`` transition, recorded once, so a gate never passes because
        nobody answered."""
        rows = self.tables.check_verdicts(row.name)
        verdicts = verdicts_for(rows, row.wave, row.wave_started)
        state, statuses = evaluate_checks(doc.gate, verdicts, now=_dt(now), awaiting_since=since)
        for c in statuses:
            if c.state is CheckState.TIMED_OUT and c.name not in verdicts:
                self.tables.transition(
                    row.name,
                    "gate-check-timed-out",
                    now,
                    wave=row.wave,
                    data={"check": c.name, "attempt": row.wave_started, "message": c.message},
                )
        return state, checks_failure(statuses)

    def _webhook(self, row: RolloutRow, doc: Rollout, now: float) -> str | None:
        """The webhook's verdict on a wave its hosts passed: PENDING, None (2xx) or why not."""
        assert doc.gate.webhook is not None
        payload = {
            "rollout": row.name,
            "profile": {"name": doc.profile.name, "version": doc.profile.version},
            "wave": {"index": row.wave, "name": doc.waves[row.wave].name},
            # Read again: this tick may just have marked them converged.
            "clusters": [
                {"name": m.cluster_name, "state": m.state}
                for m in self.tables.clusters(row.name, row.wave)
            ],
        }
        key = (row.name, row.wave, row.wave_started or 0.0)
        answer = self.webhooks.verdict(key, doc.gate.webhook, payload)
        if answer != PENDING:
            kind = "gate-webhook-passed" if answer is None else "gate-webhook-failed"
            data = {} if answer is None else {"message": answer}
            self.tables.transition(row.name, kind, now, wave=row.wave, data=data)
        return answer

    def _wave_passed(self, row: RolloutRow, doc: Rollout, now: float) -> None:
        self.tables.transition(
            row.name, "wave-passed", now, wave=row.wave, data={"name": doc.waves[row.wave].name}
        )
        if row.wave + 1 >= len(doc.waves):
            self.ops.release(row.name)
            self.tables.set_rollout(
                row.name, now, state="completed", wave_state="passed", finished=now, message=""
            )
            self.tables.transition(row.name, "completed", now, wave=row.wave)
            log.info("roll-out %s completed", row.name)
            return
        self.tables.set_rollout(
            row.name,
            now,
            wave=row.wave + 1,
            wave_state="pending",
            wave_started=None,
            soak_started=None,
        )

    def _wave_failed(
        self,
        row: RolloutRow,
        doc: Rollout,
        members: list[RolloutClusterRow],
        failed: list[str],
        now: float,
        *,
        why: str | None = None,
    ) -> None:
        wave = doc.waves[row.wave].name
        message = f"wave {wave!r} failed: " + (
            why
            or ", ".join(failed[:20])
            + (f" and {len(failed) - 20} more" if len(failed) > 20 else "")
        )
        self.tables.transition(
            row.name,
            "wave-failed",
            now,
            wave=row.wave,
            data={"name": wave, "failedClusters": failed[:100]},
        )
        if doc.on_failure is OnFailure.ROLLBACK:
            # Only the failed wave's clusters go back; earlier waves passed their gates.
            self.ops.mark_rollback(row, self.tables.clusters(row.name, row.wave), now)
            self.tables.set_rollout(
                row.name,
                now,
                state="rolling-back",
                wave_state="failed",
                message=message + "; rolling back",
            )
            self.tables.transition(
                row.name, "rollback-started", now, wave=row.wave, data={"by": "gate"}
            )
        else:
            self.tables.set_rollout(
                row.name, now, state="paused", wave_state="failed", message=message + "; paused"
            )
            self.tables.transition(row.name, "paused", now, wave=row.wave, data={"by": "gate"})
        log.warning("roll-out %s: %s", row.name, message)
