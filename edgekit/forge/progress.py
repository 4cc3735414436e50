"""Live progress of a forge run: one bar per kind of step, in a terminal or a notebook.

``Forge.run(progress=True)`` draws with rich, which renders in a terminal and in Jupyter
(live updates there use ``ipywidgets`` when it is installed, as rich does; without it the
final state is shown). A fleet of 1,000 sites is three bars (``site-iso``,
``publish/site-iso``, ...), not 2,000: a bar counts finished steps of its kind, and a kind
with one step follows that step's own progress events (bytes or items).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from edgekit.plugins.interfaces import Progress as StepProgress

from .plan import ForgeEvent, Plan, StepFinished, StepStarted

__all__ = ["RunProgress"]


class RunProgress:
    """Turns forge events into one rich progress bar per step group."""

    def __init__(self, plan: Plan, progress: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._own = progress is None
        self.progress = progress or Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._lock = threading.Lock()
        self._group_of: dict[str, str] = {}
        self._size: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._cached: dict[str, int] = {}
        self._tasks: dict[str, Any] = {}
        for s in plan.steps:
            self._group_of[s.id] = s.group
            self._size[s.group] = self._size.get(s.group, 0) + 1
        for group, n in self._size.items():
            self._done[group] = self._cached[group] = 0
            self._tasks[group] = self.progress.add_task(group, total=n, note="")

    def __enter__(self) -> RunProgress:
        if self._own:
            self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._own:
            self.progress.stop()

    def __call__(self, event: ForgeEvent) -> None:
        with self._lock:
            if isinstance(event, StepFinished):
                group = self._group_of.get(event.step.id)
                if group is None:
                    return
                self._done[group] += 1
                if event.cached:
                    self._cached[group] += 1
                note = f"{self._cached[group]} cached" if self._cached[group] else ""
                self.progress.update(
                    self._tasks[group],
                    completed=self._done[group],
                    total=self._size[group],
                    note=note,
                )
            elif isinstance(event, StepStarted):
                group = self._group_of.get(event.step.id)
                if group is not None:
                    self.progress.update(self._tasks[group], note="running")
            elif isinstance(event, StepProgress):
                self._step_progress(event)

    def _step_progress(self, event: StepProgress) -> None:
        # A batch reports as "<group>/*"; a single step by its id.
        group = event.step[:-2] if event.step.endswith("/*") else self._group_of.get(event.step)
        if group not in self._tasks:
            return
        if event.total and event.unit == "items" and self._size[group] > 1:
            # Items of a batch are this group's stale steps; the cached ones finished first.
            done = min(self._size[group], self._done[group] + event.done)
            self.progress.update(self._tasks[group], completed=done, note="running")
        elif event.total and self._size[group] == 1:
            self.progress.update(self._tasks[group], completed=event.done, total=event.total)
