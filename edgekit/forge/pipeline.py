"""The EdgeForge pipeline: from a forge file to provider images, ISOs and a manifest.

``Forge.plan()`` turns a forge file into ordered steps, each with a content-addressed cache
key computed from everything that step reads (its model objects, content digests of its
local inputs, the backend and its version, and the keys of the steps it depends on). Every
site has its own steps (``site-iso/<site>``, ``publish/site-iso/<site>``), so changing one
site's row rebuilds and republishes that site only. ``Forge.run()`` (in :mod:`.runner`)
executes the steps whose key changed and writes ``manifest.json``.

Inputs are read again by every ``plan()``/``run()``: an edited inventory CSV, user-data
file or overlay is noticed by a ``Forge`` object loaded before the edit.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from edgekit import __version__, config
from edgekit.errors import ConfigError, EdgekitError, Problem
from edgekit.inputs import check_forge_inputs, inventory_sites, read_user_data
from edgekit.model import (
    Backends,
    ClusterProfile,
    LayoutBase,
    PackSource,
    ProviderImage,
    RefBase,
    Site,
    UserData,
)
from edgekit.model import Forge as ForgeSpec
from edgekit.plugins.interfaces import CAPABILITIES, Publisher
from edgekit.plugins.manager import PluginManager, get_plugin_manager

from .inputs import DigestCache
from .plan import Plan, Step
from .profiles import ProfilePublishing
from .runner import Runner, artifact_from_json

if TYPE_CHECKING:
    from edgekit.hub.client import HostClient

__all__ = ["Forge"]

STATE_DIR = ".edgekit"
#: Step kinds ``plan(kinds=...)`` accepts; ``site-isos`` is the old name of ``site-iso``.
STEP_KINDS = frozenset({"provider-image", "installer-iso", "site-iso", "publish"})
KIND_ALIASES = {"site-isos": "site-iso"}


def _key(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Forge(Runner, ProfilePublishing):
    """A forge file, ready to plan and run.

    ::

        forge = Forge.load("edgeforge.yaml")
        print(forge.plan())
        result = forge.run(progress=True)
        result.artifacts["installer-iso/installer"].digest
    """

    def __init__(
        self,
        spec: ForgeSpec,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        plugins: PluginManager | None = None,
        source: str | None = None,
        registration_token: str | None = None,
    ) -> None:
        self.spec = spec
        self._token = registration_token
        # Directories may be given as str, like the forge file's path in load().
        self.base_dir = Path(base_dir or Path.cwd()).resolve()
        # Outputs go under ./dist of the *current* directory unless the file or caller says.
        if output_dir is not None:
            self.output_dir = Path(output_dir).resolve()
        elif spec.output:
            out = Path(spec.output).expanduser()
            self.output_dir = (out if out.is_absolute() else Path.cwd() / out).resolve()
        else:
            self.output_dir = (Path.cwd() / "dist").resolve()
        # Caches (downloads, layers, the sample OS) may be shared between projects.
        env_cache = os.environ.get("EDGEKIT_CACHE_DIR")
        default_cache = Path(env_cache) if env_cache else self.output_dir / STATE_DIR / "cache"
        self.cache_dir = Path(cache_dir or default_cache).resolve()
        self.plugins = plugins or get_plugin_manager()
        self.source = source
        # By name, or name@version for a profile with several versions in the file.
        self.profiles: Mapping[str, ClusterProfile] = spec.profile_set()
        self.images: dict[str, ProviderImage] = {i.name: i for i in spec.expand_images()}
        self.digests = DigestCache(self.output_dir / STATE_DIR / "digests.json")
        self._inventory: tuple[str, tuple[Site, ...]] | None = None
        # Every local input is read and checked now (path policy, user-data, inventory, k8s
        # sources), so a build never fails half-way for a reason validation could see.
        digest = self._inventory_digest()
        sites = check_forge_inputs(spec, self.base_dir, source)
        if digest is not None:  # keyed by the digest taken before reading, as below
            self._inventory = (digest, sites[len(spec.sites) :])

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        output_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
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

    def _repr_html_(self) -> str:
        """What a notebook shows: the counts, then the forge file folded (no I/O: the
        sites are those read when it was loaded)."""
        from edgekit.model._html import model_html

        sites = len(self.spec.sites) + (len(self._inventory[1]) if self._inventory else 0)
        counts = (
            f"{len(self.profiles)} profile(s), {len(self.images)} provider image(s), "
            f"{sites} site(s); output {self.output_dir}"
        )
        return (
            f"<div><b>Forge</b> {html.escape(self.spec.name)}: {html.escape(counts)}"
            f"<details><summary>forge file</summary>{model_html(self.spec)}</details></div>"
        )

    # --- inputs -------------------------------------------------------------------------

    @property
    def sites(self) -> tuple[Site, ...]:
        """The forge file's sites, then the inventory's: the inventory is read again when
        its content changed (a content digest, so an edit that keeps size and mtime counts)."""
        return tuple(self.spec.sites) + self._inventory_sites()

    def _inventory_digest(self) -> str | None:
        if not self.spec.site_inventory:
            return None
        path = self.resolve(self.spec.site_inventory)
        try:
            return self.digests.file_digest(path)
        except OSError:
            return None  # check_forge_inputs says why, with the forge file's path

    def _inventory_sites(self) -> tuple[Site, ...]:
        if not self.spec.site_inventory:
            return ()
        path = self.resolve(self.spec.site_inventory)
        try:
            digest = self.digests.file_digest(path)
        except OSError as exc:
            raise ConfigError.single(
                "$.siteInventory", f"cannot read {path}: {exc.strerror}"
            ) from None
        if self._inventory is not None and self._inventory[0] == digest:
            return self._inventory[1]
        sites = inventory_sites(self.spec, path, self.source)
        # Keyed by the digest taken before reading: a change in between is seen next time.
        self._inventory = (digest, sites)
        return sites

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

    def host_client(
        self, uid: str, *, ca_cert: str | Path | None = None, retry_for: float = 60.0
    ) -> HostClient:
        """A host-side client of this forge's hub (``registration.endpoint``) that registers
        through ``backends.transport`` with its options, from this forge's plugin manager:
        what a fleet simulation or a gateway uses to register hosts as installed ones do."""
        from edgekit.hub.client import HostClient

        reg = self.spec.registration
        if reg is None:
            raise ConfigError.single("$.registration", "no registration: hosts register nowhere")
        choice = self.spec.backends.transport
        return HostClient(
            reg.endpoint,
            uid,
            ca_cert=ca_cert,
            retry_for=retry_for,
            transport=choice.name,
            transport_options=choice.options,
            plugins=self.plugins,
        )

    def base_user_data(self) -> UserData:
        """The ISO's ``userData`` (a file, read now, or inline) before per-site keys."""
        iso = self.spec.iso
        if iso is not None and iso.inline_user_data is not None:
            return iso.inline_user_data
        if iso is not None and isinstance(iso.user_data, str):
            return read_user_data(self.resolve(iso.user_data))
        return UserData()

    def user_data_for(self, site: Site | None, *, base: UserData | None = None) -> UserData:
        """The user-data for one site, or the generic installer's when ``site`` is None.

        Keys come from the ISO's ``userData`` (a file or inline; ``base`` when given, so a
        fleet reads the file once), then the registration endpoint, project and token,
        then the site's name, tags and network.
        """
        reg = self.spec.registration
        return UserData.for_site(
            site,
            reg.endpoint if reg else None,
            self.registration_token,
            reg.project if reg else None,
            base=base if base is not None else self.base_user_data(),
        )

    # --- planning -----------------------------------------------------------------------

    def _backend_label(self, capability: str, name: str) -> str:
        try:
            info = self.plugins.backend_info(capability, name)
        except EdgekitError:
            return f"{name} (not installed)"
        return info.describe()

    def _fp(self, path: Path) -> str:
        return self.digests.fingerprint(path)

    def _files_for_image(self, image: ProviderImage) -> dict[str, str]:
        files: dict[str, str] = {}
        for overlay in image.overlays:
            files[overlay.source] = self._fp(self.resolve(overlay.source))
        if isinstance(image.base, LayoutBase):
            files[image.base.layout] = self._fp(self.resolve(image.base.layout))
        for pack in self.profiles[image.profile].packs:
            src: PackSource | None = pack.source
            if src is not None and src.path and not src.url and not src.oci:
                files[src.path] = self._fp(self.resolve(src.path))
        for arch, extra in self._extra_files(image).items():
            for path, host in extra.items():
                files[f"plugin:{arch}:{path}"] = self._fp(host)
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

    def plan(self, kinds: Sequence[str] | None = None, *, no_cache: bool = False) -> Plan:
        """The steps a run would execute, in order, with their keys, cache status and the
        reason each will run (``new``, ``changed input``, ``output missing``, ``no cache``).

        ``kinds`` keeps only steps of those kinds and the steps they depend on. A backend
        name nothing provides, a bad backend option or a ``registry.target`` the publisher
        does not claim is a :class:`ConfigError` (see :meth:`backend_problems`).
        """
        plan = self._select(self._full_plan(no_cache=no_cache), kinds)
        self.check_backends(plan)
        return plan

    @staticmethod
    def _select(plan: Plan, kinds: Sequence[str] | None) -> Plan:
        """``plan`` limited to steps of ``kinds`` and the steps they depend on."""
        if kinds is None:
            return plan
        if isinstance(kinds, str):  # one kind; iterating it would give its letters
            kinds = [kinds]
        problems = [
            Problem(f"kinds[{i}]", f"expected a step kind (a string), got {type(k).__name__} {k!r}")
            for i, k in enumerate(kinds)
            if not isinstance(k, str)
        ]
        wanted_kinds = {KIND_ALIASES.get(k, k) for k in kinds if isinstance(k, str)}
        unknown = sorted(wanted_kinds - STEP_KINDS)
        if unknown:
            problems.append(
                Problem(
                    "kinds",
                    f"unknown step kind(s) {', '.join(unknown)}; known: "
                    + ", ".join(sorted(STEP_KINDS)),
                )
            )
        if problems:
            raise ConfigError(problems)
        wanted = {s.id for s in plan.steps if s.kind in wanted_kinds}
        for s in reversed(plan.steps):
            if s.id in wanted:
                wanted.update(s.depends_on)
        return attrs.evolve(plan, steps=tuple(s for s in plan.steps if s.id in wanted))

    def _used_capabilities(self, plan: Plan | None) -> list[str]:
        """The capabilities the steps of ``plan`` (every step when None) and the forge
        file's registration use."""
        spec = self.spec
        used = {s.capability for s in plan.steps} if plan is not None else set(CAPABILITIES)
        if plan is None or any(s.kind == "provider-image" for s in plan.steps):
            profiles = self.profiles
            if any(_pulls(image, profiles[image.profile]) for image in self.images.values()):
                used.add("publisher")
        # No step uses the transport (hosts register after install); a chosen one must
        # still exist, so that a misspelt name is found now rather than by the first host.
        if spec.backends.transport != Backends().transport:
            used.add("transport")
        elif plan is not None:
            used.discard("transport")
        return [c for c in CAPABILITIES if c in used]

    def backend_problems(self, plan: Plan | None = None) -> list[Problem]:
        """Every problem of the selected backends that ``plan``'s steps use (all of them
        when None): names nothing provides (with a did-you-mean), their options (checked
        by each backend) and a ``registry.target`` the selected publisher does not claim.
        :meth:`plan`, :meth:`run` and :meth:`check_backends` raise them as one
        :class:`ConfigError`."""
        choices = self.spec.backends.by_capability()
        selected = {c: choices[c] for c in self._used_capabilities(plan)}
        problems = self.plugins.selection_problems(selected)
        registry = self.spec.registry
        if "publisher" in selected and registry is not None and registry.target:
            name = selected["publisher"].name
            if not any(p.path == "$.backends.publisher" for p in problems):
                from .runner import registry_options

                cls = self.plugins.backend_info("publisher", name).cls
                assert issubclass(cls, Publisher)
                for p in cls.target_problems(registry.target, registry_options(self)):
                    problems.append(
                        Problem(f"$.registry.{p.path}" if p.path else "$.registry", p.message)
                    )
        return problems

    def check_backends(self, plan: Plan | None = None) -> None:
        """Raise :class:`ConfigError` listing :meth:`backend_problems`, if there are any
        (``edgekit validate`` calls it with no plan: every selected backend)."""
        self.plugins.load_all()
        problems = self.backend_problems(plan)
        if problems:
            raise ConfigError(problems)

    def _full_plan(self, *, no_cache: bool = False) -> Plan:
        # Plugins that add files or observe steps must all be loaded, not only the ones
        # whose backends are selected (those are found lazily by name).
        self.plugins.load_all()
        backends = self.spec.backends
        selected = backends.by_capability()
        state = self._read_state()
        steps: list[Step] = []
        keys: dict[str, str] = {}
        notes: list[str] = []
        version = __version__
        labels: dict[tuple[str, str], str] = {}
        epoch = os.environ.get("SOURCE_DATE_EPOCH")

        def add(
            step_id: str,
            kind: str,
            capability: str,
            backend: str,
            summary: str,
            inputs: Mapping[str, Any],
            depends: Sequence[str] = (),
        ) -> Step:
            if (capability, backend) not in labels:
                labels[capability, backend] = self._backend_label(capability, backend)
            key = _key(
                {
                    "kind": kind,
                    "backend": labels[capability, backend],
                    # A backend's options change what it makes: part of its steps' keys.
                    "options": config.unstructure(dict(selected[capability].options)),
                    "edgekit": version,
                    "inputs": inputs,
                    "depends": {d: keys[d] for d in depends},
                    "sourceDateEpoch": epoch,
                }
            )
            recorded = state.get(step_id)
            if recorded is None:
                reason = "new"
            elif recorded.get("key") != key:
                reason = "changed input"
            elif not all(
                artifact_from_json(a, self.output_dir).path.exists()
                for a in recorded.get("artifacts", [])
            ):
                reason = "output missing"
            else:
                reason = "no cache" if no_cache else ""
            step = Step(
                step_id, kind, capability, backend, summary, tuple(depends), key, not reason, reason
            )
            steps.append(step)
            keys[step_id] = key
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
                backends.image_builder.name,
                f"{image.reference_for(version)} ({arches}) from {_describe_base(image)}",
                {
                    "image": config.unstructure(image),
                    "profile": config.unstructure(profile),
                    "files": self._files_for_image(image),
                    "insecureRegistries": sorted(self.spec.insecure_registries),
                    # Base images and OCI pack sources are pulled with the publisher.
                    "publisher": (
                        config.unstructure(backends.publisher) if _pulls(image, profile) else None
                    ),
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
        # Inline user-data holds secrets (a password) that unstructure writes as '***': the
        # key takes the digest of the document as the device gets it, as for the token.
        inline = self.spec.iso.inline_user_data if self.spec.iso is not None else None
        inline_digest = (
            hashlib.sha256(config.render_user_data(inline).encode()).hexdigest()
            if inline is not None
            else None
        )

        iso_step: Step | None = None
        iso = self.spec.iso
        user_data_files: dict[str, str] = {}
        if iso is not None and isinstance(iso.user_data, str):
            user_data_files[iso.user_data] = self._fp(self.resolve(iso.user_data))
        if iso is not None:
            image = self.iso_image()
            files = {str(b): self._fp(self.resolve(b)) for b in iso.content_bundles}
            files.update(user_data_files)
            for path, host in self._payload_files().items():
                files[f"plugin:{path}"] = self._fp(host)
            iso_step = add(
                f"installer-iso/{iso.name}",
                "installer-iso",
                "iso-assembler",
                backends.iso_assembler.name,
                f"{iso.name}.iso (label {iso.volume_label}) with {image.name}",
                {
                    "iso": config.unstructure(iso),
                    "registration": config.unstructure(reg) if reg else None,
                    "token": token_digest,
                    "userData": inline_digest,
                    "files": files,
                },
                depends=[image_steps[image.name].id],
            )

        # One step per site. What every site shares is hashed once; each key then holds
        # only that digest and the site's own row, so editing one row changes one key.
        sites = self.sites
        site_steps: list[Step] = []
        if sites:
            shared = _key(
                {
                    "iso": config.unstructure(iso) if iso else None,
                    "registration": config.unstructure(reg) if reg else None,
                    "token": token_digest,
                    "userData": inline_digest,
                    "files": user_data_files,
                }
            )
            for site in sites:
                site_steps.append(
                    add(
                        f"site-iso/{site.name}",
                        "site-iso",
                        "iso-assembler",
                        backends.iso_assembler.name,
                        f"sites/{site.name}.iso labelled cidata",
                        {"shared": shared, "site": config.unstructure(site)},
                    )
                )

        if registry is not None and registry.target:
            target = registry.target
            where = {"target": target, "registry": config.unstructure(registry)}
            for name, step in image_steps.items():
                add(
                    f"publish/provider-image/{name}",
                    "publish",
                    "publisher",
                    backends.publisher.name,
                    f"push {self.images[name].name} as {self.published_reference(name)}",
                    where,
                    depends=[step.id],
                )
            if iso_step is not None and iso is not None:
                add(
                    f"publish/installer-iso/{iso.name}",
                    "publish",
                    "publisher",
                    backends.publisher.name,
                    f"push the installer ISO to {target} (referring to its image)",
                    where,
                    depends=[iso_step.id, f"publish/provider-image/{iso.image}"],
                )
            layout = _site_layout_of(self)
            for step in site_steps:
                site_name = step.id.split("/", 1)[1]
                add(
                    f"publish/site-iso/{site_name}",
                    "publish",
                    "publisher",
                    backends.publisher.name,
                    f"push {site_name}'s site ISO to {target} ({layout})",
                    {**where, "layout": layout, "forge": self.spec.name},
                    depends=[step.id],
                )
        return Plan(self.spec.name, self.output_dir, tuple(steps), tuple(notes))


def _site_layout_of(forge: Forge) -> str:
    """How site ISOs are laid out at the target (part of their publish keys)."""
    from .sites import publishes_fleets

    try:
        publisher = forge.plugins.publisher(forge.spec.backends.publisher.name)
    except EdgekitError:
        return "one tag per site"
    return "fleet index" if publishes_fleets(publisher) else "one tag per site"


def _pulls(image: ProviderImage, profile: ClusterProfile) -> bool:
    """Whether building ``image`` pulls from a registry (a base image, an OCI pack source)."""
    if isinstance(image.base, RefBase):
        return True
    return any(p.source is not None and p.source.oci for p in profile.packs)


def _describe_base(image: ProviderImage) -> str:
    base = config.unstructure(image.base)
    if base in ("scratch", {}):
        return "scratch"
    if isinstance(base, dict):
        return ", ".join(f"{k} {v}" for k, v in base.items())
    return str(base)
