"""Plans, steps, run events and results, and how they render at fleet size.

A fleet of 1,000 sites has over 2,000 steps; a notebook or terminal shows them collapsed by
kind with counts (``site-iso: 1000 (3 run, 997 cached)``) and the rows inside an HTML
``<details>`` element (or, in a terminal, the rows of small groups only).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from edgekit.plugins.interfaces import Artifact, Progress

__all__ = [
    "ForgeEvent",
    "ForgeResult",
    "Plan",
    "Step",
    "StepFinished",
    "StepStarted",
]

#: Groups up to this size are listed row by row in a terminal; larger ones as one line.
ROWS_SHOWN = 12


@attrs.frozen
class Step:
    """One unit of work in a forge run."""

    #: Unique id, ``<kind>/<name>`` (``publish/<kind>/<name>`` for publishing).
    id: str
    #: provider-image | installer-iso | site-iso | publish
    kind: str
    #: The capability and backend that run it.
    capability: str
    backend: str
    #: What the step builds, in one line.
    summary: str
    #: Ids of the steps whose outputs this step reads.
    depends_on: tuple[str, ...]
    #: Content-addressed cache key (sha256 hex of every input).
    key: str
    #: True when a previous run recorded this key and its outputs are still there.
    fresh: bool = False
    #: Why it will run: "new", "changed input", "output missing", "no cache"; "" if cached.
    reason: str = ""

    @property
    def status(self) -> str:
        return "cached" if self.fresh else "will run"

    @property
    def group(self) -> str:
        """What the step is collapsed under: its kind, or ``publish/<kind>``."""
        if self.kind == "publish":
            return "publish/" + self.id.split("/")[1]
        return self.kind

    @property
    def explained(self) -> str:
        """The status with its reason, e.g. ``will run (changed input)``."""
        return self.status if self.fresh or not self.reason else f"will run ({self.reason})"


@attrs.frozen
class Plan:
    """The ordered steps of a forge run; renders collapsed by kind in a notebook or terminal."""

    forge: str
    output_dir: Path
    steps: tuple[Step, ...]
    #: Things worth knowing before running (e.g. no registration token set).
    notes: tuple[str, ...] = ()
    _by_id: dict[str, Step] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {s.id: s for s in self.steps})

    def step(self, step_id: str) -> Step:
        try:
            return self._by_id[step_id]
        except KeyError:
            raise KeyError(step_id) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "forge": self.forge,
            "output": str(self.output_dir),
            "steps": [
                {
                    "id": s.id,
                    "kind": s.kind,
                    "backend": f"{s.capability}:{s.backend}",
                    "summary": s.summary,
                    "dependsOn": list(s.depends_on),
                    "key": s.key,
                    "status": s.status,
                    "reason": s.reason,
                }
                for s in self.steps
            ],
            "notes": list(self.notes),
        }

    def summary(self) -> dict[str, dict[str, int]]:
        """Per group: how many steps, how many will run, how many are cached."""
        return _counts(self.steps, {s.id for s in self.steps if not s.fresh})

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=f"forge plan: {self.forge} -> {self.output_dir}")
        for col in ("step", "backend", "builds", "key", "status"):
            table.add_column(col)
        for group, steps in _groups(self.steps).items():
            if len(steps) <= ROWS_SHOWN:
                for s in steps:
                    table.add_row(s.id, s.backend, s.summary, s.key[:12], s.explained)
            else:
                why = Counter(s.reason for s in steps if not s.fresh)
                table.add_row(
                    f"{group}/* ({len(steps)})",
                    steps[0].backend,
                    f"{len(steps)} steps",
                    "",
                    _count_text(len(steps), sum(why.values()), "will run", why),
                )
        return table

    def _repr_html_(self) -> str:
        title = html.escape(f"forge plan: {self.forge} -> {self.output_dir}")
        counts = "".join(
            f"<tr><td>{html.escape(g)}</td><td>{c['steps']}</td><td>{c['run']}</td>"
            f"<td>{c['cached']}</td></tr>"
            for g, c in self.summary().items()
        )
        parts = [
            f"<p><b>{title}</b></p><table><tr><th>kind</th><th>steps</th><th>will run</th>"
            f"<th>cached</th></tr>{counts}</table>"
        ]
        head = "".join(f"<th>{c}</th>" for c in ("step", "backend", "builds", "key", "status"))
        for group, steps in _groups(self.steps).items():
            why = Counter(s.reason for s in steps if not s.fresh)
            label = f"{group}: " + _count_text(len(steps), sum(why.values()), "will run", why)
            rows = "".join(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(v)}</td>"
                    for v in (s.id, s.backend, s.summary, s.key[:12], s.explained)
                )
                + "</tr>"
                for s in steps
            )
            parts.append(
                f"<details><summary>{html.escape(label)}</summary>"
                f"<table><tr>{head}</tr>{rows}</table></details>"
            )
        return "".join(parts)


# --- events -----------------------------------------------------------------------------


@attrs.frozen
class StepStarted:
    step: Step


@attrs.frozen
class StepFinished:
    step: Step
    artifacts: tuple[Artifact, ...]
    cached: bool


#: What ``Forge.run(events=...)`` receives.
ForgeEvent = StepStarted | StepFinished | Progress


@attrs.frozen
class ForgeResult:
    """The outcome of a run: every artifact by name, what ran and what was reused."""

    plan: Plan
    artifacts: Mapping[str, Artifact]
    ran: tuple[str, ...]
    cached: tuple[str, ...]
    manifest_path: Path

    def summary(self) -> dict[str, dict[str, int]]:
        """Per group: how many steps, how many ran, how many were cached."""
        return _counts(self.plan.steps, set(self.ran))

    def _repr_html_(self) -> str:
        ran = set(self.ran)
        parts = [
            f"<p>ran {len(self.ran)} step(s), reused {len(self.cached)}; "
            f"manifest: {html.escape(str(self.manifest_path))}</p>"
        ]
        by_kind: dict[str, list[Artifact]] = {}
        for a in self.artifacts.values():
            kind = a.kind if a.name.split("/", 1)[0] == a.kind else f"published {a.kind}"
            by_kind.setdefault(kind, []).append(a)
        counts = self.summary()
        for group, steps in _groups(self.plan.steps).items():
            c = counts[group]
            parts.append(
                f"<details><summary>{html.escape(group)}: "
                f"{html.escape(_count_text(c['steps'], c['run'], 'run', {}))}</summary>"
                + "".join(
                    f"<div>{html.escape(s.id)}: {'ran' if s.id in ran else 'cached'}</div>"
                    for s in steps
                )
                + "</details>"
            )
        head = "<tr><th>artifact</th><th>kind</th><th>bytes</th><th>digest</th></tr>"
        for kind, arts in by_kind.items():
            rows = "".join(
                f"<tr><td>{html.escape(a.name)}</td><td>{html.escape(a.kind)}</td>"
                f"<td>{a.size:,}</td><td><code>{html.escape(a.digest[:19])}</code></td></tr>"
                for a in arts
            )
            total = sum(a.size for a in arts)
            parts.append(
                f"<details><summary>{html.escape(kind)}: {len(arts)} artifact(s), "
                f"{total:,} bytes</summary><table>{head}{rows}</table></details>"
            )
        return "".join(parts)

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=f"forge run: manifest {self.manifest_path}")
        for col in ("steps", "count", "ran", "cached"):
            table.add_column(col)
        for group, c in self.summary().items():
            table.add_row(group, str(c["steps"]), str(c["run"]), str(c["steps"] - c["run"]))
        return table


def _groups(steps: Iterable[Step]) -> dict[str, list[Step]]:
    out: dict[str, list[Step]] = {}
    for s in steps:
        out.setdefault(s.group, []).append(s)
    return out


def _counts(steps: Iterable[Step], running: set[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for group, members in _groups(steps).items():
        run = sum(1 for s in members if s.id in running)
        out[group] = {"steps": len(members), "run": run, "cached": len(members) - run}
    return out


def _count_text(total: int, run: int, verb: str, why: Mapping[str, int]) -> str:
    """``200 (3 will run, 197 cached)`` with the reasons when there are any."""
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(why.items()) if r)
    detail = f"{run} {verb}" + (f": {reasons}" if reasons else "")
    return f"{total} ({detail}, {total - run} cached)"
