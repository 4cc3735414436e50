"""Running a plan: scheduling, state, the manifest, and the steps that are not per site.

Steps whose key is recorded with outputs still present are reused without touching an
executor. The others become *jobs*: each step on its own, except per-site steps, which run
as one job per kind (the stale ``site-iso/<site>`` steps, the stale
``publish/site-iso/<site>`` steps), because a backend writes or uploads a thousand small
files far faster together than one call each. A job is handed to the executor as one or
more *tasks* (:mod:`.tasks`): plain picklable callables over their inputs, so any
``concurrent.futures.Executor`` runs them, a Dask cluster's included (:mod:`.farm`); a
per-site job is split into chunks sized to keep every worker busy. This process alone
keeps the state, fires the hooks and events and writes the manifest, so they are the same
whichever executor ran the tasks. Each step still gets its own events, state record and
artifacts, so caching and the manifest stay per site.
"""

from __future__ import annotations

import json
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import __version__
from edgekit import oci_types as mt
from edgekit.config import render_user_data
from edgekit.errors import BuildError, ConfigError, EdgekitError
from edgekit.fsutil import atomic_write_text
from edgekit.limits import kind_name
from edgekit.oci_ref import resolve_target
from edgekit.plugins.interfaces import (
    Artifact,
    BuildContext,
    ImageBuildRequest,
    InstallerIsoRequest,
    PushArtifactRequest,
    PushImageRequest,
    RegistryOptions,
    SelectedBackend,
)
from edgekit.runguard import guarded

from .farm import (
    Completions,
    check_shared,
    executor_slots,
    in_process,
    submitter,
    wait_for_cancelled,
)
from .plan import ForgeEvent, ForgeResult, Plan, Step, StepFinished, StepStarted
from .sites import prune_removed_sites, publish_site_tasks, site_iso_tasks
from .tasks import (
    TASKS_DIR,
    BuildImage,
    BuildInstaller,
    PublishArtifact,
    PublishImage,
    Task,
    TaskOutput,
    task_progress,
)
from .workers import TaskEnv, describe_plugins, remove_tree

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

    from edgekit.model import ClusterProfile, ProviderImage, Site, UserData
    from edgekit.model import Forge as ForgeSpec
    from edgekit.plugins.manager import PluginManager

    from .inputs import DigestCache

__all__ = ["Runner", "artifact_from_json", "artifact_to_json"]

STATE_DIR = ".edgekit"
MANIFEST = "manifest.json"
ISO_ARTIFACT_TYPE = mt.ISO
#: Kinds whose stale steps run together as one job.
BATCHED = ("site-iso", "publish/site-iso")


def artifact_to_json(a: Artifact, output_dir: Path, step: str) -> dict[str, Any]:
    try:  # backends return paths under the (resolved) output directory: no resolve()
        path = a.path.relative_to(output_dir).as_posix()
    except ValueError:
        try:
            path = a.path.resolve().relative_to(output_dir.resolve()).as_posix()
        except ValueError:
            path = str(a.path)
    doc: dict[str, Any] = {
        "name": a.name,
        "kind": a.kind,
        "path": path,
        "digest": a.digest,
        "size": a.size,
        "mediaType": a.media_type,
        "step": step,
    }
    if a.reference:
        doc["reference"] = a.reference
    if a.annotations:
        doc["annotations"] = dict(sorted(a.annotations.items()))
    return doc


def artifact_from_json(doc: Mapping[str, Any], output_dir: Path) -> Artifact:
    path = Path(doc["path"])
    return Artifact(
        name=doc["name"],
        kind=doc["kind"],
        path=path if path.is_absolute() else output_dir / path,
        digest=doc["digest"],
        size=doc["size"],
        media_type=doc["mediaType"],
        reference=doc.get("reference"),
        annotations=doc.get("annotations", {}),
    )


def registry_options(forge: Runner) -> RegistryOptions:
    """How to reach the forge file's ``registry.target``."""
    registry = forge.spec.registry
    return RegistryOptions(
        plain_http=registry.plain_http,
        ca_cert=forge.resolve(registry.ca_cert) if registry.ca_cert else None,
    )


def registry_target(forge: Runner) -> tuple[str, RegistryOptions]:
    """The publish target (``oci:`` layouts made absolute) and how to reach it."""
    registry = forge.spec.registry
    assert registry is not None
    return resolve_target(registry.target, forge.output_dir), registry_options(forge)


def selected_backends(forge: Runner) -> dict[str, SelectedBackend]:
    """The forge file's ``backends:`` as a context carries them."""
    return {
        capability: SelectedBackend(choice.name, dict(choice.options))
        for capability, choice in forge.spec.backends.by_capability().items()
    }


class Runner:
    """``Forge.run()`` and what it needs; mixed into :class:`edgekit.forge.Forge`."""

    if TYPE_CHECKING:
        spec: ForgeSpec
        base_dir: Path
        output_dir: Path
        cache_dir: Path
        plugins: PluginManager
        images: dict[str, ProviderImage]
        profiles: Mapping[str, ClusterProfile]
        digests: DigestCache

        @property
        def sites(self) -> tuple[Site, ...]: ...
        def _full_plan(self, *, no_cache: bool = False) -> Plan: ...
        @staticmethod
        def _select(plan: Plan, kinds: Sequence[str] | None) -> Plan: ...
        def iso_image(self) -> ProviderImage: ...
        def resolve(self, path: str) -> Path: ...
        def base_user_data(self) -> UserData: ...
        def user_data_for(self, site: Site | None, *, base: UserData | None = None) -> UserData: ...
        @property
        def registration_token(self) -> str | None: ...
        def _extra_files(self, image: ProviderImage) -> dict[str, dict[str, Path]]: ...
        def _payload_files(self) -> dict[str, Path]: ...
        def check_backends(self, plan: Plan | None = None) -> None: ...

    @guarded  # SIGTERM cleans up like Ctrl-C; leftovers of killed runs are removed first
    def run(
        self,
        *,
        executor: Executor | None = None,
        pool: Executor | None = None,
        events: Callable[[ForgeEvent], None] | None = None,
        no_cache: bool = False,
        kinds: Sequence[str] | None = None,
        progress: bool | RichProgress = False,
    ) -> ForgeResult:
        """Run every step whose key changed (all of them with ``no_cache``).

        ``executor`` runs the steps, as picklable tasks, independent ones concurrently (a
        thread pool of 2 by default): any ``concurrent.futures.Executor``, a process pool's
        or a Dask cluster's (``client.get_executor()``, or the ``Client``; the run's
        directories on a file system every worker shares, docs/build-farm.md), with
        per-site steps split into chunks that keep its workers busy. ``pool`` is handed to
        backends for work they split (site ISOs), in thread pools only; ``events`` receives
        :class:`StepStarted`, :class:`Progress` and :class:`StepFinished` events; ``kinds``
        limits the run to some step kinds (and the steps they depend on). ``progress=True``
        shows live bars, one per kind, in a terminal or a Jupyter notebook (rich); a
        ``rich.progress.Progress`` draws into that instead.
        """
        full = self._full_plan(no_cache=no_cache)  # once: it fingerprints every input
        plan = self._select(full, kinds)
        self.check_backends(plan)
        if progress is not False and progress is not None:
            from .progress import RunProgress

            with RunProgress(plan, None if progress is True else progress) as bars:
                return self._run(plan, full, executor, pool, _both(events, bars), no_cache, kinds)
        return self._run(plan, full, executor, pool, events, no_cache, kinds)

    def _run(
        self,
        plan: Plan,
        full: Plan,
        executor: Executor | None,
        pool: Executor | None,
        events: Callable[[ForgeEvent], None] | None,
        no_cache: bool,
        kinds: Sequence[str] | None,
    ) -> ForgeResult:
        emit = events or (lambda _e: None)
        state = self._read_state()
        results: dict[str, tuple[Artifact, ...]] = {}
        ran: list[str] = []
        cached: list[str] = []
        if self.output_dir.exists() and not self.output_dir.is_dir():
            # mkdir would only say "File exists" (of a FIFO, a device, a file).
            st_mode = self.output_dir.stat().st_mode
            kind = "a regular file" if stat.S_ISREG(st_mode) else kind_name(st_mode)
            raise ConfigError.single("output", f"{self.output_dir}: it is {kind}, not a directory")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / STATE_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise BuildError(
                f"cannot use output directory {self.output_dir}: {exc.strerror or exc}"
            ) from None
        self.digests.save()

        env = TaskEnv(
            base_dir=self.base_dir,
            output_dir=self.output_dir,
            cache_dir=self.cache_dir,
            no_cache=no_cache,
            source_date_epoch=BuildContext(
                self.base_dir, self.output_dir, self.cache_dir
            ).source_date_epoch,
            selected=selected_backends(self),
            plugins=describe_plugins(self.plugins),
            run=secrets.token_hex(8),
        )

        # Reused steps: their recorded artifacts, no executor needed.
        jobs: dict[str, list[Step]] = {}
        for step in plan.steps:
            if step.fresh:
                arts = tuple(
                    artifact_from_json(a, self.output_dir) for a in state[step.id]["artifacts"]
                )
                results[step.id] = arts
                cached.append(step.id)
                self.plugins.hook.edgekit_step_finished(
                    step_id=step.id, kind=step.kind, artifacts=arts, cached=True
                )
                emit(StepFinished(step, arts, cached=True))
            else:
                group = step.group if step.group in BATCHED else step.id
                jobs.setdefault(group, []).append(step)
        site_steps = [s.id for s in plan.steps if s.kind == "site-iso"]

        def job_deps(name: str, members: list[Step]) -> set[str]:
            own = {s.id for s in members}
            deps = {d for s in members for d in s.depends_on} - own
            if name == "publish/site-iso":
                deps.update(site_steps)  # the published index lists every site
            return deps

        deps = {name: job_deps(name, members) for name, members in jobs.items()}

        owned = executor is None
        exe = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="edgekit-step")
        local = in_process(exe)
        slots = executor_slots(exe)
        submit = submitter(exe)
        tasks_dir = self.output_dir / STATE_DIR / TASKS_DIR
        remove_tree(tasks_dir)  # a killed run's scratch (this run holds run.lock)
        try:
            env.run_dir.mkdir(parents=True)
        except OSError as exc:
            raise BuildError(f"cannot make {env.run_dir}: {exc.strerror or exc}") from None
        running: Completions[tuple[str, Task], TaskOutput] = Completions()
        # Per job: the tasks still out, the outputs so far, the items done (for progress).
        left: dict[str, int] = {}
        outs: dict[str, TaskOutput] = {}
        try:
            if jobs and not local:
                check_shared(exe, self.base_dir, self.output_dir, self.output_dir / STATE_DIR)
            pending = dict(jobs)
            while pending or len(running):
                for name in list(pending):
                    if not deps[name] <= results.keys():
                        continue
                    members = pending.pop(name)
                    tasks = self._job_tasks(name, members, env, results, slots)
                    for step in members:
                        emit(StepStarted(step))
                        self.plugins.hook.edgekit_step_started(
                            step_id=step.id, kind=step.kind, backend=step.backend
                        )
                    left[name], outs[name] = len(tasks), {}
                    for task in tasks:
                        if local:  # live progress only when one task is the whole job
                            fut = submit(task.run, emit if len(tasks) == 1 else None, pool)
                        else:
                            fut = submit(task)
                        running.add(fut, (name, task))
                if not len(running):  # pragma: no cover - the plan is ordered, so never stuck
                    raise BuildError("forge plan has unsatisfiable dependencies")
                (name, task), fut = running.next()
                outs[name].update(_result(fut, task))
                left[name] -= 1
                members = jobs[name]
                if len(members) > 1:
                    emit(task_progress(f"{name}/*", len(outs[name]), len(members)))
                if left[name]:
                    continue
                out = outs.pop(name)
                for step in members:
                    state[step.id] = {
                        "key": step.key,
                        "artifacts": [
                            artifact_to_json(a, self.output_dir, step.id) for a in out[step.id]
                        ],
                    }
                self._write_state(state)
                for step in members:
                    self.plugins.hook.edgekit_step_finished(
                        step_id=step.id, kind=step.kind, artifacts=out[step.id], cached=False
                    )
                    emit(StepFinished(step, out[step.id], cached=False))
                results.update(out)
                ran.extend(s.id for s in members)
        except BaseException:
            running.cancel()
            wait_for_cancelled(exe, env.run)  # Dask's, even with in-process workers
            raise
        finally:
            if owned:
                exe.shutdown(wait=True)
            env.end_run()
        self.digests.save()
        if any(s.kind == "site-iso" for s in plan.steps) and prune_removed_sites(
            state, full, self.output_dir
        ):
            self._write_state(state)

        # The manifest describes the whole output directory: what this run made, plus what
        # earlier runs made for other steps of the forge file that are still current.
        recorded: dict[str, tuple[Artifact, ...]] = dict(results)
        if kinds is not None:
            for s in full.steps:  # steps outside this run: their state did not change
                if s.id not in recorded and (s.fresh or s.reason == "no cache"):
                    recorded[s.id] = tuple(
                        artifact_from_json(a, self.output_dir) for a in state[s.id]["artifacts"]
                    )
        artifacts: dict[str, Artifact] = {}
        for arts in recorded.values():
            for a in arts:
                artifacts[a.name] = a
        manifest_path = self._write_manifest(artifacts, recorded)
        this_run = {a.name for s in plan.steps for a in results.get(s.id, ())}
        artifacts = {k: v for k, v in artifacts.items() if k in this_run}
        self.plugins.hook.edgekit_manifest_written(
            path=str(manifest_path), artifacts=tuple(artifacts.values())
        )
        order = {s.id: i for i, s in enumerate(plan.steps)}
        ran.sort(key=order.__getitem__)
        return ForgeResult(plan, artifacts, tuple(ran), tuple(cached), manifest_path)

    def _job_tasks(
        self,
        name: str,
        members: list[Step],
        env: TaskEnv,
        results: Mapping[str, tuple[Artifact, ...]],
        slots: int = 1,
    ) -> list[Task]:
        """The tasks that run one job (a step, or a kind's stale per-site steps), over the
        outputs ``results`` of the steps it reads; picklable (see :mod:`.tasks`)."""
        if name == "site-iso":
            return site_iso_tasks(self, members, env, slots)
        if name == "publish/site-iso":
            target, options = registry_target(self)
            return publish_site_tasks(self, members, env, results, target, options, slots)
        [step] = members
        kind, _, rest = step.id.partition("/")
        if kind == "provider-image":
            return [BuildImage(env, step.id, step.backend, self._image_request(self.images[rest]))]
        if kind == "installer-iso":
            return [self._installer_task(step, env, results[step.depends_on[0]][0])]
        if kind == "publish":
            return [self._publish_task(step, env, results)]
        raise BuildError(f"unknown step kind {kind!r}")  # pragma: no cover

    def tasks(self, results: Mapping[str, tuple[Artifact, ...]], *, slots: int = 1) -> list[Task]:
        """Every step of :meth:`plan` (cached or not) as the tasks a run would submit, given
        the outputs ``results`` of the steps they read (``StepFinished`` events of a run
        give them): what a farm sends its workers, for inspection and tests."""
        plan = self._full_plan(no_cache=True)
        jobs: dict[str, list[Step]] = {}
        for step in plan.steps:
            jobs.setdefault(step.group if step.group in BATCHED else step.id, []).append(step)
        env = TaskEnv(
            self.base_dir,
            self.output_dir,
            self.cache_dir,
            False,
            BuildContext(self.base_dir, self.output_dir, self.cache_dir).source_date_epoch,
            selected_backends(self),
            describe_plugins(self.plugins),
        )
        return [t for n, m in jobs.items() for t in self._job_tasks(n, m, env, results, slots)]

    def _image_request(self, image: ProviderImage) -> ImageBuildRequest:
        return ImageBuildRequest(
            image=image,
            profile=self.profiles[image.profile],
            layout=self.output_dir / "images" / image.name,
            tag=image.tag_for(__version__),
            reference=image.reference_for(__version__),
            extra_files=self._extra_files(image),
            insecure_registries=frozenset(self.spec.insecure_registries),
        )

    def _installer_task(self, step: Step, env: TaskEnv, image_art: Artifact) -> Task:
        iso = self.spec.iso
        assert iso is not None
        image = self.iso_image()
        tag = image.tag_for(__version__)
        arch = iso.arch.value if iso.arch is not None else image.arch[0].value
        request = InstallerIsoRequest(
            spec=iso,
            user_data=render_user_data(self.user_data_for(None)),
            # Paths inside the image: the task extracts them on the worker.
            kernel=Path(_abs(iso.kernel_path)),
            initrd=Path(_abs(iso.initrd_path)),
            image_layout=image_art.path,
            image_tag=tag,
            image_reference=image.reference_for(__version__),
            dest=self.output_dir / "iso" / f"{iso.name}.iso",
            content_bundles=tuple(self.resolve(b) for b in iso.content_bundles),
            payload_files=self._payload_files(),
        )
        return BuildInstaller(env, step.id, step.backend, image_art, tag, arch, request)

    def _publish_task(
        self, step: Step, env: TaskEnv, results: Mapping[str, tuple[Artifact, ...]]
    ) -> Task:
        target, options = registry_target(self)
        _, _, rest = step.id.partition("/")
        kind, _, name = rest.partition("/")
        [art] = results[step.depends_on[0]]
        if kind == "provider-image":
            ref = self.images[name].published_reference(target, __version__)
            request = PushImageRequest(art.path, art.reference or "", ref, options)
            return PublishImage(env, step.id, step.backend, art, request)
        # The installer ISO: pushed into its image's repository and referring to the image,
        # so that `edgekit referrers <image>` lists the ISO built from it.
        [image_pushed] = results[step.depends_on[1]]
        image = self.iso_image()
        ref = image.published_reference(target, __version__, tag=f"installer-{name}")
        push = PushArtifactRequest(
            art.path,
            ref,
            ISO_ARTIFACT_TYPE,
            options,
            subject=image_pushed.digest,
            annotations={
                mt.FORGE: self.spec.name,
                mt.PROFILE: image.profile,
                mt.IMAGE_DIGEST: image_pushed.digest,
                # The name the image carries, not where it is published: an oci: target is an
                # absolute path, and the ISO artifact must not depend on the output directory.
                mt.IMAGE_REFERENCE: image.reference_for(__version__),
            },
        )
        return PublishArtifact(env, step.id, step.backend, ((step.id, art, push),))

    def published_reference(self, image: str, *, tag: str | None = None) -> str | None:
        """Where the provider image named ``image`` (or ``tag`` in its repository) is published.

        The string :meth:`plan` shows, the manifest records and the publisher pushes to;
        ``None`` without a registry target. See :meth:`ProviderImage.published_reference`."""
        registry = self.spec.registry
        if registry is None or not registry.target:
            return None
        target = resolve_target(registry.target, self.output_dir)
        return self.images[image].published_reference(target, __version__, tag=tag)

    # --- state and manifest -------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.output_dir / STATE_DIR / "state.json"

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data.get("steps", {}) if isinstance(data, dict) else {}

    def _write_state(self, steps: Mapping[str, Any]) -> None:
        atomic_write_text(
            self._state_path, json.dumps({"version": 1, "steps": steps}, indent=1, sort_keys=True)
        )

    def _write_manifest(
        self, artifacts: Mapping[str, Artifact], results: Mapping[str, tuple[Artifact, ...]]
    ) -> Path:
        step_of = {a.name: sid for sid, arts in results.items() for a in arts}
        doc = {
            "forge": self.spec.name,
            "edgekitVersion": __version__,
            "artifacts": [
                artifact_to_json(a, self.output_dir, step_of.get(a.name, ""))
                for a in sorted(artifacts.values(), key=lambda a: a.name)
            ],
        }
        path = self.output_dir / MANIFEST
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
        return path


def _result(fut: Future[TaskOutput], task: Task) -> TaskOutput:
    """A task's output; failures that are not edgekit's own (a worker lost more often than
    the executor retries, a task that did not unpickle) name the task."""
    try:
        return fut.result()
    except EdgekitError:
        raise
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise BuildError(f"{task.label} failed on the executor: {why}") from exc


def _abs(path: str) -> str:
    return "/" + path.lstrip("/")


def _both(
    first: Callable[[ForgeEvent], None] | None, second: Callable[[ForgeEvent], None]
) -> Callable[[ForgeEvent], None]:
    if first is None:
        return second

    def both(event: ForgeEvent) -> None:
        first(event)
        second(event)

    return both
