"""The plugin manager: finds plugins, collects their backends, and picks one by name.

Built-in backends live in their own distributions (``edgekit-oci``, ``edgekit-iso``, ...)
and register through the ``edgekit`` entry point group exactly as third-party plugins do.
The only privilege built-ins have is order: they are loaded first, and third-party entry
points are imported lazily, only when a name is not found among the built-ins (or when
everything is listed). A broken third-party plugin is reported and skipped, never fatal.

``EDGEKIT_DISABLE_PLUGINS`` blocks plugins: ``1``/``all`` blocks every third-party plugin;
a comma-separated list blocks those entry point or distribution names (built-ins included).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, cast

import attrs
import pluggy

from edgekit.errors import BackendConflictError, BackendNotFoundError, PluginError
from edgekit.plugins import hookspecs
from edgekit.plugins.interfaces import (
    CAPABILITIES,
    Backend,
    ImageBuilder,
    IsoAssembler,
    Publisher,
    Transport,
)

__all__ = ["BUILTIN_DISTRIBUTIONS", "BackendInfo", "BrokenPlugin", "PluginManager"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edgekit"
DISABLE_ENV = "EDGEKIT_DISABLE_PLUGINS"

#: Distributions maintained with edgekit itself; loaded first.
BUILTIN_DISTRIBUTIONS = frozenset(
    {"edgekit-oci", "edgekit-iso", "edgekit-oras", "edgekit-http", "edgekit-agent"}
)

#: Registration hook name for each capability.
REGISTRATION_HOOKS: Mapping[str, str] = {
    "image-builder": "edgekit_image_builders",
    "iso-assembler": "edgekit_iso_assemblers",
    "publisher": "edgekit_publishers",
    "transport": "edgekit_transports",
}


@attrs.frozen
class BackendInfo:
    """A registered backend class and where it came from."""

    capability: str
    name: str
    cls: type[Backend]
    #: The plugin (entry point name or registered name) that provided it.
    plugin: str
    #: The distribution and version providing it, e.g. ``edgekit-oci 0.1.0``, or ``<local>``.
    distribution: str

    @property
    def builtin(self) -> bool:
        return self.distribution.split(" ")[0] in BUILTIN_DISTRIBUTIONS

    def describe(self) -> str:
        return f"{self.name} ({self.distribution})"


@attrs.frozen
class BrokenPlugin:
    """A plugin that could not be loaded, and why."""

    plugin: str
    distribution: str
    error: str


def _dist_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return "<unknown distribution>"
    return f"{dist.metadata['Name']} {dist.version}"


class PluginManager:
    """Finds plugins and their backends.

    ``entry_points=False`` gives a manager that sees only plugins registered explicitly with
    :meth:`register` (what :mod:`edgekit.testing` uses).
    """

    def __init__(self, *, entry_points: bool = True, disabled: str | None = None) -> None:
        self.hook_manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.hook_manager.add_hookspecs(hookspecs)
        self._use_entry_points = entry_points
        spec = os.environ.get(DISABLE_ENV, "") if disabled is None else disabled
        tokens = {t.strip() for t in spec.split(",") if t.strip()}
        self._disable_all_third_party = bool(tokens & {"1", "all", "*", "true", "yes"})
        self._disabled_names = tokens
        self._distributions: dict[str, str] = {}  # plugin name -> distribution label
        self._pending: list[importlib.metadata.EntryPoint] | None = None
        self._builtins_loaded = False
        self._third_party_loaded = False
        self.broken: list[BrokenPlugin] = []
        self._backends: dict[str, dict[str, BackendInfo]] | None = None

    # --- loading ------------------------------------------------------------------------

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``pm.hook.edgekit_step_finished(...)``)."""
        return self.hook_manager.hook

    def _entry_points(self) -> list[importlib.metadata.EntryPoint]:
        if self._pending is None:
            eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            self._pending = sorted(eps, key=lambda ep: (ep.name, ep.value))
        return self._pending

    def _is_blocked(self, ep: importlib.metadata.EntryPoint) -> bool:
        dist = ep.dist.metadata["Name"] if ep.dist is not None else ""
        if ep.name in self._disabled_names or dist in self._disabled_names:
            return True
        return self._disable_all_third_party and dist not in BUILTIN_DISTRIBUTIONS

    def _load(self, *, builtin: bool) -> None:
        if not self._use_entry_points:
            return
        for ep in self._entry_points():
            is_builtin = ep.dist is not None and ep.dist.metadata["Name"] in BUILTIN_DISTRIBUTIONS
            if is_builtin != builtin or self._is_blocked(ep):
                continue
            if self.hook_manager.has_plugin(ep.name) or self.hook_manager.is_blocked(ep.name):
                continue
            label = _dist_label(ep)
            try:
                plugin = ep.load()
                self.hook_manager.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not break edgekit
                self.broken.append(BrokenPlugin(ep.name, label, f"{type(exc).__name__}: {exc}"))
                log.warning("skipping broken edgekit plugin %r from %s: %s", ep.name, label, exc)
                continue
            self._distributions[ep.name] = label
        self._backends = None

    def load_builtins(self) -> None:
        """Import the built-in plugins (idempotent)."""
        if not self._builtins_loaded:
            self._builtins_loaded = True
            self._load(builtin=True)

    def load_all(self) -> None:
        """Import built-in and third-party plugins (idempotent)."""
        self.load_builtins()
        if not self._third_party_loaded:
            self._third_party_loaded = True
            self._load(builtin=False)

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object or module directly (notebooks, tests, scripts).

        Raises :class:`PluginError` if the plugin implements an unknown hook or with a wrong
        signature; nothing of it is registered then.
        """
        try:
            registered = self.hook_manager.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"invalid edgekit plugin {exc.plugin!r}: {exc}") from None
        except ValueError as exc:
            raise PluginError(str(exc)) from None
        if registered is None:
            raise PluginError(f"plugin {name!r} is blocked")
        self._check_unknown_hooks(plugin, registered)
        self._distributions.setdefault(registered, "<local>")
        self._backends = None
        return registered

    def _check_unknown_hooks(self, plugin: object, name: str) -> None:
        hooks = self.hook_manager.hook
        unknown = [
            attr
            for attr in dir(plugin)
            if attr.startswith("edgekit_")
            and not (hasattr(hooks, attr) and getattr(hooks, attr).has_spec())
        ]
        if unknown:
            self.hook_manager.unregister(name=name)
            raise PluginError(
                f"plugin {name!r} implements unknown hook(s) {', '.join(sorted(unknown))}; "
                "see docs/hooks.md for the hooks that exist"
            )

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name``."""
        self.hook_manager.unregister(name=name)
        self._distributions.pop(name, None)
        self._backends = None

    def plugins(self) -> Iterator[tuple[str, str]]:
        """Registered plugins as (name, distribution) pairs."""
        for name, _ in sorted(self.hook_manager.list_name_plugin()):
            if name is not None:
                yield name, self._distributions.get(name, "<local>")

    def hooks_of(self, name: str) -> list[str]:
        """The hooks the plugin registered as ``name`` implements, sorted."""
        plugin = self.hook_manager.get_plugin(name)
        callers = self.hook_manager.get_hookcallers(plugin) or []
        return sorted(caller.name for caller in callers)

    # --- backends -----------------------------------------------------------------------

    def _collect(self) -> dict[str, dict[str, BackendInfo]]:
        if self._backends is not None:
            return self._backends
        found: dict[str, dict[str, BackendInfo]] = {cap: {} for cap in CAPABILITIES}
        for capability, hook_name in REGISTRATION_HOOKS.items():
            base = CAPABILITIES[capability]
            caller = getattr(self.hook_manager.hook, hook_name)
            for impl in caller.get_hookimpls():
                plugin_name = self.hook_manager.get_name(impl.plugin) or repr(impl.plugin)
                dist = self._distributions.get(plugin_name, "<local>")
                try:
                    classes = impl.function() or ()
                except Exception as exc:
                    self._mark_broken(plugin_name, dist, exc)
                    continue
                for cls in classes:
                    info = self._check_backend(capability, base, cls, plugin_name, dist)
                    other = found[capability].get(info.name)
                    if other is not None and other.cls is not info.cls:
                        raise BackendConflictError(
                            f"two {capability} backends are named {info.name!r}: "
                            f"{other.cls.__module__}.{other.cls.__qualname__} from "
                            f"{other.distribution} (plugin {other.plugin!r}) and "
                            f"{cls.__module__}.{cls.__qualname__} from {dist} (plugin "
                            f"{plugin_name!r}); uninstall one, or block one with "
                            f"{DISABLE_ENV}={other.plugin if not other.builtin else plugin_name}"
                        )
                    found[capability][info.name] = info
        self._backends = found
        return found

    def _mark_broken(self, plugin_name: str, dist: str, exc: BaseException) -> None:
        self.broken.append(BrokenPlugin(plugin_name, dist, f"{type(exc).__name__}: {exc}"))
        log.warning("skipping broken edgekit plugin %r from %s: %s", plugin_name, dist, exc)
        self.hook_manager.unregister(name=plugin_name)

    @staticmethod
    def _check_backend(
        capability: str, base: type[Backend], cls: object, plugin: str, dist: str
    ) -> BackendInfo:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"plugin {plugin!r} ({dist}) registered {cls!r} as a {capability} backend, "
                f"but it is not a subclass of edgekit.plugins.{base.__name__}"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {plugin!r} ({dist}): {cls.__qualname__} has no 'name' class attribute"
            )
        return BackendInfo(capability, name, cls, plugin, dist)

    def backends(self, capability: str | None = None) -> list[BackendInfo]:
        """Every backend known after loading all plugins, sorted by capability and name."""
        self.load_all()
        found = self._collect()
        caps = [capability] if capability else list(CAPABILITIES)
        return [found[c][n] for c in caps for n in sorted(found[c])]

    def backend_info(self, capability: str, name: str) -> BackendInfo:
        """Find a backend by name, loading third-party plugins only if it is not built in."""
        if capability not in CAPABILITIES:
            raise PluginError(
                f"unknown capability {capability!r}; one of: {', '.join(CAPABILITIES)}"
            )
        self.load_builtins()
        info = self._collect()[capability].get(name)
        if info is None and not self._third_party_loaded:
            self.load_all()
            info = self._collect()[capability].get(name)
        if info is None:
            available = [i.describe() for i in self._collect()[capability].values()]
            choices = ", ".join(sorted(available)) or "none installed"
            hint = ""
            if self.broken:
                hint = "; broken plugins were skipped: " + ", ".join(
                    f"{b.plugin} ({b.distribution}: {b.error})" for b in self.broken
                )
            raise BackendNotFoundError(
                f"no {capability} backend named {name!r}; available: {choices}{hint}"
            )
        return info

    def backend(self, capability: str, name: str) -> Backend:
        """Instantiate the backend ``name`` of ``capability``."""
        info = self.backend_info(capability, name)
        reason = info.cls.unavailable_reason()
        if reason:
            raise PluginError(f"{capability} backend {name!r} cannot run here: {reason}")
        return info.cls()

    def image_builder(self, name: str) -> ImageBuilder:
        """The image builder named ``name``."""
        return cast("ImageBuilder", self.backend("image-builder", name))

    def iso_assembler(self, name: str) -> IsoAssembler:
        """The ISO assembler named ``name``."""
        return cast("IsoAssembler", self.backend("iso-assembler", name))

    def publisher(self, name: str) -> Publisher:
        """The publisher named ``name``."""
        return cast("Publisher", self.backend("publisher", name))

    def transport(self, name: str) -> Transport:
        """The registration transport named ``name``."""
        return cast("Transport", self.backend("transport", name))

    def merged_files(self, hook_name: str, **kwargs: Any) -> dict[str, str]:
        """Merge the path -> host path mappings returned by a file-contributing hook."""
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        caller = getattr(self.hook_manager.hook, hook_name)
        for impl in caller.get_hookimpls():
            name = self.hook_manager.get_name(impl.plugin) or repr(impl.plugin)
            argnames = impl.argnames
            result = impl.function(**{k: v for k, v in kwargs.items() if k in argnames})
            for path, host in cast("Mapping[str, str]", result or {}).items():
                if path in merged and merged[path] != host:
                    raise PluginError(
                        f"plugins {owner[path]!r} and {name!r} both add {path!r} ({hook_name})"
                    )
                merged[path] = host
                owner[path] = name
        return merged


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default
