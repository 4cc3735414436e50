"""A build farm on Dask distributed (issue 13 item 1): a real ``LocalCluster`` of 2 worker
processes on 127.0.0.1 builds the quick start and a fleet of 1,000 site ISOs with the
built-in backends; the manifest is the local run's, byte for byte; every step of a real plan
pickles; a worker process killed (SIGKILL) mid-step costs a retry, never a partial artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import dask
import pytest
from distributed import Client, LocalCluster
from edgekit_iso.plugin import PycdlibAssembler

from edgekit.errors import BuildError, ConfigError
from edgekit.forge import Forge, StepFinished
from edgekit.plugins import BuildContext, IsoAssembler, PluginManager, hookimpl
from edgekit.plugins.interfaces import Artifact, Progress, SiteIsoRequest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"
TOKEN = "ekt_farm-test-token-0123456789"

FLEET = """
apiVersion: edgekit/v1
kind: Forge
name: fleet
backends: {{isoAssembler: {assembler}}}
siteInventory: ./sites.csv
registry: {{target: oci:registry}}
registration:
  endpoint: "http://10.0.2.2:8080"
  project: fleet
  tokenEnv: EDGEKIT_REGISTRATION_TOKEN
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as local,
        Client(local) as client,
    ):
        yield client


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_REGISTRATION_TOKEN", TOKEN)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setenv(
        "EDGEKIT_CACHE_DIR", os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache")
    )


def fleet(root: Path, sites: int, assembler: str = "pycdlib") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"store-{i:04d},city=c{i % 7}\n" for i in range(sites))
    (root / "sites.csv").write_text("name,tags\n" + rows)
    (root / "edgeforge.yaml").write_text(FLEET.format(assembler=assembler))
    return root / "edgeforge.yaml"


def set_aside(out: Path) -> bytes:
    """The manifest of ``out``, which moves away so that the next run uses the same path."""
    manifest = (out / "manifest.json").read_bytes()
    out.rename(out.with_name(out.name + "-local"))
    return manifest


def test_the_quick_start_on_a_cluster_is_the_local_build(
    cluster: Client, env: None, tmp_path: Path
) -> None:
    project = tmp_path / "qs"
    shutil.copytree(QUICKSTART, project)
    forge_file, out = project / "edgeforge.yaml", project / "dist"
    events: list[Any] = []
    Forge.load(forge_file, output_dir=out).run(events=events.append)
    local = set_aside(out)

    # Every step of the plan as the task a farm would send: picklable by the standard
    # library, over its inputs, with nothing of the Forge object inside.
    results = {e.step.id: e.artifacts for e in events if isinstance(e, StepFinished)}
    forge = Forge.load(forge_file, output_dir=out)
    tasks = forge.tasks(results)
    covered: set[str] = set()
    for task in tasks:
        data = pickle.dumps(task)
        assert b"edgekit.forge.pipeline" not in data
        assert TOKEN.encode() not in repr(task).encode()  # the token travels, unshown
        back = pickle.loads(data)
        assert type(back) is type(task)
        assert back.steps == task.steps
        covered.update(task.steps)
    assert covered == {s.id for s in forge.plan().steps}
    assert len(covered) == 8

    result = Forge.load(forge_file, output_dir=out).run(executor=cluster.get_executor())
    assert set(result.ran) == covered
    assert (out / "manifest.json").read_bytes() == local
    assert not (out / ".edgekit" / "tasks").exists()


def test_a_thousand_site_isos_on_a_cluster(cluster: Client, env: None, tmp_path: Path) -> None:
    forge_file = fleet(tmp_path / "fleet", 1000)
    out = forge_file.parent / "dist"
    Forge.load(forge_file, output_dir=out).run()
    local = set_aside(out)
    events: list[Any] = []
    # The client itself: its futures are Dask's own (not concurrent.futures'), which the
    # standard library's wait/as_completed cannot wait for (dask/distributed#3695).
    result = Forge.load(forge_file, output_dir=out).run(executor=cluster, events=events.append)
    assert len(result.ran) == 2000
    assert (out / "manifest.json").read_bytes() == local
    # Split to keep both workers busy: 4 tasks per worker thread, 125 sites each.
    chunks = [e.done for e in events if isinstance(e, Progress) and e.step == "site-iso/*"]
    assert chunks == [125 * i for i in range(1, 9)]
    assert len(list((out / "sites").iterdir())) == 1000


class DyingIso(PycdlibAssembler):
    """The built-in assembler, except that one task (the one that claims ``die-once``)
    writes half of its chunk, says which process it runs in, and waits to be killed."""

    name = "dying"

    def build_site_isos(
        self, requests: Sequence[SiteIsoRequest], ctx: BuildContext
    ) -> list[Artifact]:
        flag = ctx.output_dir / "die-once"
        try:
            flag.rename(ctx.output_dir / "die-claimed")  # atomic: one task only
        except FileNotFoundError:
            return super().build_site_isos(requests, ctx)
        super().build_site_isos(requests[: len(requests) // 2], ctx)
        (ctx.output_dir / "victim").write_text(str(os.getpid()))
        time.sleep(300)
        raise AssertionError("the worker was not killed")


class DyingPlugin:
    @hookimpl
    def edgekit_iso_assemblers(self) -> list[type[IsoAssembler]]:
        return [DyingIso]


def test_a_worker_killed_mid_step_loses_nothing(cluster: Client, env: None, tmp_path: Path) -> None:
    forge_file = fleet(tmp_path / "fleet", 1000, assembler="dying")
    out = forge_file.parent / "dist"
    plugins = PluginManager()
    plugins.register(DyingPlugin(), name="dying")
    Forge.load(forge_file, plugins=plugins, output_dir=out).run()
    local = set_aside(out)
    out.mkdir()
    (out / "die-once").write_text("")
    workers = set(cluster.run(os.getpid).values())
    killed: list[int] = []
    watcher = kill_the_victim(out, killed)
    result = Forge.load(forge_file, plugins=plugins, output_dir=out).run(
        executor=cluster.get_executor()
    )
    watcher.join(5)
    assert killed, "no task claimed the death"
    assert killed[0] in workers  # a worker process of the cluster, not this one
    assert len(result.ran) == 2000
    (out / "die-claimed").unlink()
    (out / "victim").unlink()
    # The same manifest as the undisturbed local run; every published ISO whole.
    assert (out / "manifest.json").read_bytes() == local
    manifest = json.loads(local)
    isos = {a["path"]: a["digest"] for a in manifest["artifacts"] if a["kind"] == "site-iso"}
    on_disk = {f"sites/{p.name}" for p in (out / "sites").iterdir()}
    assert on_disk == {p for p in isos if p.startswith("sites/")}  # no partial, no stray file
    for path, digest in isos.items():
        assert digest == "sha256:" + hashlib.sha256((out / path).read_bytes()).hexdigest()
    assert not (out / ".edgekit" / "tasks").exists()  # the dead task's staging is gone


class RefusingIso(PycdlibAssembler):
    """Refuses one site, as a backend refuses bad input: a ConfigError with a problem."""

    name = "refusing"

    def build_site_isos(
        self, requests: Sequence[SiteIsoRequest], ctx: BuildContext
    ) -> list[Artifact]:
        if any(r.site == "store-0007" for r in requests):
            raise ConfigError.single("$.sites.store-0007", "this site is refused")
        return super().build_site_isos(requests, ctx)


class RefusingPlugin:
    @hookimpl
    def edgekit_iso_assemblers(self) -> list[type[IsoAssembler]]:
        return [RefusingIso]


def test_a_step_failing_on_a_worker_fails_the_run_as_itself(
    cluster: Client, env: None, tmp_path: Path
) -> None:
    forge_file = fleet(tmp_path / "fleet", 60, assembler="refusing")
    out = forge_file.parent / "dist"
    plugins = PluginManager()
    plugins.register(RefusingPlugin(), name="refusing")
    with pytest.raises(ConfigError) as failed:
        Forge.load(forge_file, plugins=plugins, output_dir=out).run(executor=cluster.get_executor())
    # The worker's error, its type, problems and exit code intact (not a pickling artefact).
    [problem] = failed.value.problems
    assert (problem.path, problem.message) == ("$.sites.store-0007", "this site is refused")
    assert failed.value.exit_code == 2
    assert not (out / "manifest.json").exists()
    assert not (out / ".edgekit" / "tasks").exists()


def test_a_cluster_without_workers_is_refused_at_once(env: None, tmp_path: Path) -> None:
    forge_file = fleet(tmp_path / "fleet", 30)
    out = forge_file.parent / "dist"
    with (
        LocalCluster(
            n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as empty,
        Client(empty) as client,
        pytest.raises(BuildError, match="the executor has no workers: start some"),
    ):
        Forge.load(forge_file, output_dir=out).run(executor=client.get_executor())
    assert not (out / "sites").exists()


def kill_the_victim(out: Path, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs the worker process ``DyingIso`` names in ``out/victim``."""

    def killer() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            try:
                pid = int((out / "victim").read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def wait_until_idle(client: Client, timeout: float = 120) -> None:
    """Wait until no worker of ``client``'s cluster runs a task, even a cancelled one."""

    def executing(dask_worker: Any) -> int:
        return len(dask_worker.state.executing)

    deadline = time.monotonic() + timeout
    while any(client.run(executing).values()):
        assert time.monotonic() < deadline, "a worker is still running a task"
        time.sleep(0.1)


def test_a_task_that_outlives_its_run_writes_nothing(tmp_path: Path, env: None) -> None:
    forge_file = fleet(tmp_path / "fleet", 30)
    out = forge_file.parent / "dist"
    events: list[Any] = []
    Forge.load(forge_file, output_dir=out).run(events=events.append)
    results = {e.step.id: e.artifacts for e in events if isinstance(e, StepFinished)}
    tasks = Forge.load(forge_file, output_dir=out).tasks(results)
    shutil.rmtree(out)
    [task] = [t for t in tasks if t.label == "site-iso/*"]
    ended = attrs.evolve(task, env=attrs.evolve(task.env, run="0123456789abcdef"))
    with pytest.raises(BuildError, match=r"the run this task belongs to has ended .* nothing"):
        ended()
    assert not (out / ".edgekit").exists()
    assert not (out / "sites").exists()
    # The same task of a run still going builds its sites.
    ended.env.run_dir.mkdir(parents=True)
    assert len(ended()) == 30
    assert len(list((out / "sites").iterdir())) == 30


def test_a_worker_lost_more_often_than_dask_retries_fails_the_run_cleanly(
    env: None, tmp_path: Path
) -> None:
    forge_file = fleet(tmp_path / "fleet", 200, assembler="dying")
    out = forge_file.parent / "dist"
    plugins = PluginManager()
    plugins.register(DyingPlugin(), name="dying")
    Forge.load(forge_file, plugins=plugins, output_dir=out).run()
    local = set_aside(out)
    out.mkdir()
    (out / "die-once").write_text("")
    killed: list[int] = []
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),  # no retry
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as strict,
        Client(strict) as client,
    ):
        watcher = kill_the_victim(out, killed)
        with pytest.raises(BuildError, match=r"site-iso/\* failed on the executor: KilledWorker"):
            Forge.load(forge_file, plugins=plugins, output_dir=out).run(
                executor=client.get_executor()
            )
        sites_when_failed = sorted(p.name for p in (out / "sites").glob("*"))
        watcher.join(5)
        assert killed
        # Nothing of the failed job is recorded or published.
        assert not (out / "manifest.json").exists()
        state = out / ".edgekit" / "state.json"
        recorded = json.loads(state.read_text())["steps"] if state.exists() else {}
        assert not [s for s in recorded if s.startswith("site-iso/")]
        assert not (out / ".edgekit" / "tasks").exists()
        # Dask cannot stop a task already running on the surviving worker: it may outlive
        # the failed run, but it writes nothing after it (no scratch, no site ISO).
        wait_until_idle(client)
        assert not (out / ".edgekit" / "tasks").exists()
        assert sorted(p.name for p in (out / "sites").glob("*")) == sites_when_failed
        # The next run builds what is missing, to the local run's manifest.
        Forge.load(forge_file, plugins=plugins, output_dir=out).run(executor=client.get_executor())
    assert (out / "manifest.json").read_bytes() == local


class _Unanswering:
    """A Dask client (``nthreads``, ``run``: its documented methods) whose workers cannot
    be asked, or always run a task of the run."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.calls = 0

    def nthreads(self) -> dict[str, int]:
        return {"tcp://127.0.0.1:1": 1}

    def run(self, fn: Any, *args: Any) -> dict[str, int]:
        self.calls += 1
        if self.fails:
            raise OSError("the scheduler is gone")
        return {"tcp://127.0.0.1:1": 1}


def test_a_failed_run_says_so_when_its_tasks_cannot_be_seen_to_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from edgekit.forge.farm import wait_for_cancelled

    lost = _Unanswering(fails=True)
    started = time.monotonic()
    assert not wait_for_cancelled(lost, "0123456789abcdef")  # type: ignore[arg-type]
    assert lost.calls == 3
    assert time.monotonic() - started < 10
    assert "cannot ask the workers" in caplog.text
    assert "the scheduler is gone" in caplog.text
    caplog.clear()
    busy = _Unanswering(fails=False)
    assert not wait_for_cancelled(busy, "0123456789abcdef", timeout=0.5)  # type: ignore[arg-type]
    assert "1 task(s) of the failed run still run on the workers after 0.5 s" in caplog.text
