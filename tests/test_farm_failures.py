"""The build farm's checks on process pools: their workers run the same tasks (the same
manifest as a thread pool's), a worker that does not see the run's directories stops the
run before any step, and a worker with other plugin versions refuses to build.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from test_farm import fleet

from edgekit import __version__
from edgekit.errors import BuildError
from edgekit.forge import Forge, farm
from edgekit.forge.tasks import site_chunks
from edgekit.forge.workers import WorkerPlugins


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_REGISTRATION_TOKEN", "ekt_farm-failures-0123456789")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def spawn_pool() -> ProcessPoolExecutor:
    # spawn, not fork: the workers know nothing of this process (as a remote worker).
    return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))


def test_a_process_pool_builds_what_a_thread_pool_builds(env: None, tmp_path: Path) -> None:
    forge_file = fleet(tmp_path / "fleet", 120)
    out = forge_file.parent / "dist"
    Forge.load(forge_file, output_dir=out).run()
    local = (out / "manifest.json").read_bytes()
    out.rename(out.with_name("dist-local"))
    with spawn_pool() as pool:
        result = Forge.load(forge_file, output_dir=out).run(executor=pool)
    assert len(result.ran) == 240
    assert (out / "manifest.json").read_bytes() == local


class Elsewhere(ProcessPoolExecutor):
    """A pool whose workers see another disk: the probe looks for the marker where that
    disk has none (what a worker on another machine without the shared mount sees)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if fn is farm._probe:
            marker, expected, base_dir, output_dir = args
            args = (marker + ".elsewhere", expected, base_dir + ".elsewhere", output_dir)
        return super().submit(fn, *args, **kwargs)


def test_workers_that_do_not_share_the_directories_stop_the_run_first(
    env: None, tmp_path: Path
) -> None:
    forge_file = fleet(tmp_path / "fleet", 30)
    out = forge_file.parent / "dist"
    with (
        Elsewhere(2, mp_context=multiprocessing.get_context("spawn")) as pool,
        pytest.raises(BuildError) as failed,
    ):
        Forge.load(forge_file, output_dir=out).run(executor=pool)
    message = str(failed.value)
    assert "1 worker(s) of the executor do not share this run's directories" in message
    assert "docs/build-farm.md" in message
    assert f"the forge file's directory {forge_file.parent}.elsewhere does not exist" in message
    assert "cannot read" in message
    assert not (out / "sites").exists()  # nothing was built
    assert not (out / "manifest.json").exists()
    assert not list((out / ".edgekit").glob("farm-probe-*"))  # the marker is removed


def test_a_worker_with_other_versions_refuses_to_build() -> None:
    plugins = WorkerPlugins(
        token="not-in-this-process",
        plugins=(),
        distributions=(("iso", "edgekit-iso 99.0"), ("nope", "edgekit-nope 1.0")),
        edgekit="0.0.0-other",
    )
    with pytest.raises(BuildError) as failed:
        plugins.manager()
    message = str(failed.value)
    assert f"edgekit {__version__} (the run uses 0.0.0-other)" in message
    assert "(the run uses 99.0)" in message  # edgekit-iso, at whatever version is here
    assert "edgekit-nope is not installed (the run uses 1.0)" in message
    assert "install the same versions on every worker" in message


@pytest.mark.parametrize(
    ("items", "slots", "sizes"),
    [
        (0, 2, []),
        (2, 2, [2]),  # the quick start: one task, one backend call
        (60, 2, [30, 30]),  # never below 25 a task
        (1000, 2, [125] * 8),  # 4 tasks per worker
        (1000, 16, [25] * 40),
        (10_000, 2, [500] * 20),  # never above 500 a task
        (1001, 2, [126] * 7 + [119]),
    ],
)
def test_per_site_work_is_split_to_keep_every_worker_busy(
    items: int, slots: int, sizes: list[int]
) -> None:
    chunks = site_chunks(list(range(items)), slots)
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == list(range(items))  # all, once, in order
