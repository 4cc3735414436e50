"""Steps as plain picklable callables over their inputs: what the runner hands an executor.

A task is a frozen record holding its requests, the artifacts of the steps it reads and a
:class:`~.workers.TaskEnv`; calling it (in any process) runs the backend and returns
``{step id: artifacts}``. Nothing refers back to the ``Forge`` object, so a task pickles
with the standard library and runs on a Dask worker as in a thread.

Outputs go where every worker can reach them: files under the run's output directory (a
shared file system for a remote cluster) and pushes to the registry target. A task writes
its site ISOs into a staging directory of its own (``.edgekit/tasks/<run>/<random>``) and
moves each finished file into ``sites/`` with an atomic rename, so a worker killed mid-task
leaves no partial file where artifacts are published; its retry writes the same bytes again.
The coordinator makes the run's directory and removes it when the run ends; a task never
makes it, so one that outlives a failed run (executors cannot stop a running task) fails
before it writes anything (:meth:`.workers.TaskEnv.scratch`).
"""

from __future__ import annotations

import copyreg
import os
import pickle
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from edgekit.config import render_user_data
from edgekit.errors import BuildError, EdgekitError
from edgekit.oci import extract_files
from edgekit.plugins.interfaces import (
    Artifact,
    BuildContext,
    ImageBuildRequest,
    InstallerIsoRequest,
    Progress,
    Publisher,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    PushSiteIsosRequest,
    SiteIsoRequest,
)

from .workers import TASKS_DIR, TaskEnv, task_running

if TYPE_CHECKING:
    from edgekit.model import Site, UserData

__all__ = [
    "TASKS_DIR",
    "BuildImage",
    "BuildInstaller",
    "BuildSiteIsos",
    "PublishArtifact",
    "PublishImage",
    "PublishSiteIsos",
    "Task",
    "TaskOutput",
]


TaskOutput = dict[str, tuple[Artifact, ...]]


class Task:
    """What the runner submits: ``task()`` in any process (what an executor calls), or
    ``task.run(progress, executor)`` in this one, with live progress and the caller's pool.

    ``label`` is the step id, or ``<kind>/*`` for a chunk of per-site steps."""

    env: TaskEnv
    label: str

    @property
    def steps(self) -> tuple[str, ...]:
        """The ids of the steps whose outputs this task returns."""
        return (self.label,)

    def run(
        self, progress: Callable[[Progress], None] | None, executor: Executor | None
    ) -> TaskOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        # Short, and without the requests: user-data holds the registration token (it
        # travels to the worker, but must not show in a Dask dashboard or log).
        return f"{type(self).__name__}({self.label!r}, {len(self.steps)} step(s))"

    def __call__(self) -> TaskOutput:
        # Some backends read SOURCE_DATE_EPOCH from the environment themselves: a worker's
        # must be the coordinator's, or its bytes would differ from a local run's.
        epoch = self.env.source_date_epoch
        if epoch is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
        try:
            with task_running(self.env.run):
                return self.run(None, None)
        except Exception as exc:
            try:
                back = pickle.loads(pickle.dumps(exc))
                faithful = type(back) is type(exc) and str(back) == str(exc)
            except Exception:
                faithful = False
            if not faithful:
                raise BuildError(f"{self.label}: {type(exc).__name__}: {exc}") from None
            raise


def _remade(cls: type[EdgekitError], message: str, state: dict[str, Any]) -> EdgekitError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


def _reduce_error(exc: EdgekitError) -> tuple[Any, ...]:
    return _remade, (type(exc), str(exc), dict(exc.__dict__))


def _pickle_errors_faithfully() -> None:
    """Make edgekit's errors cross processes as themselves: pickling an exception calls its
    class with ``args``, which garbles ``ConfigError`` (its problems become characters) and
    fails for ``BackendError`` (keyword-only fields). A task's error on a worker must reach
    the coordinator with its type, message, problems and exit code."""
    todo: list[type[EdgekitError]] = [EdgekitError]
    while todo:
        cls = todo.pop()
        copyreg.pickle(cls, _reduce_error)
        todo.extend(cls.__subclasses__())


_pickle_errors_faithfully()


@attrs.frozen(repr=False)
class BuildImage(Task):
    env: TaskEnv
    label: str
    backend: str
    request: ImageBuildRequest

    def run(
        self, progress: Callable[[Progress], None] | None, executor: Executor | None
    ) -> TaskOutput:
        ctx = self.env.context(self.label, progress, executor)
        assert ctx.plugins is not None
        builder = ctx.plugins.image_builder(self.backend)
        return {self.label: (builder.build_image(self.request, ctx),)}


@attrs.frozen(repr=False)
class BuildInstaller(Task):
    """The installer ISO: the kernel and initrd are taken out of the built image here, on
    the worker, so only the image's layout path travels (``request.kernel`` and
    ``request.initrd`` name the files inside the image until then)."""

    env: TaskEnv
    label: str
    backend: str
    image: Artifact
    tag: str
    arch: str
    request: InstallerIsoRequest

    def run(
        self, progress: Callable[[Progress], None] | None, executor: Executor | None
    ) -> TaskOutput:
        ctx = self.env.context(self.label, progress, executor)
        assert ctx.plugins is not None
        assembler = ctx.plugins.iso_assembler(self.backend)
        work = self.env.scratch("iso-inputs-")
        try:
            kernel, initrd = str(self.request.kernel), str(self.request.initrd)
            boot = extract_files(self.image.path, self.tag, [kernel, initrd], work, arch=self.arch)
            request = attrs.evolve(self.request, kernel=boot[kernel], initrd=boot[initrd])
            return {self.label: (assembler.build_installer(request, ctx),)}
        finally:
            shutil.rmtree(work, ignore_errors=True)


def pushed(art: Artifact, done: PushResult) -> Artifact:
    """The published twin of ``art``: ``published-<kind>/<name>`` with its reference."""
    kind, _, name = art.name.partition("/")
    return attrs.evolve(
        art, name=f"published-{kind}/{name}", reference=done.reference, digest=done.digest
    )


class _Publish(Task):
    """A task that pushes with the publisher ``backend``."""

    backend: str

    def _publisher(
        self, progress: Callable[[Progress], None] | None, executor: Executor | None
    ) -> tuple[BuildContext, Publisher]:
        """This step's context and the publisher it pushes with."""
        ctx = self.env.context(self.label, progress, executor)
        assert ctx.plugins is not None
        return ctx, ctx.plugins.publisher(self.backend)


@attrs.frozen(repr=False)
class PublishImage(_Publish):
    env: TaskEnv
    label: str
    backend: str
    art: Artifact
    request: PushImageRequest

    def run(
        self, progress: Callable[[Progress], None] | None, executor: Executor | None
    ) -> TaskOutput:
        ctx, publisher = self._publisher(progress, executor)
        return {self.label: (pushed(self.art, publisher.push_image(self.request, ctx)),)}


@attrs.frozen(repr=False)
class PublishArtifact(_Publish):
    """One artifact pushed: the installer ISO, or a chunk of site ISOs (one push each)."""

    env: TaskEnv
    label: str
    backend: str
    #: ``(step id, the built artifact, its push)`` for each step of the chunk.
    items: tuple[tuple[str, Artifact, PushArtifactRequest], ...]

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(i[0] for i in self.items)

    def run(
        self, progress: Callable[[Progress], None] | None, executor: Executor | None
    ) -> TaskOutput:
        ctx, publisher = self._publisher(progress, executor)
        return {
            step: (pushed(art, publisher.push_artifact(request, ctx)),)
            for step, art, request in self.items
        }


@attrs.frozen(repr=False)
class PublishSiteIsos(_Publish):
    """A fleet publisher's one call: every site ISO into one index (docs/site-isos.md)."""

    env: TaskEnv
    label: str
    backend: str
    request: PushSiteIsosRequest
    #: ``(step id, site, the built artifact)`` for each stale publish step.
    items: tuple[tuple[str, str, Artifact], ...]

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(i[0] for i in self.items)

    def run(
        self, progress: Callable[[Progress], None] | None, executor: Executor | None
    ) -> TaskOutput:
        ctx, publisher = self._publisher(progress, executor)
        done = publisher.push_site_isos(self.request, ctx)
        return {step: (pushed(art, done.sites[site]),) for step, site, art in self.items}


@attrs.frozen
class Registration:
    """What a site's user-data gets from the forge file's ``registration:``."""

    endpoint: str | None
    token: str | None = attrs.field(repr=False)  # a secret: never in a task's repr or log
    project: str | None


@attrs.frozen(repr=False)
class BuildSiteIsos(Task):
    """A chunk of site ISOs in one backend call. The user-data is rendered here, on the
    worker, since at fleet size rendering is much of the work."""

    env: TaskEnv
    label: str
    backend: str
    #: ``(step id, site)`` for each site of the chunk.
    sites: tuple[tuple[str, Site], ...]
    base: UserData = attrs.field(repr=False)  # may hold a password
    registration: Registration

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(i[0] for i in self.sites)

    def run(
        self, progress: Callable[[Progress], None] | None, executor: Executor | None
    ) -> TaskOutput:
        from edgekit.model import UserData

        ctx = self.env.context(self.label, progress, executor)
        assert ctx.plugins is not None
        assembler = ctx.plugins.iso_assembler(self.backend)
        reg = self.registration
        final = self.env.output_dir / "sites"
        staging = self.env.scratch("sites-")
        try:
            final.mkdir(parents=True, exist_ok=True)
            requests = [
                SiteIsoRequest(
                    site=site.name,
                    user_data=render_user_data(
                        UserData.for_site(
                            site, reg.endpoint, reg.token, reg.project, base=self.base
                        )
                    ),
                    dest=staging / f"{site.name}.iso",
                    meta_data=f"instance-id: {site.name}\nlocal-hostname: {site.name}\n",
                )
                for _, site in self.sites
            ]
            built = {a.name: a for a in assembler.build_site_isos(requests, ctx)}
            out: TaskOutput = {}
            for step, site in self.sites:
                art = built.get(f"site-iso/{site.name}")
                if art is None:
                    raise BuildError(f"the {self.backend!r} ISO assembler returned no {step}")
                out[step] = (_moved(art, staging, final),)
            # Files a backend wrote beside the ISOs (checksums) are outputs too.
            for entry in sorted(staging.iterdir()):
                if entry.is_file():
                    os.replace(entry, final / entry.name)
            return out
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _moved(art: Artifact, staging: Path, final: Path) -> Artifact:
    """``art`` renamed from the staging directory into ``final`` (one atomic rename)."""
    try:
        rel = art.path.relative_to(staging)
    except ValueError:
        return art  # a backend that wrote elsewhere: left where it is
    dest = final / rel
    os.replace(art.path, dest)
    return attrs.evolve(art, path=dest)


#: Tasks per worker slot for per-site work (see :func:`site_chunks`).
TASKS_PER_SLOT = 4
#: The fewest site ISOs one task builds or publishes.
MIN_PER_TASK = 25
#: The most site ISOs one task builds or publishes.
MAX_PER_TASK = 500


def site_chunks(items: Sequence[Any], slots: int) -> list[Sequence[Any]]:
    """``items`` split into tasks that keep ``slots`` workers busy.

    :data:`TASKS_PER_SLOT` tasks per worker, so that a slow or lost worker's share is taken
    up by the others and a retry redoes a fraction of a worker's work; never fewer than
    :data:`MIN_PER_TASK` items a task (below that a task costs more to send than to run),
    nor more than :data:`MAX_PER_TASK` (what one retry may redo)."""
    n = len(items)
    if n == 0:
        return []
    tasks = max(slots * TASKS_PER_SLOT, -(-n // MAX_PER_TASK))
    tasks = max(1, min(tasks, n // MIN_PER_TASK))
    size = -(-n // tasks)
    return [items[i : i + size] for i in range(0, n, size)]


def task_progress(label: str, done: int, total: int) -> Progress:
    """The coordinator's progress event for a job split into tasks (items finished)."""
    return Progress(label, done, total, unit="items", message="site ISOs")
