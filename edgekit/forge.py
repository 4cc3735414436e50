"""The EdgeForge pipeline: from a forge file to provider images, ISOs and a manifest.

``Forge.plan()`` turns a forge file into ordered steps, each with a content-addressed cache
key computed from everything that step reads (its model objects, the cheap fingerprints of
its local inputs, the backend and its version, and the keys of the steps it depends on).
``Forge.run()`` executes the steps whose key changed through the selected backends and
writes ``manifest.json`` listing every artifact with its digest.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from edgekit import __version__, config
from edgekit.errors import BuildError, ConfigError, EdgekitError, Problem
from edgekit.fsutil import atomic_write_text, fingerprint
from edgekit.inputs import check_forge_inputs, read_user_data
from edgekit.model import (
    ClusterProfile,
    LayoutBase,
    PackSource,
    ProviderImage,
    Site,
    UserData,
    parse_site_inventory,
)
from edgekit.model import Forge as ForgeSpec
from edgekit.oci import extract_files
from edgekit.plugins.interfaces import (
    Artifact,
    BuildContext,
    ImageBuildRequest,
    InstallerIsoRequest,
    Progress,
    RegistryOptions,
    SiteIsoRequest,
)
from edgekit.plugins.manager import PluginManager, get_plugin_manager
from edgekit.runguard import guarded

__all__ = [
    "Forge",
    "ForgeEvent",
    "ForgeResult",
    "Plan",
    "Step",
    "StepFinished",
    "StepStarted",
]

STATE_DIR = ".edgekit"
STEP_KINDS = frozenset({"provider-image", "installer-iso", "site-isos", "publish"})
MANIFEST = "manifest.json"
ISO_ARTIFACT_TYPE = "application/vnd.edgekit.iso.v1"
SITE_ISO_ARTIFACT_TYPE = "application/vnd.edgekit.site-iso.v1"


# --- plan -------------------------------------------------------------------------------


@attrs.frozen
class Step:
    """One unit of work in a forge run."""

    #: Unique id, ``<kind>/<name>``.
    id: str
    #: provider-image | installer-iso | site-isos | publish
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

    @property
    def status(self) -> str:
        return "cached" if self.fresh else "will run"


@attrs.frozen
class Plan:
    """The ordered steps of a forge run; renders as a table in a notebook or terminal."""

    forge: str
    output_dir: Path
    steps: tuple[Step, ...]
    #: Things worth knowing before running (e.g. no registration token set).
    notes: tuple[str, ...] = ()

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

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
                }
                for s in self.steps
            ],
            "notes": list(self.notes),
        }

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=f"forge plan: {self.forge} -> {self.output_dir}")
        for col in ("step", "backend", "builds", "key", "status"):
            table.add_column(col)
        for s in self.steps:
            table.add_row(s.id, s.backend, s.summary, s.key[:12], s.status)
        return table

    def _repr_html_(self) -> str:
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(v)}</td>"
                for v in (s.id, s.backend, s.summary, s.key[:12], s.status)
            )
            + "</tr>"
            for s in self.steps
        )
        head = "".join(f"<th>{c}</th>" for c in ("step", "backend", "builds", "key", "status"))
        title = html.escape(f"forge plan: {self.forge} -> {self.output_dir}")
        return f"<table><caption>{title}</caption><tr>{head}</tr>{rows}</table>"


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

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(a.name)}</td><td>{html.escape(a.kind)}</td>"
            f"<td>{a.size:,}</td><td><code>{html.escape(a.digest[:19])}</code></td></tr>"
            for a in self.artifacts.values()
        )
        return (
            f"<p>ran {len(self.ran)} step(s), reused {len(self.cached)}; "
            f"manifest: {html.escape(str(self.manifest_path))}</p>"
            f"<table><tr><th>artifact</th><th>kind</th><th>bytes</th><th>digest</th></tr>"
            f"{rows}</table>"
        )


# --- helpers ----------------------------------------------------------------------------


def _key(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _artifact_to_json(a: Artifact, output_dir: Path, step: str) -> dict[str, Any]:
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


def _artifact_from_json(doc: Mapping[str, Any], output_dir: Path) -> Artifact:
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


def _oci_target(target: str) -> Path | None:
    """The layout path of an ``oci:PATH`` registry target, else None."""
    return Path(target[4:]) if target.startswith("oci:") else None


# --- the pipeline -----------------------------------------------------------------------


class Forge:
    """A forge file, ready to plan and run.

    ::

        forge = Forge.load("edgeforge.yaml")
        print(forge.plan())
        result = forge.run()
        result.artifacts["installer-iso/installer"].digest
    """

    def __init__(
        self,
        spec: ForgeSpec,
        *,
        base_dir: Path | None = None,
        output_dir: Path | None = None,
        cache_dir: Path | None = None,
        plugins: PluginManager | None = None,
        source: str | None = None,
        registration_token: str | None = None,
    ) -> None:
        self.spec = spec
        self._token = registration_token
        self.base_dir = (base_dir or Path.cwd()).resolve()
        # Outputs go under ./dist of the *current* directory unless the file or caller says.
        if output_dir is not None:
            self.output_dir = output_dir.resolve()
        elif spec.output:
            out = Path(spec.output).expanduser()
            self.output_dir = (out if out.is_absolute() else Path.cwd() / out).resolve()
        else:
            self.output_dir = (Path.cwd() / "dist").resolve()
        # Caches (downloads, layers, the sample OS) may be shared between projects.
        env_cache = os.environ.get("EDGEKIT_CACHE_DIR")
        default_cache = Path(env_cache) if env_cache else self.output_dir / STATE_DIR / "cache"
        self.cache_dir = (cache_dir or default_cache).resolve()
        self.plugins = plugins or get_plugin_manager()
        self.source = source
        self.profiles: dict[str, ClusterProfile] = {p.name: p for p in spec.profiles}
        self.images: dict[str, ProviderImage] = {i.name: i for i in spec.expand_images()}
        self.sites: tuple[Site, ...] = check_forge_inputs(spec, self.base_dir, source)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        output_dir: Path | None = None,
        cache_dir: Path | None = None,
        plugins: PluginManager | None = None,
    ) -> Forge:
        """Load and validate a forge file; raises :class:`ConfigError` listing every problem."""
        p = Path(path)
        spec = config.load(p, ForgeSpec)
        return cls(
            spec,
            base_dir=p.resolve().parent,
            output_dir=output_dir,
            cache_dir=cache_dir,
            plugins=plugins,
            source=str(p),
        )

    # --- inputs -------------------------------------------------------------------------

    def _inventory_sites(self) -> tuple[Site, ...]:
        if not self.spec.site_inventory:
            return ()
        path = self.resolve(self.spec.site_inventory)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError.single(
                "$.siteInventory", f"cannot read {path}: {exc.strerror}"
            ) from None
        return parse_site_inventory(text, source=str(path))

    def _check_unique_sites(self) -> None:
        seen: set[str] = set()
        problems = []
        for i, site in enumerate(self.sites):
            if site.name in seen:
                problems.append(Problem(f"$.sites[{i}].name", f"site {site.name!r} appears twice"))
            seen.add(site.name)
        if problems:
            raise ConfigError(problems)

    def iso_image(self) -> ProviderImage:
        """The provider image the installer ISO embeds: the first of its images entry."""
        assert self.spec.iso is not None
        return self.spec.image_spec(self.spec.iso.image).expand()[0]

    def resolve(self, path: str) -> Path:
        """Resolve a path from the forge file against the file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def registration_token(self) -> str | None:
        """The registration token: the one given to the constructor, else the value of the
        environment variable the forge file names (tokens never live in the file)."""
        if self._token is not None:
            return self._token
        reg = self.spec.registration
        if reg is None or not reg.token_env:
            return None
        return os.environ.get(reg.token_env) or None

    def user_data_for(self, site: Site | None) -> UserData:
        """The user-data for one site, or the generic installer's when ``site`` is None.

        Keys come from the ISO's ``userData`` (a file or inline), then the registration
        endpoint, project and token, then the site's name, tags and network.
        """
        iso = self.spec.iso
        base = UserData()
        if iso is not None and isinstance(iso.user_data, Mapping):
            base = config.structure(dict(iso.user_data), UserData, source="$.iso.userData")
        elif iso is not None and isinstance(iso.user_data, str):
            base = read_user_data(self.resolve(iso.user_data))
        reg = self.spec.registration
        return UserData.for_site(
            site,
            reg.endpoint if reg else None,
            self.registration_token,
            reg.project if reg else None,
            base=base,
        )

    # --- planning -----------------------------------------------------------------------

    def _backend_label(self, capability: str, name: str) -> str:
        try:
            info = self.plugins.backend_info(capability, name)
        except EdgekitError:
            return f"{name} (not installed)"
        return info.describe()

    def _files_for_image(self, image: ProviderImage) -> dict[str, str]:
        files: dict[str, str] = {}
        for overlay in image.overlays:
            files[overlay.source] = fingerprint(self.resolve(overlay.source))
        if isinstance(image.base, LayoutBase):
            files[image.base.layout] = fingerprint(self.resolve(image.base.layout))
        for pack in self.profiles[image.profile].packs:
            src: PackSource | None = pack.source
            if src is not None and src.path and not src.url and not src.oci:
                files[src.path] = fingerprint(self.resolve(src.path))
        for arch, extra in self._extra_files(image).items():
            for path, host in extra.items():
                files[f"plugin:{arch}:{path}"] = fingerprint(host)
        return files

    def _extra_files(self, image: ProviderImage) -> dict[str, dict[str, Path]]:
        """Files plugins add to ``image`` (the agent), per arch: path in image -> host path."""
        return {
            arch.value: {
                k: Path(v)
                for k, v in self.plugins.merged_files(
                    "edgekit_image_extra_files", image_name=image.name, arch=arch.value
                ).items()
            }
            for arch in image.arch
        }

    def _payload_files(self) -> dict[str, Path]:
        """Files plugins add to the installer payload: path in the initrd -> host path."""
        assert self.spec.iso is not None
        files = self.plugins.merged_files(
            "edgekit_installer_payload_files", iso_name=self.spec.iso.name
        )
        return {k: Path(v) for k, v in files.items()}

    def plan(self, kinds: Sequence[str] | None = None) -> Plan:
        """The steps a run would execute, in order, with their keys and cache status.

        ``kinds`` keeps only steps of those kinds and the steps they depend on.
        """
        return self._select(self._full_plan(), kinds)

    @staticmethod
    def _select(plan: Plan, kinds: Sequence[str] | None) -> Plan:
        """``plan`` limited to steps of ``kinds`` and the steps they depend on."""
        if kinds is None:
            return plan
        unknown = sorted(set(kinds) - STEP_KINDS)
        if unknown:
            raise ConfigError.single(
                "kinds",
                f"unknown step kind(s) {', '.join(unknown)}; known: "
                + ", ".join(sorted(STEP_KINDS)),
            )
        wanted = {s.id for s in plan.steps if s.kind in kinds}
        for s in reversed(plan.steps):
            if s.id in wanted:
                wanted.update(s.depends_on)
        return attrs.evolve(plan, steps=tuple(s for s in plan.steps if s.id in wanted))

    def _full_plan(self) -> Plan:
        # Plugins that add files or observe steps must all be loaded, not only the ones
        # whose backends are selected (those are found lazily by name).
        self.plugins.load_all()
        backends = self.spec.backends
        state = self._read_state()
        steps: list[Step] = []
        notes: list[str] = []
        version = __version__

        def add(
            step_id: str,
            kind: str,
            capability: str,
            backend: str,
            summary: str,
            inputs: Mapping[str, Any],
            depends: Sequence[str] = (),
        ) -> Step:
            dep_keys = {d: next(s.key for s in steps if s.id == d) for d in depends}
            key = _key(
                {
                    "kind": kind,
                    "backend": self._backend_label(capability, backend),
                    "edgekit": version,
                    "inputs": inputs,
                    "depends": dep_keys,
                    "sourceDateEpoch": os.environ.get("SOURCE_DATE_EPOCH"),
                }
            )
            recorded = state.get(step_id, {})
            fresh = recorded.get("key") == key and all(
                _artifact_from_json(a, self.output_dir).path.exists()
                for a in recorded.get("artifacts", [])
            )
            step = Step(step_id, kind, capability, backend, summary, tuple(depends), key, fresh)
            steps.append(step)
            return step

        registry = self.spec.registry
        image_steps: dict[str, Step] = {}
        for image in self.images.values():
            profile = self.profiles[image.profile]
            arches = ",".join(a.value for a in image.arch)
            image_steps[image.name] = add(
                f"provider-image/{image.name}",
                "provider-image",
                "image-builder",
                backends.image_builder,
                f"{image.reference_for(version)} ({arches}) from {_describe_base(image)}",
                {
                    "image": config.unstructure(image),
                    "profile": config.unstructure(profile),
                    "files": self._files_for_image(image),
                    "insecureRegistries": sorted(self.spec.insecure_registries),
                },
            )

        token = self.registration_token
        reg = self.spec.registration
        if reg is not None and reg.token_env and token is None and self._token is None:
            notes.append(
                f"${reg.token_env} is not set: user-data carries no registration token, "
                "so hosts will not register on their own"
            )
        token_digest = hashlib.sha256(token.encode()).hexdigest() if token else None

        iso_step: Step | None = None
        iso = self.spec.iso
        if iso is not None:
            image = self.iso_image()
            files = {str(b): fingerprint(self.resolve(b)) for b in iso.content_bundles}
            if isinstance(iso.user_data, str):
                files[iso.user_data] = fingerprint(self.resolve(iso.user_data))
            for path, host in self._payload_files().items():
                files[f"plugin:{path}"] = fingerprint(host)
            iso_step = add(
                f"installer-iso/{iso.name}",
                "installer-iso",
                "iso-assembler",
                backends.iso_assembler,
                f"{iso.name}.iso (label {iso.volume_label}) with {image.name}",
                {
                    "iso": config.unstructure(iso),
                    "registration": config.unstructure(reg) if reg else None,
                    "token": token_digest,
                    "files": files,
                },
                depends=[image_steps[image.name].id],
            )

        site_step: Step | None = None
        if self.sites:
            site_step = add(
                "site-isos/all",
                "site-isos",
                "iso-assembler",
                backends.iso_assembler,
                f"{len(self.sites)} site ISO(s) labelled cidata",
                {
                    "sites": [config.unstructure(s) for s in self.sites],
                    "iso": config.unstructure(iso) if iso else None,
                    "registration": config.unstructure(reg) if reg else None,
                    "token": token_digest,
                    "files": {iso.user_data: fingerprint(self.resolve(iso.user_data))}
                    if iso is not None and isinstance(iso.user_data, str)
                    else {},
                },
            )

        if registry is not None and registry.target:
            target = registry.target
            for name, step in image_steps.items():
                add(
                    f"publish/provider-image/{name}",
                    "publish",
                    "publisher",
                    backends.publisher,
                    f"push {self.images[name].reference_for(version)} to {target}",
                    {"target": target, "registry": config.unstructure(registry)},
                    depends=[step.id],
                )
            if iso_step is not None:
                add(
                    f"publish/installer-iso/{iso_step.id.split('/', 1)[1]}",
                    "publish",
                    "publisher",
                    backends.publisher,
                    f"push the installer ISO to {target} (referring to its image)",
                    {"target": target, "registry": config.unstructure(registry)},
                    depends=[iso_step.id, f"publish/provider-image/{iso.image}"]
                    if iso is not None
                    else [iso_step.id],
                )
            if site_step is not None:
                add(
                    "publish/site-isos/all",
                    "publish",
                    "publisher",
                    backends.publisher,
                    f"push {len(self.sites)} site ISO(s) to {target}",
                    {"target": target, "registry": config.unstructure(registry)},
                    depends=[site_step.id],
                )
        return Plan(self.spec.name, self.output_dir, tuple(steps), tuple(notes))

    # --- running ------------------------------------------------------------------------

    @guarded  # SIGTERM cleans up like Ctrl-C; leftovers of killed runs are removed first
    def run(
        self,
        *,
        executor: Executor | None = None,
        pool: Executor | None = None,
        events: Callable[[ForgeEvent], None] | None = None,
        no_cache: bool = False,
        kinds: Sequence[str] | None = None,
    ) -> ForgeResult:
        """Run every step whose key changed (all of them with ``no_cache``).

        ``executor`` runs independent steps concurrently (a thread pool of 2 by default);
        ``pool`` is handed to backends for work they split (site ISOs); ``events`` receives
        :class:`StepStarted`, :class:`Progress` and :class:`StepFinished` events; ``kinds``
        limits the run to some step kinds (and the steps they depend on).
        """
        full = self._full_plan()  # once: it fingerprints every input
        plan = self._select(full, kinds)
        steps = list(plan.steps)
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

        def progress(p: Progress) -> None:
            emit(p)

        base_ctx = BuildContext(
            base_dir=self.base_dir,
            output_dir=self.output_dir,
            cache_dir=self.cache_dir,
            no_cache=no_cache,
            progress=progress,
            executor=pool,
        )

        def execute(step: Step) -> tuple[Artifact, ...]:
            if step.fresh and not no_cache:
                recorded = state[step.id]["artifacts"]
                arts = tuple(_artifact_from_json(a, self.output_dir) for a in recorded)
                self.plugins.hook.edgekit_step_finished(
                    step_id=step.id, kind=step.kind, artifacts=arts, cached=True
                )
                emit(StepFinished(step, arts, cached=True))
                return arts
            emit(StepStarted(step))
            self.plugins.hook.edgekit_step_started(
                step_id=step.id, kind=step.kind, backend=step.backend
            )
            arts = tuple(self._execute(step, base_ctx.for_step(step.id), results))
            with state_lock:
                state[step.id] = {
                    "key": step.key,
                    "artifacts": [_artifact_to_json(a, self.output_dir, step.id) for a in arts],
                }
                self._write_state(state)
            self.plugins.hook.edgekit_step_finished(
                step_id=step.id, kind=step.kind, artifacts=arts, cached=False
            )
            emit(StepFinished(step, arts, cached=False))
            return arts

        owned = executor is None
        exe = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="edgekit-step")
        try:
            pending = {s.id: s for s in steps}
            running: dict[str, Future[tuple[Artifact, ...]]] = {}
            while pending or running:
                for sid, s in list(pending.items()):
                    if all(d in results for d in s.depends_on):
                        running[sid] = exe.submit(execute, s)
                        del pending[sid]
                if not running:  # pragma: no cover - the plan is ordered, so never stuck
                    raise BuildError("forge plan has unsatisfiable dependencies")
                done_id = _wait_any(running)
                fut = running.pop(done_id)
                results[done_id] = fut.result()  # re-raises the step's error
                step = next(s for s in steps if s.id == done_id)
                (cached if step.fresh and not no_cache else ran).append(done_id)
        except BaseException:
            for fut in running.values():
                fut.cancel()
            raise
        finally:
            if owned:
                exe.shutdown(wait=True)

        # The manifest describes the whole output directory: what this run made, plus what
        # earlier runs made for other steps of the forge file that are still current.
        recorded: dict[str, tuple[Artifact, ...]] = dict(results)
        if kinds is not None:
            for s in full.steps:  # steps outside this run: their state did not change
                if s.id not in recorded and s.fresh:
                    recorded[s.id] = tuple(
                        _artifact_from_json(a, self.output_dir) for a in state[s.id]["artifacts"]
                    )
        artifacts: dict[str, Artifact] = {}
        for arts in recorded.values():
            for a in arts:
                artifacts[a.name] = a
        manifest_path = self._write_manifest(artifacts, recorded)
        this_run = {a.name for s in steps for a in results.get(s.id, ())}
        artifacts = {k: v for k, v in artifacts.items() if k in this_run}
        self.plugins.hook.edgekit_manifest_written(
            path=str(manifest_path), artifacts=tuple(artifacts.values())
        )
        return ForgeResult(plan, artifacts, tuple(ran), tuple(cached), manifest_path)

    def _execute(
        self, step: Step, ctx: BuildContext, results: Mapping[str, tuple[Artifact, ...]]
    ) -> Sequence[Artifact]:
        kind, _, name = step.id.partition("/")
        if kind == "provider-image":
            return [self._build_image(self.images[name], step, ctx)]
        if kind == "installer-iso":
            image_art = results[step.depends_on[0]][0]
            return [self._build_installer(step, ctx, image_art)]
        if kind == "site-isos":
            return self._build_site_isos(step, ctx)
        if kind == "publish":
            return self._publish(step, ctx, results)
        raise BuildError(f"unknown step kind {kind!r}")  # pragma: no cover

    def _build_image(self, image: ProviderImage, step: Step, ctx: BuildContext) -> Artifact:
        builder = self.plugins.image_builder(step.backend)
        extra = self._extra_files(image)
        request = ImageBuildRequest(
            image=image,
            profile=self.profiles[image.profile],
            layout=self.output_dir / "images" / image.name,
            tag=image.tag_for(__version__),
            reference=image.reference_for(__version__),
            extra_files=extra,
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
            payload = self._payload_files()
            request = InstallerIsoRequest(
                spec=iso,
                user_data=self.user_data_for(None).render(),
                kernel=boot[_abs(iso.kernel_path)],
                initrd=boot[_abs(iso.initrd_path)],
                image_layout=image_art.path,
                image_tag=tag,
                image_reference=image.reference_for(__version__),
                dest=self.output_dir / "iso" / f"{iso.name}.iso",
                content_bundles=tuple(self.resolve(b) for b in iso.content_bundles),
                payload_files=payload,
            )
            return assembler.build_installer(request, ctx)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _build_site_isos(self, step: Step, ctx: BuildContext) -> list[Artifact]:
        assembler = self.plugins.iso_assembler(step.backend)
        requests = [
            SiteIsoRequest(
                site=site.name,
                user_data=self.user_data_for(site).render(),
                dest=self.output_dir / "sites" / f"{site.name}.iso",
                meta_data=f"instance-id: {site.name}\nlocal-hostname: {site.name}\n",
            )
            for site in self.sites
        ]
        return assembler.build_site_isos(requests, ctx)

    def _publish(
        self, step: Step, ctx: BuildContext, results: Mapping[str, tuple[Artifact, ...]]
    ) -> list[Artifact]:
        registry = self.spec.registry
        assert registry is not None
        publisher = self.plugins.publisher(step.backend)
        options = RegistryOptions(
            plain_http=registry.plain_http,
            ca_cert=self.resolve(registry.ca_cert) if registry.ca_cert else None,
        )
        target = registry.target
        layout = _oci_target(target)
        if layout is not None and not layout.is_absolute():
            target = f"oci:{(self.output_dir / layout).resolve()}"
        _, _, rest = step.id.partition("/")
        kind, _, name = rest.partition("/")
        out: list[Artifact] = []
        if kind == "provider-image":
            [art] = results[step.depends_on[0]]
            image = self.images[name]
            ref = self._image_target(target, image)
            pushed = publisher.push_image(art.path, art.reference or "", ref, ctx, options)
            out.append(_pushed(art, pushed.reference, pushed.digest))
        elif kind == "installer-iso":
            # Pushed into its image's repository and referring to the image, so that
            # `edgekit referrers <image>` lists the ISO built from it.
            [art] = results[step.depends_on[0]]
            [image_pushed] = results[step.depends_on[1]]
            image = self.iso_image()
            ref = self._image_target(target, image, tag=f"installer-{name}")
            pushed = publisher.push_artifact(
                art.path,
                ref,
                ISO_ARTIFACT_TYPE,
                ctx,
                options,
                subject=image_pushed.digest,
                annotations={
                    "dev.edgekit.forge": self.spec.name,
                    "dev.edgekit.profile": image.profile,
                    "dev.edgekit.image.digest": image_pushed.digest,
                    "dev.edgekit.image.reference": image.reference_for(__version__),
                },
            )
            out.append(_pushed(art, pushed.reference, pushed.digest))
        elif kind == "site-isos":
            for art in results[step.depends_on[0]]:
                site = art.name.split("/", 1)[1]
                if target.startswith("oci:"):
                    ref = f"{target}:site-{site}"
                else:
                    ref = f"{target.rstrip('/')}/sites:{site}"
                pushed = publisher.push_artifact(
                    art.path,
                    ref,
                    SITE_ISO_ARTIFACT_TYPE,
                    ctx,
                    options,
                    annotations={"dev.edgekit.forge": self.spec.name, "dev.edgekit.site": site},
                )
                out.append(_pushed(art, pushed.reference, pushed.digest))
        return out

    @staticmethod
    def _image_target(target: str, image: ProviderImage, tag: str | None = None) -> str:
        tag = tag or image.tag_for(__version__)
        if target.startswith("oci:"):
            return f"{target}:{tag}"
        return f"{target.rstrip('/')}/{image.repo}:{tag}"

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
            self._state_path, json.dumps({"version": 1, "steps": steps}, indent=2, sort_keys=True)
        )

    def _write_manifest(
        self, artifacts: Mapping[str, Artifact], results: Mapping[str, tuple[Artifact, ...]]
    ) -> Path:
        step_of = {a.name: sid for sid, arts in results.items() for a in arts}
        doc = {
            "forge": self.spec.name,
            "edgekitVersion": __version__,
            "artifacts": [
                _artifact_to_json(a, self.output_dir, step_of.get(a.name, ""))
                for a in sorted(artifacts.values(), key=lambda a: a.name)
            ],
        }
        path = self.output_dir / MANIFEST
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
        return path


def _pushed(art: Artifact, reference: str, digest: str) -> Artifact:
    kind, _, name = art.name.partition("/")
    return attrs.evolve(art, name=f"published-{kind}/{name}", reference=reference, digest=digest)


def _abs(path: str) -> str:
    return "/" + path.lstrip("/")


def _describe_base(image: ProviderImage) -> str:
    base = config.unstructure(image.base)
    if base in ("scratch", {}):
        return "scratch"
    if isinstance(base, dict):
        return ", ".join(f"{k} {v}" for k, v in base.items())
    return str(base)


def _wait_any(running: Mapping[str, Future[Any]]) -> str:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(running.values()), return_when=FIRST_COMPLETED)
    for sid, fut in running.items():
        if fut in done:
            return sid
    raise AssertionError("wait() returned no finished future")  # pragma: no cover
