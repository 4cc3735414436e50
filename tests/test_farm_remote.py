"""The remote-scheduler case, as far as one machine allows: a ``dask scheduler`` and two
``dask worker`` processes started from the command line (as on a farm's machines), with an
environment of their own (no ``SOURCE_DATE_EPOCH``, no token, another working directory),
reached by address only; and the documentation's LocalCluster example run as written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import edgekit
from distributed import Client
from test_farm import fleet, set_aside

from edgekit.forge import Forge

ROOT = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")


def start(argv: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    # The farm machine's environment: none of the coordinator's edgekit settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEKIT_", "SOURCE_"))}
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Client]:
    farm = tmp_path / "farm"
    farm.mkdir()
    info = farm / "scheduler.json"
    procs = [
        start(
            [
                str(DASK),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(info),
            ],
            farm,
            farm / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for i in range(2):
            procs.append(
                start(
                    [
                        str(DASK),
                        "worker",
                        "--scheduler-file",
                        str(info),
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                        "--name",
                        f"farm-{i}",
                    ],
                    farm,
                    farm / f"worker-{i}.log",
                )
            )
        with Client(scheduler_file=str(info), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            yield client
    finally:
        for proc in reversed(procs):  # only the processes this fixture started
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_REGISTRATION_TOKEN", "ekt_remote-farm-0123456789")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def test_a_scheduler_and_workers_started_apart_build_the_local_manifest(
    remote: Client, env: None, tmp_path: Path
) -> None:
    forge_file = fleet(tmp_path / "fleet", 300)
    out = forge_file.parent / "dist"
    Forge.load(forge_file, output_dir=out).run()
    local = set_aside(out)
    names = {w["name"] for w in remote.scheduler_info()["workers"].values()}
    assert names == {"farm-0", "farm-1"}
    result = Forge.load(forge_file, output_dir=out).run(executor=remote.get_executor())
    assert len(result.ran) == 600
    # Bytes as the coordinator's: its SOURCE_DATE_EPOCH and token reached the workers.
    assert (out / "manifest.json").read_bytes() == local


def test_the_documented_local_cluster_example_runs(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "build-farm.md").read_text()
    section = doc.split("## On one machine: a LocalCluster", 1)[1]
    [code] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    project = tmp_path / "qs"
    shutil.copytree(ROOT / "examples" / "quickstart", project)
    (project / "farm.py").write_text(code)
    env = {
        **os.environ,
        "EDGEKIT_REGISTRATION_TOKEN": "ekt_doc-example-0123456789",
        "SOURCE_DATE_EPOCH": "1700000000",
        "EDGEKIT_CACHE_DIR": os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache"),
    }
    proc = subprocess.run(
        [sys.executable, "farm.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "'site-iso': {'steps': 2, 'run': 2, 'cached': 0}" in proc.stdout
    assert (project / "dist" / "manifest.json").exists()


def test_the_cli_runs_a_forge_on_a_scheduler_named_by_address_or_file(
    remote: Client, env: None, tmp_path: Path
) -> None:
    forge_file = fleet(tmp_path / "fleet", 40)
    out = forge_file.parent / "dist"
    Forge.load(forge_file, output_dir=out).run()
    local = set_aside(out)
    address = remote.scheduler.address
    info = tmp_path / "farm" / "scheduler.json"
    for target in (address, str(info)):
        proc = edgekit(
            "forge", str(forge_file), "-o", str(out), "--scheduler", target, "--no-cache",
            "--json", timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert len(json.loads(proc.stdout)["ran"]) == 80
        assert (out / "manifest.json").read_bytes() == local


def test_an_unreachable_scheduler_is_one_clear_error_and_builds_nothing(tmp_path: Path) -> None:
    forge_file = fleet(tmp_path / "fleet", 3)
    for target, message in (
        ("tcp://127.0.0.1:1", "cannot reach the Dask scheduler at tcp://127.0.0.1:1"),
        ("sched.json", "'sched.json' is not a scheduler address"),
    ):
        proc = edgekit(
            "forge", str(forge_file), "--scheduler", target, cwd=tmp_path,
            env={"EDGEKIT_REGISTRATION_TOKEN": "ekt_remote-farm-0123456789"},
        )  # fmt: skip
        assert proc.returncode != 0
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (forge_file.parent / "dist" / "manifest.json").exists()
