"""Suite-wide guard: a test run always ends, whatever a test leaves behind."""

from __future__ import annotations

import multiprocessing
import sys

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # multiprocessing joins every live non-daemon child at interpreter exit, so one hung
    # child (e.g. forked while another thread held a lock) would keep pytest from ever
    # exiting and turn a failed test into a CI timeout. Kill them and say so instead.
    for child in multiprocessing.active_children():
        print(f"conftest: killing leftover process {child.name} (pid {child.pid})", file=sys.stderr)
        child.kill()
        child.join(5)
