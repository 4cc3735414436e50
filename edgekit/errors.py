"""Exceptions edgekit raises.

Every error a user can cause (bad configuration, a missing file, a wrong password) is an
:class:`EdgekitError`: the CLI prints its message and exits non-zero without a traceback.
Anything else escaping edgekit is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

__all__ = [
    "BackendConflictError",
    "BackendError",
    "BackendNotFoundError",
    "BackendResultError",
    "BuildError",
    "ConfigError",
    "EdgekitError",
    "MissingExtraError",
    "PluginError",
    "Problem",
    "PublishError",
    "RegistrationError",
    "SourceError",
]


class EdgekitError(Exception):
    """An error the user can fix; its message is complete and safe to print."""

    #: The process exit code the CLI uses for this error.
    exit_code: int = 1


@attrs.frozen(order=True)
class Problem:
    """One configuration problem, addressed by its JSON path (``$.profiles[0].packs[1].layer``)."""

    path: str
    message: str
    #: 1-based line in the YAML source, when the document came from YAML text.
    line: int | None = attrs.field(default=None, order=False)
    #: The file the document came from, when known.
    source: str | None = attrs.field(default=None, order=False)

    def __str__(self) -> str:
        where = ""
        if self.source is not None and self.line is not None:
            where = f" ({self.source}:{self.line})"
        elif self.line is not None:
            where = f" (line {self.line})"
        elif self.source is not None:
            where = f" ({self.source})"
        return f"{self.path}: {self.message}{where}"


class ConfigError(EdgekitError):
    """A document or object is invalid; :attr:`problems` lists every problem found, at once."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem], *, summary: str | None = None) -> None:
        self.problems: Sequence[Problem] = tuple(problems)
        self.summary = summary
        super().__init__(self._render())

    def _render(self) -> str:
        head = self.summary or (
            "1 problem found" if len(self.problems) == 1 else f"{len(self.problems)} problems found"
        )
        return "\n".join([head + ":", *(f"  {p}" for p in self.problems)])

    @classmethod
    def single(cls, path: str, message: str, *, line: int | None = None) -> ConfigError:
        """A ConfigError with one problem."""
        return cls([Problem(path, message, line)])


class MissingExtraError(EdgekitError):
    """An optional dependency is not installed (a setup error: exit 2); the message names
    the extra to install (``pip install 'edgekit[hub]'``)."""

    exit_code = 2


class PluginError(EdgekitError):
    """A plugin could not be loaded or used."""

    exit_code = 2


class BackendNotFoundError(PluginError):
    """No backend of the requested capability has the requested name."""


class BackendConflictError(PluginError):
    """Two plugins registered a backend of one capability under the same name."""


class BackendError(PluginError):
    """A backend failed while edgekit used it: a bug in the plugin providing it.

    Raised by the guard of :mod:`edgekit.plugins.boundary` when a backend method raises an
    exception that is not an :class:`EdgekitError` (kept as ``__cause__``, shown with
    ``EDGEKIT_DEBUG=1``). A :class:`PluginError` like every fault of a plugin, but exit
    code 1: the step failed, the configuration may well be right.
    """

    exit_code = 1

    def __init__(
        self, message: str, *, capability: str, backend: str, distribution: str, method: str
    ) -> None:
        super().__init__(message)
        self.capability = capability
        self.backend = backend
        self.distribution = distribution
        self.method = method


class BackendResultError(BackendError):
    """A backend returned something other than what its interface promises (a plugin bug)."""

    exit_code = 2


class BuildError(EdgekitError):
    """A build step failed for a reason the user can fix (missing input, bad source, no space)."""


class SourceError(BuildError):
    """A source (URL, file, OCI artifact) could not be fetched or failed verification."""


class PublishError(EdgekitError):
    """Pushing to or pulling from a registry or layout failed."""


class RegistrationError(EdgekitError):
    """Talking to a registration hub failed (refused token, unreachable hub, tampered file)."""
