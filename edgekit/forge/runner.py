"""Running a plan: scheduling, state, the manifest, and the steps that are not per site.

Steps whose key is recorded with outputs still present are reused without touching an
executor. The others become *jobs*: each step on its own, except per-site steps, which run
as one job per kind (every stale ``site-iso/<site>`` in one backend call, every stale
``publish/site-iso/<site>`` in one publish), because a backend writes or uploads a thousand
small files far faster together than one call each. Each step still gets its own events,
state record and artifacts, so caching and the manifest stay per site.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import __version__
from edgekit import oci_types as mt
from edgekit.config import render_user_data
from edgekit.errors import BuildError
from edgekit.fsutil import atomic_write_text
from edgekit.oci import extract_files
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

from .plan import ForgeEvent, ForgeResult, Plan, Step, StepFinished, StepStarted
from .sites import build_site_isos, publish_site_isos, pushed

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

        ``executor`` runs independent jobs concurrently (a thread pool of 2 by default);
        ``pool`` is handed to backends for work they split (site ISOs); ``events`` receives
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
        state_lock = threading.Lock()
        results: dict[str, tuple[Artifact, ...]] = {}
        ran: list[str] = []
        cached: list[str] = []
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / STATE_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise BuildError(
                f"cannot use output directory {self.output_dir}: {exc.strerror or exc}"
            ) from None
        self.digests.save()

        base_ctx = BuildContext(
            base_dir=self.base_dir,
            output_dir=self.output_dir,
            cache_dir=self.cache_dir,
            no_cache=no_cache,
            progress=emit,
            executor=pool,
            plugins=self.plugins,
            selected=selected_backends(self),
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

        def execute(name: str, members: list[Step]) -> dict[str, tuple[Artifact, ...]]:
            for step in members:
                emit(StepStarted(step))
                self.plugins.hook.edgekit_step_started(
                    step_id=step.id, kind=step.kind, backend=step.backend
                )
            ctx = base_ctx.for_step(name if len(members) == 1 else f"{name}/*")
            out = self._execute(name, members, ctx, results)
            with state_lock:
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
            return out

        owned = executor is None
        exe = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="edgekit-step")
        running: dict[Future[dict[str, tuple[Artifact, ...]]], str] = {}
        try:
            pending = dict(jobs)
            while pending or running:
                for name in list(pending):
                    if deps[name] <= results.keys():
                        running[exe.submit(execute, name, pending.pop(name))] = name
                if not running:  # pragma: no cover - the plan is ordered, so never stuck
                    raise BuildError("forge plan has unsatisfiable dependencies")
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    out = fut.result()  # re-raises the job's error
                    results.update(out)
                    ran.extend(s.id for s in jobs[name])
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
        finally:
            if owned:
                exe.shutdown(wait=True)
        self.digests.save()

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

    def _execute(
        self,
        name: str,
        members: list[Step],
        ctx: BuildContext,
        results: Mapping[str, tuple[Artifact, ...]],
    ) -> dict[str, tuple[Artifact, ...]]:
        if name == "site-iso":
            return build_site_isos(self, members, ctx)
        if name == "publish/site-iso":
            target, options = registry_target(self)
            return publish_site_isos(self, members, ctx, results, target, options)
        [step] = members
        kind, _, rest = step.id.partition("/")
        if kind == "provider-image":
            return {step.id: (self._build_image(self.images[rest], step, ctx),)}
        if kind == "installer-iso":
            image_art = results[step.depends_on[0]][0]
            return {step.id: (self._build_installer(step, ctx, image_art),)}
        if kind == "publish":
            return {step.id: (self._publish(step, ctx, results),)}
        raise BuildError(f"unknown step kind {kind!r}")  # pragma: no cover

    def _build_image(self, image: ProviderImage, step: Step, ctx: BuildContext) -> Artifact:
        builder = self.plugins.image_builder(step.backend)
        request = ImageBuildRequest(
            image=image,
            profile=self.profiles[image.profile],
            layout=self.output_dir / "images" / image.name,
            tag=image.tag_for(__version__),
            reference=image.reference_for(__version__),
            extra_files=self._extra_files(image),
            insecure_registries=frozenset(self.spec.insecure_registries),
        )
        return builder.build_image(request, ctx)

    def _build_installer(self, step: Step, ctx: BuildContext, image_art: Artifact) -> Artifact:
        iso = self.spec.iso
        assert iso is not None
        assembler = self.plugins.iso_assembler(step.backend)
        image = self.iso_image()
        tag = image.tag_for(__version__)
        arch = iso.arch.value if iso.arch is not None else image.arch[0].value
        (self.output_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="iso-inputs-", dir=self.output_dir / STATE_DIR))
        try:
            boot = extract_files(
                image_art.path, tag, [iso.kernel_path, iso.initrd_path], work, arch=arch
            )
            request = InstallerIsoRequest(
                spec=iso,
                user_data=render_user_data(self.user_data_for(None)),
                kernel=boot[_abs(iso.kernel_path)],
                initrd=boot[_abs(iso.initrd_path)],
                image_layout=image_art.path,
                image_tag=tag,
                image_reference=image.reference_for(__version__),
                dest=self.output_dir / "iso" / f"{iso.name}.iso",
                content_bundles=tuple(self.resolve(b) for b in iso.content_bundles),
                payload_files=self._payload_files(),
            )
            return assembler.build_installer(request, ctx)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _publish(
        self, step: Step, ctx: BuildContext, results: Mapping[str, tuple[Artifact, ...]]
    ) -> Artifact:
        publisher = self.plugins.publisher(step.backend)
        target, options = registry_target(self)
        _, _, rest = step.id.partition("/")
        kind, _, name = rest.partition("/")
        [art] = results[step.depends_on[0]]
        if kind == "provider-image":
            ref = self.images[name].published_reference(target, __version__)
            done = publisher.push_image(
                PushImageRequest(art.path, art.reference or "", ref, options), ctx
            )
            return pushed(art, done.reference, done.digest)
        # The installer ISO: pushed into its image's repository and referring to the image,
        # so that `edgekit referrers <image>` lists the ISO built from it.
        [image_pushed] = results[step.depends_on[1]]
        image = self.iso_image()
        ref = image.published_reference(target, __version__, tag=f"installer-{name}")
        request = PushArtifactRequest(
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
        done = publisher.push_artifact(request, ctx)
        return pushed(art, done.reference, done.digest)

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
