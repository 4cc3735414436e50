"""A forge run's guard: SIGTERM cleans up like Ctrl-C, and earlier killed runs' leftovers go.

Steps write into temporary names beside their outputs (``.NAME.XXXXXXXX.tmp``,
``.NAME.tmp-XXXXXXXX``, ``.edgekit/iso-inputs-XXXXXXXX`` ...) and remove them in ``finally``
blocks, so an interrupted run (SIGINT, a KeyboardInterrupt) leaves nothing behind. SIGTERM's
default action kills the process without running them; :func:`run_guard` turns SIGTERM into
what Ctrl-C does for the duration of a run: SIGINT to the process group edgekit leads (SIGTERM
to it when SIGINT is ignored, as under ``nohup``, or handled by the caller), else a
KeyboardInterrupt. A run killed harder (SIGKILL, power)
still leaves temporary files; the next run on the same output directory removes them at
start-up, holding a lock so that it never touches the files of a run still going.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, ParamSpec, Protocol, TypeVar

__all__ = ["guarded", "run_guard", "stale_temporaries", "sweep_stale"]

STATE_DIR = ".edgekit"
LOCK = "run.lock"

_RAND = r"[a-z0-9_]{8}"  # the random part of tempfile's names
#: Names of the temporary files and directories edgekit and its plugins create.
_TEMP_NAMES = re.compile(
    rf"""(?x)
    \..+\.{_RAND}\.(?:tmp|work|old)   # atomic writes, ISO work dirs, sample-OS swaps
    | \..+\.tmp-{_RAND}               # OCI layout staging
    | \.tmp-(?:[a-z]+-)?{_RAND}       # blobs, downloads, cached layers
    | \.tmp-.+-{_RAND}                # index writes
    | \.extract-{_RAND}               # files extracted from an image
    """
)
_STATE_TEMP = re.compile(rf"iso-inputs-{_RAND}")
#: How deep the sweep looks under the output directory (layouts nest blobs/sha256/...).
_MAX_DEPTH = 6


#: The parts of an output directory edgekit writes (the default layout target included);
#: only these are searched, so an output directory shared with other files (``output: .``)
#: never loses a file that merely looks like a temporary name.
_OWNED = (STATE_DIR, "images", "iso", "sites", "registry")


def stale_temporaries(output_dir: Path) -> list[Path]:
    """Temporary files and directories under ``output_dir`` by edgekit's naming rules: at its
    top level and inside the directories edgekit owns there (:data:`_OWNED`)."""
    found: list[Path] = []
    state = output_dir / STATE_DIR
    if state.is_dir():
        found.extend(p for p in state.iterdir() if _STATE_TEMP.fullmatch(p.name))
    if output_dir.is_dir():
        found.extend(p for p in output_dir.iterdir() if _TEMP_NAMES.fullmatch(p.name))
    for owned in _OWNED:
        root = output_dir / owned
        if not root.is_dir() or root.is_symlink():
            continue
        root_depth = len(root.parts)
        for top, dirs, files in os.walk(root):
            here = Path(top)
            found.extend(here / name for name in [*dirs, *files] if _TEMP_NAMES.fullmatch(name))
            dirs[:] = [
                d
                for d in dirs
                if not _TEMP_NAMES.fullmatch(d) and len(here.parts) - root_depth < _MAX_DEPTH
            ]
    return sorted(set(found))


def sweep_stale(output_dir: Path) -> list[Path]:
    """Remove :func:`stale_temporaries`; returns what was removed."""
    removed = []
    for p in stale_temporaries(output_dir):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue  # not ours to fight over; the next run tries again
        removed.append(p)
    return removed


def _terminate(signum: int, frame: FrameType | None) -> None:
    if os.getpgrp() == os.getpid():
        # We lead our process group (a shell started us), so the tools a step runs (buildah,
        # xorriso) are in it and must stop too, or the step waits for them.
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            # Do what Ctrl-C does: SIGINT to the whole group; ours raises KeyboardInterrupt
            # in the main thread and the step unwinds at once.
            os.killpg(os.getpgrp(), signal.SIGINT)
            return
        # SIGINT is ignored (``nohup cmd &`` from a script without job control: the tools
        # inherited that) or has a handler of the caller's: SIGINT would not stop the tools,
        # so they get the SIGTERM. We ignore our own copy, delivered before killpg returns.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            os.killpg(os.getpgrp(), signal.SIGTERM)
        finally:
            signal.signal(signal.SIGTERM, _terminate)
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def run_guard(output_dir: Path) -> Iterator[None]:
    """For one run on ``output_dir``: SIGTERM raises KeyboardInterrupt (in the main thread),
    and leftovers of earlier runs are swept if no other run holds the directory's lock."""
    lock_fd: int | None = None
    try:
        (output_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(output_dir / STATE_DIR / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another run is using it, or the directory is unusable (the run says)
        if lock_fd is not None:
            os.close(lock_fd)
        lock_fd = None
    if lock_fd is not None:
        sweep_stale(output_dir)
    previous: Any = None
    main = threading.current_thread() is threading.main_thread()
    if main:
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if lock_fd is not None:
            os.close(lock_fd)


P = ParamSpec("P")
R = TypeVar("R")


class _HasOutput(Protocol):
    output_dir: Path


def guarded(method: Callable[P, R]) -> Callable[P, R]:
    """Run a pipeline method (whose ``self`` has ``output_dir``) inside :func:`run_guard`."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        owner: _HasOutput = args[0]  # type: ignore[assignment]
        with run_guard(owner.output_dir):
            return method(*args, **kwargs)

    return wrapper
