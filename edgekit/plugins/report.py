"""What the plugin manager knows, as records: backends, problems, conflicts, the listing.

:meth:`PluginManager.report() <edgekit.plugins.PluginManager.report>` returns a
:class:`PluginReport`; ``edgekit plugins`` only formats it (``--json`` prints
:meth:`PluginReport.to_json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from edgekit.plugins.interfaces import Backend

__all__ = ["BackendConflict", "BackendInfo", "BrokenPlugin", "PluginReport", "PluginSummary"]

#: Distributions maintained with edgekit itself; loaded first.
BUILTIN_DISTRIBUTIONS = frozenset(
    {"edgekit-oci", "edgekit-iso", "edgekit-oras", "edgekit-http", "edgekit-agent"}
)


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

    def unavailable(self) -> str | None:
        """:meth:`Backend.unavailable_reason`, or what went wrong asking it (plugin code)."""
        try:
            return self.cls.unavailable_reason()
        except Exception as exc:
            return f"cannot tell: unavailable_reason() raised {type(exc).__name__}: {exc}"


@attrs.frozen
class BrokenPlugin:
    """A problem of a plugin, which was skipped because of it.

    ``kind`` says at which stage it was found: ``import`` (loading the entry point),
    ``hooks`` (a misspelled hook, one without ``@hookimpl``, a wrong signature) or
    ``backends`` (a registration hook failed or returned a class that cannot be a backend).
    """

    plugin: str
    distribution: str
    #: The complete message, ending with ``(at FILE:LINE)`` when the place is known.
    error: str
    kind: str = "import"
    #: ``FILE:LINE`` in the plugin's own code, when known.
    location: str | None = None
    #: The formatted traceback, when an exception was the cause (shown by EDGEKIT_DEBUG=1).
    traceback: str | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution}) was skipped: {self.error}"


@attrs.frozen
class BackendConflict:
    """Two or more backends of one capability share a name; selecting it is an error."""

    capability: str
    name: str
    candidates: tuple[BackendInfo, ...]

    @property
    def message(self) -> str:
        count = {2: "two", 3: "three"}.get(len(self.candidates), str(len(self.candidates)))
        described = " and ".join(
            f"{c.cls.__module__}.{c.cls.__qualname__} from {c.distribution} (plugin {c.plugin!r})"
            for c in self.candidates
        )
        third_party = [c.plugin for c in self.candidates if not c.builtin]
        block = (third_party or [c.plugin for c in self.candidates])[0]
        return (
            f"{count} {self.capability} backends are named {self.name!r}: {described}; "
            f"uninstall one, or block one with EDGEKIT_DISABLE_PLUGINS={block}"
        )


@attrs.frozen
class PluginSummary:
    """A loaded plugin and the hooks it implements."""

    name: str
    distribution: str
    hooks: tuple[str, ...]


@attrs.frozen
class PluginReport:
    """Everything ``edgekit plugins`` shows; building it never raises for a plugin's fault."""

    backends: tuple[BackendInfo, ...]
    plugins: tuple[PluginSummary, ...]
    problems: tuple[BrokenPlugin, ...]
    conflicts: tuple[BackendConflict, ...]

    @property
    def ok(self) -> bool:
        """No plugin was skipped and no backend name is ambiguous."""
        return not self.problems and not self.conflicts

    def backend_status(self, info: BackendInfo) -> str:
        """``ok``, ``conflict``, or why the backend cannot run here."""
        if any(c.capability == info.capability and c.name == info.name for c in self.conflicts):
            return "conflict"
        return info.unavailable() or "ok"

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``edgekit plugins --json`` prints."""

        def backend(i: BackendInfo) -> dict[str, Any]:
            return {
                "capability": i.capability,
                "name": i.name,
                "plugin": i.plugin,
                "distribution": i.distribution,
                "builtin": i.builtin,
                "unavailable": i.unavailable(),
                "status": self.backend_status(i),
            }

        def problem(b: BrokenPlugin) -> dict[str, Any]:
            return {
                "plugin": b.plugin,
                "distribution": b.distribution,
                "kind": b.kind,
                "error": b.error,
                "location": b.location,
            }

        return {
            "backends": [backend(i) for i in self.backends],
            "plugins": [
                {"name": p.name, "distribution": p.distribution, "hooks": list(p.hooks)}
                for p in self.plugins
            ],
            "broken": [problem(b) for b in self.problems],
            "conflicts": [
                {
                    "capability": c.capability,
                    "name": c.name,
                    "candidates": [backend(i) for i in c.candidates],
                    "message": c.message,
                }
                for c in self.conflicts
            ],
        }


def summarize(problems: Sequence[BrokenPlugin]) -> str:
    """One line naming every skipped plugin, for a 'not found' message."""
    return ", ".join(f"{b.plugin} ({b.distribution}: {b.error})" for b in problems)
