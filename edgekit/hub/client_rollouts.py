"""The admin client's roll-outs: ``hub.rollouts.create(ek.Rollout(...))`` returns a
:class:`RolloutHandle` to watch and steer a roll-out the hub drives.

The hub's controller does the work; a handle only reads and asks, so closing the notebook
changes nothing and any client can pick a roll-out up again with ``hub.rollouts.get(name)``.
``status()`` and ``report()`` each come from one request (one read of the hub's tables).
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from edgekit.config import unstructure
from edgekit.errors import EdgekitError
from edgekit.hub.client_checks import CheckFn, CheckRun, run_checks
from edgekit.hub.eta import human
from edgekit.hub.tables import Table, Tabular
from edgekit.model.rollouts import Rollout

if TYPE_CHECKING:
    from edgekit.hub.client import HubClient

__all__ = [
    "CheckStatus",
    "ClusterProgress",
    "RolloutApi",
    "RolloutHandle",
    "RolloutStatus",
    "RolloutTimeout",
    "WaveStatus",
]

#: Roll-out states the controller does not move on from by itself.
SETTLED = ("paused", "completed", "rolled-back", "aborted")
#: Cluster states that end its part of a wave.
DONE = ("converged", "failed", "rolled-back", "rollback-failed", "skipped")


class RolloutTimeout(EdgekitError):
    """``wait()`` gave up before the roll-out settled."""


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@attrs.frozen
class CheckStatus:
    """One declared gate check of a wave: ``pending`` (its hosts have not passed yet),
    ``awaiting`` (a verdict is due by ``deadline``), ``passed``, ``failed``, ``timed-out``."""

    name: str
    state: str
    message: str = ""
    deadline: datetime | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CheckStatus:
        """From the API's JSON."""
        return cls(d["name"], d["state"], d.get("message") or "", _time(d.get("deadline")))

    def __str__(self) -> str:
        return f"{self.name} {self.state}"


@attrs.frozen
class WaveStatus:
    """One wave: its state and how many of its clusters are in each state (and, for a gate
    with checks, each check's state; ``members``: its clusters' names, when the answer had
    the clusters)."""

    name: str
    state: str
    clusters: int
    counts: Mapping[str, int]
    index: int = 0
    checks: tuple[CheckStatus, ...] = ()
    members: tuple[str, ...] = ()

    @property
    def done(self) -> int:
        """Clusters of the wave whose part is over (converged, failed, rolled back...)."""
        return sum(n for s, n in self.counts.items() if s in DONE)


@attrs.frozen
class ClusterProgress:
    """One cluster of a roll-out: versions, generations, state and timings."""

    name: str
    wave: str
    state: str
    from_version: str | None
    to_version: str | None
    from_generation: int | None
    to_generation: int | None
    rollback_generation: int | None
    started: datetime | None
    converged: datetime | None
    finished: datetime | None
    message: str
    #: The provider image before and after, when the roll-out changes it (else None).
    from_image: str | None = None
    to_image: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ClusterProgress:
        """From the API's JSON."""
        return cls(
            d["name"],
            d["wave"],
            d["state"],
            d.get("fromVersion"),
            d.get("toVersion"),
            d.get("fromGeneration"),
            d.get("toGeneration"),
            d.get("rollbackGeneration"),
            _time(d.get("started")),
            _time(d.get("converged")),
            _time(d.get("finished")),
            d.get("message") or "",
            from_image=d.get("fromImage"),
            to_image=d.get("toImage"),
        )

    @property
    def seconds(self) -> float | None:
        """From its update to converging (None until it converged)."""
        if self.started is None or self.converged is None:
            return None
        return (self.converged - self.started).total_seconds()


_REPORT_COLUMNS = (
    "cluster",
    "wave",
    "state",
    "from",
    "to",
    "from_generation",
    "to_generation",
    "rollback_generation",
    "started",
    "converged",
    "seconds",
    "message",
)


@attrs.frozen
class RolloutStatus:
    """Where a roll-out is, as the hub recorded it."""

    name: str
    state: str
    message: str
    wave: str | None
    wave_state: str
    counts: Mapping[str, int]
    waves: tuple[WaveStatus, ...]
    clusters: tuple[ClusterProgress, ...]
    transitions: tuple[Mapping[str, Any], ...]
    spec: Mapping[str, Any]
    #: When the hub expects it done (None: no estimate), seconds from the answer, and what
    #: the estimate rests on (docs/rollouts.md, "ETA").
    eta: datetime | None = None
    eta_seconds: int | None = None
    eta_basis: str = ""
    #: The current wave's index and attempt (its start as the hub stored it: a verdict names
    #: it, so it cannot count for an attempt a resume started since).
    wave_index: int = 0
    wave_attempt: float | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RolloutStatus:
        """From the API's JSON."""
        s = d["status"]
        eta = s.get("eta") or {}
        clusters = tuple(ClusterProgress.from_json(c) for c in s.get("clusters", []))
        return cls(
            d["metadata"]["name"],
            s["state"],
            s.get("message") or "",
            s["wave"].get("name"),
            s["wave"].get("state") or "",
            dict(s.get("counts") or {}),
            tuple(
                WaveStatus(
                    w["name"],
                    w["state"],
                    w["clusters"],
                    dict(w["counts"]),
                    int(w.get("index", i)),
                    tuple(CheckStatus.from_json(c) for c in w.get("checks", [])),
                    tuple(c.name for c in clusters if c.wave == w["name"]),
                )
                for i, w in enumerate(s.get("waves", []))
            ),
            clusters,
            tuple(s.get("transitions", [])),
            dict(d.get("spec") or {}),
            _time(eta.get("time")),
            eta.get("remainingSeconds"),
            str(eta.get("basis") or ""),
            int(s["wave"].get("index") or 0),
            s["wave"].get("attempt"),
        )

    @property
    def current(self) -> WaveStatus | None:
        """The current wave, or None (no waves)."""
        return next((w for w in self.waves if w.index == self.wave_index), None)

    @property
    def checks(self) -> tuple[CheckStatus, ...]:
        """The current wave's gate checks (empty when the gate declares none)."""
        wave = self.current
        return () if wave is None else wave.checks

    @property
    def settled(self) -> bool:
        """Whether the roll-out stays as it is until someone acts (or for good)."""
        return self.state in SETTLED or self.wave_state == "waiting-approval"

    def cluster(self, name: str) -> ClusterProgress:
        """One cluster's progress."""
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)

    def table(self) -> Table:
        """One row per wave (a fleet of 1,000 clusters is a handful of rows)."""
        rows: list[tuple[Any, ...]] = [
            (w.name, w.state, w.clusters, ", ".join(f"{k} {v}" for k, v in w.counts.items()))
            for w in self.waves
        ]
        columns: tuple[str, ...] = ("wave", "state", "clusters", "clusters per state")
        if any(w.checks for w in self.waves):
            # One compact cell per wave: "smoke awaiting, perf passed".
            cells = [", ".join(map(str, w.checks)) for w in self.waves]
            rows = [(*r, cell) for r, cell in zip(rows, cells, strict=True)]
            columns += ("checks",)
        title = f"roll-out {self.name}: {self.state}" + (
            f" ({self.message})" if self.message else ""
        )
        if self.eta is not None and self.state == "running":
            when = self.eta.isoformat(timespec="minutes").replace("+00:00", "Z")
            title += f"; ETA {when} (in {human(self.eta_seconds or 0)}: {self.eta_basis})"
        elif self.state == "running" and self.eta_basis:
            title += f"; ETA unknown ({self.eta_basis})"
        return Table(title, columns, rows)

    def __str__(self) -> str:
        return self.table().text()

    def _repr_html_(self) -> str:
        failed = [c for c in self.clusters if c.state in ("failed", "rollback-failed")]
        out = self.table().html()
        if failed:
            items = "".join(
                f"<li>{html.escape(c.name)}: {html.escape(c.message)}</li>" for c in failed[:10]
            )
            more = f"<li>and {len(failed) - 10} more</li>" if len(failed) > 10 else ""
            out += (
                f"<details><summary>{len(failed)} failed</summary><ul>{items}{more}</ul></details>"
            )
        bad = [(w, c) for w in self.waves for c in w.checks if c.state in ("failed", "timed-out")]
        if bad:
            items = "".join(
                f"<li>{html.escape(w.name)}: {html.escape(c.name)} {html.escape(c.state)}"
                + (f": {html.escape(c.message[:300])}" if c.message else "")
                + "</li>"
                for w, c in bad[:10]
            )
            summary = f"{len(bad)} check(s) failed"
            out += f"<details><summary>{summary}</summary><ul>{items}</ul></details>"
        return out


@attrs.frozen
class RolloutReport(Tabular):
    """Per cluster: wave, state, versions, generations and timings."""

    status: RolloutStatus

    def table(self) -> Table:
        """Every cluster, one row each."""
        rows = [
            (
                c.name,
                c.wave,
                c.state,
                c.from_version,
                c.to_version,
                c.from_generation,
                c.to_generation,
                c.rollback_generation,
                c.started.isoformat() if c.started else None,
                c.converged.isoformat() if c.converged else None,
                c.seconds,
                c.message,
            )
            for c in self.status.clusters
        ]
        return Table(f"roll-out {self.status.name}", _REPORT_COLUMNS, rows)

    def _repr_html_(self) -> str:
        # Collapsed per wave: a report of 1,000 clusters is a summary until opened.
        return self.status._repr_html_() + (
            f"<details><summary>{len(self.status.clusters)} clusters</summary>"
            f"{self.table().html()}</details>"
        )


class RolloutHandle:
    """A roll-out the hub drives: read it, steer it, wait for it."""

    def __init__(self, client: HubClient, name: str, last: RolloutStatus | None = None) -> None:
        self._c = client
        self.name = name
        self._last = last

    def __repr__(self) -> str:
        return f"RolloutHandle({self.name!r})"

    def _post(self, action: str) -> RolloutStatus:
        data = self._c._admin("POST", f"/v1/rollouts/{self.name}/{action}")
        self._last = RolloutStatus.from_json(data)
        return self._last

    def status(self) -> RolloutStatus:
        """Where the roll-out is now (one request)."""
        self._last = RolloutStatus.from_json(self._c._admin("GET", f"/v1/rollouts/{self.name}"))
        return self._last

    def pause(self) -> RolloutStatus:
        """Start nothing new (409 unless running)."""
        return self._post("pause")

    def resume(self) -> RolloutStatus:
        """Go on from where it paused; a failed wave is evaluated again."""
        return self._post("resume")

    def abort(self) -> RolloutStatus:
        """Stop for good and release the clusters; nothing is put back."""
        return self._post("abort")

    def rollback(self) -> RolloutStatus:
        """Put the clusters the roll-out changed back to their previous profile version;
        also after it ``completed`` (409 ``ClusterChanged`` when a cluster changed since)."""
        return self._post("rollback")

    def approve(self) -> RolloutStatus:
        """Let the wave waiting for an approval start."""
        return self._post("approve")

    def verdict(
        self,
        check: str,
        passed: bool,
        message: str = "",
        *,
        wave: int | str | None = None,
        attempt: float | None = None,
    ) -> RolloutStatus:
        """Post a verdict on the declared gate check ``check`` of ``wave`` (the current one
        by default; ``attempt``: ``status().wave_attempt``, so a verdict made before a resume
        cannot count for the wave's new attempt). The first verdict wins: 409 when the wave
        awaits none (another client's came first, it moved on, or the deadline passed)."""
        if wave is None:
            current = self.status()  # fresh: a remembered status may be of an earlier wave
            wave, attempt = current.wave_index, current.wave_attempt
        body: dict[str, Any] = {"wave": wave, "check": check, "passed": passed}
        if message:
            body["message"] = message
        if attempt is not None:
            body["attempt"] = attempt
        data = self._c._admin("POST", f"/v1/rollouts/{self.name}/verdicts", body)
        self._last = RolloutStatus.from_json(data)
        return self._last

    def run_checks(
        self, checks: Mapping[str, CheckFn], status: RolloutStatus | None = None
    ) -> list[CheckRun]:
        """Call each of ``checks`` (check name -> ``fn(wave_status) -> bool | (bool, str)``)
        the current wave awaits and post its verdict; an exception is a failed verdict with
        its message and traceback. Returns what was posted, and what the hub refused (409:
        another client's verdict came first). A name the gate does not declare is refused
        before anything runs."""
        return run_checks(self, checks, status or self.status())

    def report(self) -> RolloutReport:
        """Per cluster: from/to version, state, generations, timings (one request)."""
        return RolloutReport(self.status())

    def wait(
        self,
        *,
        progress: bool = False,
        timeout: float | None = None,
        interval: float = 0.5,
        checks: Mapping[str, CheckFn] | None = None,
    ) -> RolloutStatus:
        """Poll until the roll-out settles: completed, rolled back, aborted, paused, or a
        wave waiting for an approval. ``progress``: one bar per wave (rich: a terminal or
        Jupyter). ``checks``: evaluate these gate checks whenever a wave awaits their
        verdicts (:meth:`run_checks`). Raises :class:`RolloutTimeout` after ``timeout``
        seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bars = _WaveBars() if progress else None
        try:
            while True:
                status = self.status()
                if checks and run_checks(self, checks, status):
                    status = self.status()  # with the verdicts just posted
                if bars is not None:
                    bars.show(status)
                if status.settled:
                    return status
                if deadline is not None and time.monotonic() >= deadline:
                    raise RolloutTimeout(
                        f"roll-out {self.name!r} is still {status.state} (wave {status.wave} "
                        f"{status.wave_state}) after {timeout} s"
                    )
                time.sleep(interval)
        finally:
            if bars is not None:
                bars.stop()

    def _repr_html_(self) -> str:
        return self.status()._repr_html_()


class _WaveBars:
    """One rich progress bar per wave: clusters whose part is done, of the wave's."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def show(self, status: RolloutStatus) -> None:
        for w in status.waves:
            note = w.state + (f" ({status.state})" if w.name == status.wave else "")
            if w.checks and w.state not in ("pending", "passed"):
                note += " checks: " + ", ".join(map(str, w.checks))
            if w.name not in self.tasks:
                self.tasks[w.name] = self.progress.add_task(w.name, total=w.clusters, note=note)
            self.progress.update(self.tasks[w.name], completed=w.done, note=note)

    def stop(self) -> None:
        self.progress.stop()


class RolloutApi:
    """Roll-outs in the hub (``client.rollouts``)."""

    def __init__(self, client: HubClient) -> None:
        self._c = client

    def create(self, rollout: Rollout | Mapping[str, Any]) -> RolloutHandle:
        """Create a roll-out: the hub plans its waves, holds its clusters and drives it.
        Refused with every problem at once (400), or 409 when a cluster is in another
        active roll-out or the name is taken."""
        body = unstructure(rollout) if isinstance(rollout, Rollout) else dict(rollout)
        status = RolloutStatus.from_json(self._c._admin("POST", "/v1/rollouts", body))
        return RolloutHandle(self._c, status.name, status)

    def get(self, name: str) -> RolloutHandle:
        """A handle on the roll-out ``name`` (404 when there is none)."""
        status = RolloutStatus.from_json(self._c._admin("GET", f"/v1/rollouts/{name}"))
        return RolloutHandle(self._c, name, status)

    def list(self) -> Sequence[RolloutStatus]:
        """Every roll-out, oldest first, with counts per wave (no per-cluster rows)."""
        data = self._c._admin("GET", "/v1/rollouts")
        return [RolloutStatus.from_json(d) for d in data["items"]]
