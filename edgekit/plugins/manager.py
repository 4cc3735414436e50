"""The plugin manager: finds plugins, collects their backends, and picks one by name.

Built-in backends live in their own distributions (``edgekit-oci``, ``edgekit-iso``, ...)
and register through the ``edgekit`` entry point group exactly as third-party plugins do.
The only privilege built-ins have is order: they are loaded first, and third-party entry
points are imported lazily, only when a name is not found among the built-ins (or when
everything is listed). A broken third-party plugin is reported and skipped, never fatal:
an installed plugin passes the checks of :mod:`edgekit.plugins.checks` (hook names, the
``@hookimpl`` mark, hook arguments, concrete backend classes) or is skipped with its
problems listed by :meth:`PluginManager.problems`. Two backends of one capability with one
name are a conflict, an error only for whoever selects that name. Backend instances are
guarded at the boundary (:mod:`edgekit.plugins.boundary`).

``EDGEKIT_DISABLE_PLUGINS`` blocks plugins: ``1``/``all`` blocks every third-party plugin;
a comma-separated list blocks those entry point or distribution names (built-ins included).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, cast

import pluggy

from edgekit.debug import debug_enabled, format_traceback
from edgekit.errors import (
    BackendConflictError,
    BackendNotFoundError,
    EdgekitError,
    PluginError,
    Problem,
)
from edgekit.plugins import hookspecs
from edgekit.plugins.boundary import (
    GuardedHooks,
    guard,
    mismatch,
    options_problems,
    wrap_failure,
)
from edgekit.plugins.checks import (
    Finding,
    backend_class_problem,
    did_you_mean,
    hook_problems,
    location_in,
)
from edgekit.plugins.interfaces import (
    CAPABILITIES,
    Backend,
    ImageBuilder,
    IsoAssembler,
    Publisher,
    Transport,
)
from edgekit.plugins.report import (
    BUILTIN_DISTRIBUTIONS,
    BackendConflict,
    BackendInfo,
    BrokenPlugin,
    PluginReport,
    PluginSummary,
    summarize,
)

__all__ = [
    "BUILTIN_DISTRIBUTIONS",
    "BackendConflict",
    "BackendInfo",
    "BrokenPlugin",
    "PluginManager",
    "PluginReport",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edgekit"
DISABLE_ENV = "EDGEKIT_DISABLE_PLUGINS"

#: Registration hook name for each capability.
REGISTRATION_HOOKS: Mapping[str, str] = {
    "image-builder": "edgekit_image_builders",
    "iso-assembler": "edgekit_iso_assemblers",
    "publisher": "edgekit_publishers",
    "transport": "edgekit_transports",
}

#: The forge file's field under ``backends:`` for each capability (for problem paths).
SELECTION_FIELDS: Mapping[str, str] = {
    "image-builder": "imageBuilder",
    "iso-assembler": "isoAssembler",
    "publisher": "publisher",
    "transport": "transport",
}


def _dist_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return "<unknown distribution>"
    return f"{dist.metadata['Name']} {dist.version}"


def _roots(*modules: str) -> tuple[str, ...]:
    """The module names whose frames count as the plugin's own code."""
    return tuple({m for mod in modules if mod for m in (mod, mod.split(".")[0])})


def _as_sequence(returned: object) -> tuple[object, ...] | None:
    if returned is None:
        return ()
    if isinstance(returned, list | tuple | set | frozenset):
        return tuple(returned)
    return None


class PluginManager:
    """Finds plugins and their backends.

    ``entry_points=False`` gives a manager that sees only plugins registered explicitly with
    :meth:`register` (what :mod:`edgekit.testing` uses).

    A plugin found through an entry point that fails a check (it does not import, a hook is
    misspelled or lacks ``@hookimpl``, a backend class is abstract ...) is skipped and its
    problems are listed by :meth:`problems`; a plugin passed to :meth:`register` fails the
    same checks with a :class:`PluginError` instead, since its author is the caller.
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
        self._entry_point_plugins: set[str] = set()
        self._pending: list[importlib.metadata.EntryPoint] | None = None
        self._builtins_loaded = False
        self._third_party_loaded = False
        # Problems that made a plugin go away for good (it was never registered, or was
        # unregistered); problems of directly registered plugins found while collecting
        # backends are re-derived on every collection, so they live apart.
        self._problems: list[BrokenPlugin] = []
        self._collect_problems: list[BrokenPlugin] = []
        self._backends: dict[str, dict[str, BackendInfo]] | None = None
        self._all: list[BackendInfo] = []
        self._conflicts: dict[tuple[str, str], BackendConflict] = {}

    # --- loading ------------------------------------------------------------------------

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``pm.hook.edgekit_step_finished(...)``).

        A plugin's hook raising something other than an :class:`EdgekitError` becomes a
        :class:`PluginError` naming the plugin (:class:`~edgekit.plugins.boundary.GuardedHooks`).
        """
        return GuardedHooks(self.hook_manager.hook, self._describe_plugin)

    def _describe_plugin(self, plugin: object) -> str:
        name = self.hook_manager.get_name(plugin) or repr(plugin)
        return f"plugin {name!r} ({self._distributions.get(name, '<local>')})"

    @property
    def broken(self) -> list[BrokenPlugin]:
        """Every problem found so far, in the order found (see :meth:`problems`)."""
        return [*self._problems, *self._collect_problems]

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

    def _record(
        self,
        plugin: str,
        dist: str,
        kind: str,
        finding: Finding,
        *,
        exc: BaseException | None = None,
        transient: bool = False,
    ) -> None:
        problem = BrokenPlugin(
            plugin,
            dist,
            str(finding),
            kind,
            finding.location,
            format_traceback(exc) if exc is not None else None,
        )
        (self._collect_problems if transient else self._problems).append(problem)
        log.warning(
            "skipping broken edgekit plugin %r from %s: %s",
            plugin,
            dist,
            problem.error,
            exc_info=exc if exc is not None and debug_enabled() else None,
        )

    def _record_exception(
        self,
        plugin: str,
        dist: str,
        kind: str,
        exc: BaseException,
        roots: tuple[str, ...],
        doing: str = "",
    ) -> None:
        message = f"{doing}{type(exc).__name__}: {exc}"
        self._record(plugin, dist, kind, Finding(message, location_in(exc, roots)), exc=exc)

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
            roots = _roots(ep.module)
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not break edgekit
                self._record_exception(ep.name, label, "import", exc, roots)
                continue
            findings = hook_problems(plugin)
            if findings:
                for finding in findings:
                    self._record(ep.name, label, "hooks", finding)
                continue
            try:
                self.hook_manager.register(plugin, name=ep.name)
            except pluggy.PluginValidationError as exc:
                message = str(exc).replace("\n", "; ")
                self._record(ep.name, label, "hooks", Finding(message))
                continue
            except Exception as exc:
                self._record_exception(ep.name, label, "import", exc, roots)
                continue
            self._distributions[ep.name] = label
            self._entry_point_plugins.add(ep.name)
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

        Raises :class:`PluginError` listing every problem when the plugin implements an
        unknown hook (with the closest real one), a hook without ``@hookimpl`` or with an
        argument the hook does not pass; nothing of it is registered then.
        """
        label = name or self.hook_manager.get_canonical_name(plugin)
        findings = hook_problems(plugin)
        if len(findings) == 1:
            raise PluginError(f"invalid edgekit plugin {label!r}: {findings[0]}")
        if findings:
            listed = "".join(f"\n  {f}" for f in findings)
            raise PluginError(
                f"invalid edgekit plugin {label!r}: {len(findings)} problems:{listed}"
            )
        try:
            registered = self.hook_manager.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"invalid edgekit plugin {exc.plugin!r}: {exc}") from None
        except ValueError as exc:
            raise PluginError(str(exc)) from None
        if registered is None:
            raise PluginError(f"plugin {name!r} is blocked")
        self._distributions.setdefault(registered, "<local>")
        self._backends = None
        return registered

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name``."""
        self.hook_manager.unregister(name=name)
        self._distributions.pop(name, None)
        self._entry_point_plugins.discard(name)
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
        """Ask every plugin for its backend classes; never raises for a plugin's fault.

        A plugin with any bad class contributes none (a half-registered plugin would make
        which backends exist depend on the order of its list).
        """
        if self._backends is not None:
            return self._backends
        self._collect_problems = []
        offered: dict[str, list[BackendInfo]] = {}
        skipped: set[str] = set()
        for capability, hook_name in REGISTRATION_HOOKS.items():
            caller = getattr(self.hook_manager.hook, hook_name)
            for impl in caller.get_hookimpls():
                plugin_name = self.hook_manager.get_name(impl.plugin) or repr(impl.plugin)
                if plugin_name in skipped:
                    continue
                infos = self._offered(capability, hook_name, impl, plugin_name)
                if infos is None:
                    skipped.add(plugin_name)
                    offered.pop(plugin_name, None)
                else:
                    offered.setdefault(plugin_name, []).extend(infos)
        for plugin_name in skipped & self._entry_point_plugins:
            self.hook_manager.unregister(name=plugin_name)  # its other hooks go too
            self._entry_point_plugins.discard(plugin_name)
        found: dict[str, dict[str, BackendInfo]] = {cap: {} for cap in CAPABILITIES}
        same_name: dict[tuple[str, str], list[BackendInfo]] = {}
        for infos in offered.values():
            for info in infos:
                group = same_name.setdefault((info.capability, info.name), [])
                if all(other.cls is not info.cls for other in group):
                    group.append(info)
                found[info.capability].setdefault(info.name, group[0])
        self._all = [i for group in same_name.values() for i in group]
        self._all.sort(key=lambda i: (list(CAPABILITIES).index(i.capability), i.name, i.plugin))
        self._conflicts = {
            key: BackendConflict(key[0], key[1], tuple(group))
            for key, group in sorted(same_name.items())
            if len(group) > 1
        }
        self._backends = found
        return found

    def _offered(
        self, capability: str, hook_name: str, impl: Any, plugin_name: str
    ) -> list[BackendInfo] | None:
        """The backends one registration hook offers, or None after recording why not."""
        dist = self._distributions.get(plugin_name, "<local>")
        local = plugin_name not in self._entry_point_plugins
        roots = _roots(getattr(impl.function, "__module__", "") or "")
        try:
            returned = impl.function()
        except Exception as exc:
            self._record_exception(
                plugin_name, dist, "backends", exc, roots, f"{hook_name}() raised "
            )
            if local:  # as before: a directly registered plugin that raises goes away
                self.hook_manager.unregister(name=plugin_name)
            return None
        classes = _as_sequence(returned)
        if classes is None:
            what = (
                f"the class {returned.__qualname__} instead of a list "
                f"(return [{returned.__qualname__}])"
                if isinstance(returned, type)
                else f"{type(returned).__name__}, expected a list of backend classes"
            )
            finding = Finding(f"{hook_name}() returned {what}")
            self._record(plugin_name, dist, "backends", finding, transient=local)
            return None
        infos: list[BackendInfo] = []
        base = CAPABILITIES[capability]
        for cls in classes:
            finding_or_none = backend_class_problem(capability, base, cls)
            if finding_or_none is not None:
                self._record(plugin_name, dist, "backends", finding_or_none, transient=local)
                return None
            backend_cls = cast("type[Backend]", cls)
            infos.append(BackendInfo(capability, backend_cls.name, backend_cls, plugin_name, dist))
        return infos

    def backends(self, capability: str | None = None) -> list[BackendInfo]:
        """Every backend known after loading all plugins, sorted by capability and name.

        Backends sharing a name are all listed (see :meth:`conflicts`). A plugin passed to
        :meth:`register` whose registration hook returned something that cannot be a
        backend makes this raise :class:`PluginError` (installed plugins are skipped and
        listed by :meth:`problems` instead).
        """
        self.load_all()
        self._collect()
        local = [p for p in self._collect_problems if p.plugin not in self._entry_point_plugins]
        if local:
            raise PluginError(
                "; ".join(f"plugin {p.plugin!r} ({p.distribution}): {p.error}" for p in local)
            )
        return [i for i in self._all if capability is None or i.capability == capability]

    def problems(self) -> list[BrokenPlugin]:
        """Every plugin problem, after loading all plugins: what ``edgekit plugins`` lists."""
        self.load_all()
        self._collect()
        return self.broken

    def conflicts(self) -> list[BackendConflict]:
        """Backend names provided by more than one plugin, after loading all plugins."""
        self.load_all()
        self._collect()
        return list(self._conflicts.values())

    def report(self) -> PluginReport:
        """Backends, plugins, problems and conflicts, for a listing; never raises for a plugin."""
        self.load_all()
        self._collect()
        return PluginReport(
            backends=tuple(self._all),
            plugins=tuple(
                PluginSummary(name, dist, tuple(self.hooks_of(name)))
                for name, dist in self.plugins()
            ),
            problems=tuple(self.broken),
            conflicts=tuple(self._conflicts.values()),
        )

    def backend_info(self, capability: str, name: str) -> BackendInfo:
        """Find a backend by name, loading third-party plugins only if it is not built in.

        Raises :class:`BackendNotFoundError` (with the closest name, the available backends
        and the plugins that were skipped) or :class:`BackendConflictError` when several
        plugins provide ``name``.
        """
        if capability not in CAPABILITIES:
            raise PluginError(
                f"unknown capability {capability!r}; one of: {', '.join(CAPABILITIES)}"
            )
        self.load_builtins()
        info = self._collect()[capability].get(name)
        if info is None and not self._third_party_loaded:
            self.load_all()
            info = self._collect()[capability].get(name)
        conflict = self._conflicts.get((capability, name))
        if conflict is not None:
            raise BackendConflictError(conflict.message)
        if info is None:
            raise BackendNotFoundError(self._not_found(capability, name))
        return info

    def _not_found(self, capability: str, name: str) -> str:
        known = self._collect()[capability]
        choices = ", ".join(sorted(i.describe() for i in known.values())) or "none installed"
        elsewhere = [c for c, names in self._collect().items() if name in names]
        where = f" ({name!r} is a {' and '.join(elsewhere)} backend)" if elsewhere else ""
        hint = f"; broken plugins were skipped: {summarize(self.broken)}" if self.broken else ""
        return (
            f"no {capability} backend named {name!r}{did_you_mean(name, known)}{where}; "
            f"available: {choices}{hint}"
        )

    def selection_problems(
        self, selected: Mapping[str, Any], *, path: str = "$.backends"
    ) -> list[Problem]:
        """Problems of a selection of backends, one per bad name or option.

        ``selected`` maps a capability to a backend name, or to anything with ``name`` and
        ``options`` (the forge file's :class:`~edgekit.model.BackendChoice`). For a plan: a
        name nothing provides (with a did-you-mean), or that several plugins provide, and
        what the backend's :meth:`~edgekit.plugins.interfaces.Backend.options_problems`
        finds in its options. The problem paths are the forge file's
        (``$.backends.imageBuilder``, ``$.backends.publisher.options.bucket``).
        """
        problems: list[Problem] = []
        for capability, choice in selected.items():
            name = choice if isinstance(choice, str) else choice.name
            options: Mapping[str, Any] = {} if isinstance(choice, str) else choice.options
            field = f"{path}.{SELECTION_FIELDS.get(capability, capability)}"
            try:
                info = self.backend_info(capability, name)
            except PluginError as exc:
                problems.append(Problem(field, str(exc)))
                continue
            problems += options_problems(
                info.cls, options, f"{field}.options", label=(info.capability, info.distribution)
            )
        return problems

    def backend(self, capability: str, name: str) -> Backend:
        """Instantiate the backend ``name`` of ``capability``, guarded at the boundary.

        Every method of the capability's interface checks its result's type and names
        this backend and its distribution in any failure (see
        :mod:`edgekit.plugins.boundary`).
        """
        info = self.backend_info(capability, name)
        where = {"capability": capability, "name": name, "distribution": info.distribution}
        try:
            reason = info.cls.unavailable_reason()
        except Exception as exc:
            raise wrap_failure(
                exc, **where, doing="telling whether it can run", cls=info.cls
            ) from exc
        if reason:
            raise PluginError(f"{capability} backend {name!r} cannot run here: {reason}")
        try:
            instance = info.cls()
        except EdgekitError:
            raise
        except Exception as exc:
            raise wrap_failure(exc, **where, doing="to start", cls=info.cls) from exc
        return guard(instance, capability, name, info.distribution)

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
            label = f"plugin {name!r} ({self._distributions.get(name, '<local>')})"
            argnames = impl.argnames
            try:
                result = impl.function(**{k: v for k, v in kwargs.items() if k in argnames})
            except EdgekitError:
                raise
            except Exception as exc:  # name the plugin, not edgekit's internals
                at = location_in(exc, _roots(getattr(impl.function, "__module__", "") or ""))
                raise PluginError(
                    f"{label} failed in {hook_name}(): {type(exc).__name__}: {exc}"
                    + (f" (at {at})" if at else "")
                ) from exc
            wrong = mismatch(result, Mapping[str, str] | None)
            if wrong is not None:
                raise PluginError(
                    f"{label} returned {wrong} from {hook_name}(), expected a mapping of "
                    "path in the image to host path (str to str), or None"
                )
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
