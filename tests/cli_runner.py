"""The edgekit CLI as a subprocess, for tests: one runner instead of a copy per test file.

A subprocess (not click's CliRunner) so that a test sees what a user sees: the real entry
point, exit code, stdout and stderr as pipes (never a TTY), and no state shared with the
test's own interpreter. Imported as ``from cli_runner import edgekit``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

#: Seconds a call may take unless its caller says otherwise: the slowest command run with
#: the default (a site-ISO build, a hub command against a live hub) takes a few seconds;
#: callers that build images or boot QEMU pass their own, longer, timeout.
DEFAULT_TIMEOUT = 120.0


def edgekit(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    base: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -m edgekit ARGS`` in a child; its exit code, stdout and stderr (text).

    ``env`` goes over ``base`` (default: this process's environment); a ``None`` value
    unsets that variable, so a test can take away what the machine's environment has
    (e.g. a registration token). ``check`` fails the test on a non-zero exit, with the
    command and both streams in the message; otherwise the caller asserts the exit code.
    """
    environ = dict(os.environ if base is None else base)
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    argv = [sys.executable, "-m", "edgekit", *args]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        check=False,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"edgekit {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc
