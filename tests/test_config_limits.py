"""The bounds and guards behind bad input: JSON for the hub, secrets in reprs, run cleanup."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit import config, limits
from edgekit.config import parse_user_data, render_user_data
from edgekit.errors import ConfigError
from edgekit.inputs import read_inventory
from edgekit.model import Forge, Site, User, UserData
from edgekit.runguard import run_guard, stale_temporaries

TOKEN = "ekt_the-real-token-0123456789"


def test_loads_json_is_bounded_and_strict() -> None:
    assert limits.loads_json(b'{"a": [1, {"b": "\\ud83d\\ude00"}]}') == {"a": [1, {"b": "😀"}]}
    with pytest.raises(ConfigError) as e:
        limits.loads_json('{"a": {"b": 1, "b": 2}, "c": "\\ud800", "d": "\\u0007"}', source="req")
    assert [(p.path, p.source) for p in e.value.problems] == [
        ("$.a.b", "req"),
        ("$.c", "req"),
        ("$.d", "req"),
    ]
    with pytest.raises(ConfigError, match="more than the limit of 10 bytes"):
        limits.loads_json(b'{"a": "0123456789"}', limit=10)
    with pytest.raises(ConfigError, match="nested more than 3 levels"):
        limits.loads_json("[[[[]]]]", max_depth=3)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        limits.loads_json(b'"\xff"')
    with pytest.raises(ConfigError, match="invalid JSON"):
        limits.loads_json("{")


def test_read_json_refuses_special_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f.json")
    with pytest.raises(ConfigError, match=r"f\.json: it is a FIFO"):
        limits.read_json(tmp_path / "f.json")
    (tmp_path / "ok.json").write_text('{"x": 1}')
    assert limits.read_json(tmp_path / "ok.json") == {"x": 1}


def test_full_match_names_and_nothing_trails() -> None:
    with pytest.raises(ConfigError, match="is not a DNS label"):
        config.structure({"name": "store-0042\n"}, Site)
    with pytest.raises(ConfigError, match="is not a valid name"):
        config.loads('name: "quickstart\\n"\n', Forge)
    with pytest.raises(ConfigError, match="is not a Kubernetes version"):
        config.loads(
            'name: x\nimages: [{name: i, profile: p, os: {distribution: d, version: "1"}, '
            'kubernetes: {distribution: k3s, version: "1.30.4\\n"}, repo: r}]\n',
            Forge,
        )


def test_python_data_gets_the_same_rules_as_parsed_documents() -> None:
    with pytest.raises(ConfigError, match=r"\$\.tags\.a: contains a lone surrogate"):
        config.structure({"name": "s", "tags": {"a": "\ud800"}}, Site)
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(5000):  # deeper than the recursion limit: no RecursionError anywhere
        inner["x"] = inner = {}
    with pytest.raises(ConfigError, match=r"nested more than 64 levels deep"):
        config.structure({"stylus": {"extra": deep}, "install": deep}, UserData)


def test_secrets_stay_out_of_reprs_and_dumps() -> None:
    ud = parse_user_data(
        f"#cloud-config\nstylus: {{site: {{edgeHostToken: {TOKEN}}}}}\n"
        "users: [{name: admin, passwd: hunter2-password}]\n"
    )
    for text in (repr(ud), str(ud), config.dump(ud), config.dump(ud, "json")):
        assert TOKEN not in text
        assert "hunter2-password" not in text
    assert "hunter2-password" in render_user_data(ud)  # the device needs it
    assert User(name="a", passwd="x").passwd is not None
    with pytest.raises(ConfigError) as e:
        parse_user_data(f"#cloud-config\nstylus: {{site: {{edgeHostToken: {TOKEN}, prefix: 1}}}}\n")
    assert TOKEN not in repr(e.value)
    assert TOKEN not in repr(e.value.problems)


def test_inventory_with_a_byte_order_mark(tmp_path: Path) -> None:
    csv = tmp_path / "sites.csv"
    csv.write_bytes("name,tags\nstore-1,city=oslo\n".encode("utf-8-sig"))
    rows = read_inventory(csv)
    assert [(s.name, dict(s.tags), line) for s, line in rows] == [("store-1", {"city": "oslo"}, 2)]


def test_user_data_headers() -> None:
    config.check_user_data_header("#cloud-config\n", required=True)
    config.check_user_data_header("install: {}\n", required=False)
    for text in ("#!/bin/bash\n", "#cloud-config-archive\n", "#include\nhttp://x\n"):
        with pytest.raises(ConfigError, match="another cloud-init format"):
            parse_user_data(text)
    with pytest.raises(ConfigError, match="must start with the line"):
        config.check_user_data_header("# hello\n", required=True)


# --- runs: SIGTERM and stale temporaries --------------------------------------------------


def test_sigterm_inside_a_run_unwinds_like_ctrl_c(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    work = tmp_path / "dist" / ".work"

    def step() -> None:
        with run_guard(tmp_path / "dist"):
            work.mkdir()
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # interrupted by the signal
            finally:
                work.rmdir()

    with pytest.raises(KeyboardInterrupt):
        step()
    assert not work.exists()
    assert signal.getsignal(signal.SIGTERM) is before


SCRIPT = """
import sys, tempfile, time
from pathlib import Path
from edgekit.runguard import run_guard
out = Path(sys.argv[1])
with run_guard(out):
    with tempfile.TemporaryDirectory(prefix=".step.", suffix=".work", dir=out) as tmp:
        Path(tmp, "big").write_bytes(b"x" * 1000)
        print(tmp, flush=True)
        time.sleep(60)
"""


def test_a_process_killed_with_sigterm_leaves_no_temporary_directory(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_dir()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    assert not tmp.exists()


def test_leftovers_of_killed_runs_are_removed_unless_a_run_holds_the_lock(
    tmp_path: Path,
) -> None:
    out = tmp_path / "dist"
    stale = [
        out / ".edgekit" / "iso-inputs-ab12cd34",
        out / "iso" / ".inst.iso.k2j4h5g6.work",
        out / "images" / "img" / ".img.tmp-a1b2c3d4",
        out / "images" / "img" / "blobs" / ".tmp-blob-zz99yy88",
        out / "sites" / ".store-1.iso.q1w2e3r4.tmp",
    ]
    keep = [
        out / "manifest.json",
        out / "iso" / "inst.iso",
        out / ".edgekit" / "state.json",
        out / "notes" / ".draft.ab12cd34.tmp",  # not a directory edgekit writes: left alone
    ]
    for p in stale[:3]:
        p.mkdir(parents=True)
        (p / "junk").write_text("x")
    for p in stale[3:] + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert stale_temporaries(out) == sorted(stale)
    holder = os.open(out / ".edgekit" / "run.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with run_guard(out):  # another run is going: its temporaries are not ours to remove
            pass
        assert all(p.exists() for p in stale)
    finally:
        os.close(holder)
    with run_guard(out):
        pass
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)


FORGE_RUN = """
import shutil, subprocess, sys, tempfile
from pathlib import Path
from edgekit.forge import Forge
from edgekit.plugins import ImageBuilder, hookimpl
from edgekit.plugins.manager import PluginManager

class SlowBuilder(ImageBuilder):
    name = "slow"
    def build_image(self, request, ctx):
        work = Path(tempfile.mkdtemp(prefix=".img.", suffix=".work", dir=ctx.output_dir))
        try:
            (work / "layer").write_bytes(b"x" * 100_000)
            tool = subprocess.Popen(["sleep", "60"])  # a tool the step runs
            print(work, flush=True)  # once the tool runs: the signal finds both
            tool.wait()
        finally:
            shutil.rmtree(work, ignore_errors=True)

class Plugin:
    @hookimpl
    def edgekit_image_builders(self):
        return [SlowBuilder]

pm = PluginManager(entry_points=False, disabled="")
pm.register(Plugin(), name="slow")
Forge.load(sys.argv[1], plugins=pm, output_dir=Path(sys.argv[2])).run(kinds=["provider-image"])
"""


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_sigterm_during_a_forge_run_leaves_no_temporary_directory(
    tmp_path: Path, sigint: str
) -> None:
    project = tmp_path / "project"
    (project / "k8s").mkdir(parents=True)
    (project / "edgeforge.yaml").write_text(
        "name: t\nbackends: {imageBuilder: slow}\nprofiles:\n  - name: p\n    version: 1.0.0\n"
        '    packs:\n      - {name: os, layer: os, version: "1"}\n'
        '      - {name: k, layer: k8s, version: "1.30.4", source: {path: ./k8s}}\n'
        "images:\n  - name: img\n    profile: p\n    os: {distribution: d, version: '1'}\n"
        "    kubernetes: {distribution: k3s, version: '1.30.4'}\n    repo: r\n"
    )
    out = tmp_path / "dist"
    command = [sys.executable, "-c", FORGE_RUN, str(project / "edgeforge.yaml"), str(out)]
    if sigint == "ignored":  # as `nohup cmd &` in a script: the run and its tools ignore it
        command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # as a shell starts it: the leader of its process group
    )
    assert proc.stdout is not None
    work = Path(proc.stdout.readline().strip())
    assert work.is_dir()
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) != 0
    assert time.monotonic() - started < 30  # the tool was stopped too, as by Ctrl-C
    assert not work.exists()
    assert stale_temporaries(out) == []
