"""What every command shares: the root group, consoles, JSON output, errors, progress bars.

Errors: an :class:`EdgekitError` (something the user can fix) prints ``error: ...`` and
exits with its code (2 for configuration and usage errors, 1 for failures); a
:class:`PluginError` caused by a plugin's own exception (a backend that raised
``KeyError``) is a bug in that plugin, so its line comes with the hint to set
``EDGEKIT_DEBUG=1``. Anything else is a bug: one line naming it and the hint, exit 1. With
``EDGEKIT_DEBUG=1`` all of them print the full traceback first (:mod:`edgekit.debug`, the
one switch the plugin manager follows too).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from edgekit import __version__
from edgekit.debug import DEBUG_ENV, debug_enabled, format_error, format_traceback
from edgekit.errors import ConfigError, EdgekitError, PluginError
from edgekit.plugins.interfaces import Artifact

F = TypeVar("F", bound=Callable[..., Any])

#: Width for output that is not a terminal: wide enough that rich never wraps a line a
#: script or grep reads (rich would otherwise assume 80 columns).
UNWRAPPED_WIDTH = 100_000


def console(*, stderr: bool = False) -> Console:
    """A rich console for stdout (or stderr) that never wraps output meant for scripts.

    On a terminal, or with ``COLUMNS`` set, rich uses that width; otherwise (a pipe, a file,
    a test) lines are never wrapped. Made per use so that a redirected ``sys.stdout`` (or
    ``COLUMNS``) at call time is what counts.
    """
    stream = sys.stderr if stderr else sys.stdout
    wide = not os.environ.get("COLUMNS") and not (hasattr(stream, "isatty") and stream.isatty())
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH if wide else None, soft_wrap=wide)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))


def _styled(label: str, message: str, *, color: str = "red") -> str:
    return f"{click.style(label, fg=color, bold=True)} {message}"


def echo_error(label: str, message: str, *, color: str = "red") -> None:
    click.echo(_styled(label, message, color=color), err=True)


def _hint(what: str) -> None:
    """Where to look next, for a bug (nothing with ``EDGEKIT_DEBUG=1``: the traceback is out)."""
    if not debug_enabled():
        click.echo(f"This is a bug in {what}; set {DEBUG_ENV}=1 to see the traceback.", err=True)


def _plugin_bug(error: EdgekitError) -> bool:
    """A plugin's own exception behind a :class:`PluginError`: a bug, not a user's mistake.

    The plugin boundary wraps what a backend or hook raised (``KeyError``, ...) in a
    :class:`~edgekit.errors.BackendError` or :class:`PluginError` naming the plugin and keeps
    it as ``__cause__``; an :class:`EdgekitError` the plugin raised itself passes unwrapped.
    """
    cause = error.__cause__
    return (
        isinstance(error, PluginError) and cause is not None and not isinstance(cause, EdgekitError)
    )


def fail(error: EdgekitError, *, as_json: bool = False) -> NoReturn:
    """Report a user error (a traceback only with ``EDGEKIT_DEBUG=1``) and exit with its code."""
    if as_json:
        if debug_enabled():  # the traceback on stderr; stdout stays one JSON document
            click.echo(format_traceback(error), err=True)
        doc: dict[str, Any] = {"ok": False, "error": type(error).__name__, "message": str(error)}
        if isinstance(error, ConfigError):
            doc["problems"] = [
                {"path": p.path, "message": p.message, "line": p.line, "source": p.source}
                for p in error.problems
            ]
        emit_json(doc)
    else:
        click.echo(format_error(error, summary=_styled("error:", str(error))), err=True)
        if _plugin_bug(error):
            _hint("the plugin named above")
    sys.exit(error.exit_code)


def fail_unexpected(error: BaseException, *, as_json: bool = False) -> NoReturn:
    """Report an exception that is not a user error: a bug. One line, exit 1."""
    text = str(error).strip().splitlines()
    summary = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    if as_json:
        emit_json({"ok": False, "error": type(error).__name__, "message": str(error)})
    click.echo(format_error(error, summary=_styled("error:", f"unexpected {summary}")), err=True)
    _hint("edgekit or a plugin")
    sys.exit(1)


@contextmanager
def user_errors(as_json: bool = False) -> Iterator[None]:
    """Turn :class:`EdgekitError` into a clean message and exit code."""
    try:
        yield
    except EdgekitError as exc:
        fail(exc, as_json=as_json)
    except OSError as exc:  # a path the user gave that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        error = EdgekitError(f"{where}{exc.strerror or exc}")
        error.__cause__ = exc  # the traceback EDGEKIT_DEBUG=1 shows is the OSError's
        fail(error, as_json=as_json)


def require_file(file: Path) -> None:
    """A clear configuration error for a FILE argument that does not exist."""
    if not file.exists():
        raise ConfigError.single("$", f"{file}: no such file")


def key_values(items: tuple[str, ...], option: str) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` options, naming the option on a bad one."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError.single(option, f"{item!r} is not KEY=VALUE")
        out[key] = value
    return out


def artifact_json(artifact: Artifact, output_dir: Path) -> dict[str, Any]:
    """An artifact as ``manifest.json`` records it (the forge's own serialisation)."""
    # forge.py's serialiser is private today; the CLI reuses it rather than keeping a
    # second JSON form of Artifact. ``step`` is not known per artifact from a ForgeResult.
    from edgekit.forge import _artifact_to_json

    doc = _artifact_to_json(artifact, output_dir, "")
    if not doc.get("step"):
        doc.pop("step", None)
    return doc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """edgekit: build and run edge Kubernetes fleets from Python or the shell."""


# --- progress ---------------------------------------------------------------------------


def progress_bars() -> Progress:
    """Bytes, rate and elapsed time per task, on stderr."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=False,
    )
