"""``EDGEKIT_DEBUG=1``: show full tracebacks instead of one-line messages.

A user error (:class:`~edgekit.errors.EdgekitError`) is printed as its message alone, which
is what a user needs. Whoever debugs a plugin or edgekit itself needs the traceback too,
including the chained cause (a backend's own exception is kept as ``__cause__`` of the
error that names the backend). The CLI and the plugin manager ask :func:`debug_enabled`
and render with :func:`format_error`, so both follow one switch.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping

__all__ = ["DEBUG_ENV", "debug_enabled", "format_error", "format_traceback"]

DEBUG_ENV = "EDGEKIT_DEBUG"

_TRUE = frozenset({"1", "true", "yes", "on"})


def debug_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``EDGEKIT_DEBUG`` is ``1``/``true``/``yes``/``on`` (any case)."""
    env = os.environ if environ is None else environ
    return env.get(DEBUG_ENV, "").strip().lower() in _TRUE


def format_traceback(exc: BaseException) -> str:
    """The full traceback of ``exc``, its causes and contexts included, as Python prints it."""
    return "".join(traceback.format_exception(exc)).rstrip("\n")


def format_error(exc: BaseException, *, debug: bool | None = None) -> str:
    """What to show for ``exc``: its message, or with debugging on, the whole traceback.

    ``debug`` defaults to :func:`debug_enabled`. The message comes last in both forms, so a
    reader of a debug log finds the one-line summary where it always is.
    """
    message = str(exc) or type(exc).__name__
    if not (debug_enabled() if debug is None else debug):
        return message
    return f"{format_traceback(exc)}\n\n{message}"
