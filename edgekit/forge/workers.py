"""What a step needs to find its backends and context in whichever process runs it.

A forge run hands its steps to a ``concurrent.futures.Executor``: a thread pool in this
process by default, or a process pool or a Dask cluster (docs/build-farm.md), whose workers
are other processes, possibly on other machines. A task must therefore carry, as plain
picklable data, everything a backend gets: the context's directories and options
(:class:`TaskEnv`) and the plugins the run uses (:class:`WorkerPlugins`).

In this process a task uses the run's own :class:`PluginManager` (found by a token), so a
thread pool behaves exactly as before; in another process the manager is rebuilt once per
process from the same plugins: modules by name, plugin objects by value (pickled: their
classes must be importable on the worker), after checking that the worker runs the same
edgekit and plugin distribution versions, since a different version may build different
bytes and the manifest must not depend on which worker ran a step.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import importlib.metadata
import os
import shutil
import tempfile
import threading
import types
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from edgekit import __version__
from edgekit.errors import BuildError
from edgekit.plugins.interfaces import BuildContext, Progress, SelectedBackend
from edgekit.plugins.manager import PluginManager

__all__ = [
    "TASKS_DIR",
    "TaskEnv",
    "WorkerPlugins",
    "describe_plugins",
    "remove_tree",
    "running_tasks",
    "task_running",
]

#: Managers of runs in this process, by token (weak: a finished run's manager may go).
_LOCAL: weakref.WeakValueDictionary[str, PluginManager] = weakref.WeakValueDictionary()
_TOKENS: weakref.WeakKeyDictionary[PluginManager, str] = weakref.WeakKeyDictionary()
#: Managers rebuilt in a worker process, by token and plugin names; a few runs' worth.
_REBUILT: dict[tuple[str, tuple[str, ...]], PluginManager] = {}
_KEEP = 8
_lock = threading.Lock()
#: Tasks running in this process, by run (what :func:`running_tasks` answers).
_ACTIVE: collections.Counter[str] = collections.Counter()


@contextlib.contextmanager
def task_running(run: str) -> Iterator[None]:
    """Count a task of ``run`` as running in this process while the block runs."""
    with _lock:
        _ACTIVE[run] += 1
    try:
        yield
    finally:
        with _lock:
            _ACTIVE[run] -= 1
            if not _ACTIVE[run]:
                del _ACTIVE[run]


def running_tasks(run: str) -> int:
    """How many tasks of ``run`` are running in this process: what a coordinator asks every
    worker after a failure, since a cancelled Dask task goes on running there."""
    with _lock:
        return _ACTIVE[run]


@attrs.frozen(eq=False)
class WorkerPlugins:
    """The plugins of a run, as data a worker process can rebuild a manager from."""

    #: Identifies the run's manager in the process that made this description.
    token: str
    #: ``(name, module name)`` for plugin modules, ``(name, object)`` for plugin objects.
    plugins: tuple[tuple[str, str | object], ...]
    #: Plugin name -> its distribution (``edgekit-iso 0.1.0``) when it came from one.
    distributions: tuple[tuple[str, str], ...]
    #: The edgekit version of the coordinator.
    edgekit: str = __version__

    def manager(self) -> PluginManager:
        """The run's manager here, or one rebuilt from the same plugins (once per process)."""
        local = _LOCAL.get(self.token)
        if local is not None:
            return local
        # The names too: a manager that gained or lost a plugin since is another one here.
        key = (self.token, tuple(name for name, _ in self.plugins))
        with _lock:
            found = _REBUILT.get(key)
            if found is None:
                found = self._rebuild()
                if len(_REBUILT) >= _KEEP:
                    _REBUILT.pop(next(iter(_REBUILT)))
                _REBUILT[key] = found
            return found

    def _rebuild(self) -> PluginManager:
        problems = []
        if __version__ != self.edgekit:
            problems.append(f"edgekit {__version__} (the run uses {self.edgekit})")
        for _name, label in self.distributions:
            dist, _, want = label.rpartition(" ")
            try:
                have = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                problems.append(f"{dist} is not installed (the run uses {want})")
                continue
            if have != want:
                problems.append(f"{dist} {have} (the run uses {want})")
        if problems:
            raise BuildError(
                "this worker cannot run the forge's steps: it has "
                + "; ".join(problems)
                + "; install the same versions on every worker (docs/build-farm.md)"
            )
        pm = PluginManager(entry_points=False, disabled="")
        for name, plugin in self.plugins:
            obj = importlib.import_module(plugin) if isinstance(plugin, str) else plugin
            pm.register(obj, name)
        return pm


def describe_plugins(pm: PluginManager) -> WorkerPlugins:
    """The picklable description of ``pm``'s plugins (loaded ones: call ``load_all`` first)."""
    with _lock:
        token = _TOKENS.get(pm)
        if token is None:
            token = uuid.uuid4().hex
            _TOKENS[pm] = token
            _LOCAL[token] = pm
    plugins: list[tuple[str, str | object]] = []
    distributions: list[tuple[str, str]] = []
    for name, dist in pm.plugins():
        plugin = pm.hook_manager.get_plugin(name)
        plugins.append((name, plugin.__name__ if isinstance(plugin, types.ModuleType) else plugin))
        if dist != "<local>" and " " in dist:
            distributions.append((name, dist))
    return WorkerPlugins(token, tuple(plugins), tuple(distributions))


def _ignore(_: Progress) -> None:
    return None


def remove_tree(path: Path) -> None:
    """Remove the directory ``path`` (if it is there) so that nobody can add to it meanwhile.

    It is renamed first, atomically: a task still running somewhere (a killed coordinator's,
    or one its executor could not stop) then finds every path it holds gone at once and
    cannot make a file in the tree while it is being removed."""
    doomed = path.with_name(f".removing-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, doomed)
    except OSError:
        return  # not there
    shutil.rmtree(doomed, ignore_errors=True)


#: Under the output directory's state directory: a scratch directory per run, and in it
#: one per task attempt.
TASKS_DIR = "tasks"


@attrs.frozen
class TaskEnv:
    """Everything of a :class:`BuildContext` but the live parts (callbacks, executors).

    Directories are the coordinator's absolute paths: a worker on another machine must see
    them at the same paths (a shared file system, docs/build-farm.md), which the runner
    checks before it sends any step there."""

    base_dir: Path
    output_dir: Path
    cache_dir: Path
    no_cache: bool
    #: The coordinator's ``SOURCE_DATE_EPOCH``: a worker's environment must not change bytes.
    source_date_epoch: int | None
    selected: Mapping[str, SelectedBackend]
    plugins: WorkerPlugins
    #: The run this task belongs to: its scratch is ``<output>/.edgekit/tasks/<run>``, which
    #: the coordinator makes before it submits and removes when the run ends. ``""`` for a
    #: task made by ``Forge.tasks()`` to be run on its own.
    run: str = ""

    @property
    def run_dir(self) -> Path:
        """The run's scratch directory (see :attr:`run`)."""
        return self.output_dir / ".edgekit" / TASKS_DIR / (self.run or "standalone")

    def scratch(self, prefix: str) -> Path:
        """A new directory of this task's own in the run's scratch directory.

        Never makes the run's directory itself: an executor cannot stop a task already
        running (Dask lets a cancelled task finish), so a task that outlives its failed run
        finds the directory gone and fails here without writing anything."""
        if not self.run:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=self.run_dir))
        except FileNotFoundError:
            raise BuildError(
                f"the run this task belongs to has ended ({self.run_dir} is gone); it wrote nothing"
            ) from None

    def end_run(self) -> None:
        """Remove the run's scratch, so that no task of it can write there any more."""
        remove_tree(self.run_dir)
        with contextlib.suppress(OSError):  # tasks/ itself, when no other run's is left
            self.run_dir.parent.rmdir()

    def context(
        self,
        step: str,
        progress: Callable[[Progress], None] | None = None,
        executor: Any = None,
    ) -> BuildContext:
        return BuildContext(
            base_dir=self.base_dir,
            output_dir=self.output_dir,
            cache_dir=self.cache_dir,
            no_cache=self.no_cache,
            source_date_epoch=self.source_date_epoch,
            step=step,
            progress=progress or _ignore,
            executor=executor,
            plugins=self.plugins.manager(),
            selected=dict(self.selected),
        )
