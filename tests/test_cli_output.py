"""How the edgekit command behaves outside a wide terminal and when things go wrong:
output never wraps for scripts, a missing extra is one line, and tracebacks appear only
with EDGEKIT_DEBUG=1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from edgekit_iso.siteiso import write_site_iso

ROOT = Path(__file__).resolve().parents[1]


def plain_env(**extra: str) -> dict[str, str]:
    """The environment of a script or CI job: no COLUMNS, no terminal settings."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
    }
    if "VIRTUAL_ENV" in os.environ:
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None):
    # capture_output: stdout and stderr are pipes, never a TTY.
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=120
    )


def edgekit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return run([sys.executable, "-m", "edgekit", *args], env or plain_env(), cwd)


def python(script: Path, code: str, *args: str, env: dict[str, str] | None = None):
    """Run ``code`` as the file ``script`` (so that tracebacks can show its lines)."""
    script.write_text(textwrap.dedent(code))
    return run([sys.executable, str(script), *args], env or plain_env())


# --- no wrapping ------------------------------------------------------------------------


def long_iso(tmp_path: Path) -> Path:
    """A site ISO whose path is far longer than 80 columns."""
    deep = tmp_path / ("a-directory-name-that-is-long-enough-" * 3) / "and-deeper-still"
    deep.mkdir(parents=True)
    iso = deep / "store-with-a-rather-long-name-0042.iso"
    write_site_iso(iso, user_data="#cloud-config\nstylus:\n  site:\n    name: store-42\n")
    return iso


def test_iso_inspect_never_wraps_without_a_terminal(tmp_path: Path):
    iso = long_iso(tmp_path)
    assert len(f"{iso}  label cidata") > 120
    proc = edgekit("iso", "inspect", str(iso))
    assert proc.returncode == 0, proc.stderr
    assert f"{iso}  label cidata" in proc.stdout.splitlines()
    assert "not bootable (no El Torito boot catalog)" in proc.stdout.splitlines()


def test_tables_never_fold_without_a_terminal(tmp_path: Path):
    # The plan's table holds the forge file's long output path in its title and a long
    # summary per step; in a pipe each must stay on one line.
    out = tmp_path / ("an-output-directory-with-a-long-name-" * 3)
    quickstart = ROOT / "examples" / "quickstart" / "edgeforge.yaml"
    proc = edgekit("forge", str(quickstart), "--plan", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert any(str(out) in line for line in proc.stdout.splitlines()), proc.stdout


def test_plain_lines_do_not_wrap_even_on_a_narrow_terminal(tmp_path: Path):
    iso = long_iso(tmp_path)
    proc = edgekit("iso", "inspect", str(iso), env=plain_env(COLUMNS="60"))
    assert proc.returncode == 0, proc.stderr
    # Plain lines are never wrapped, even on a narrow terminal.
    assert f"{iso}  label cidata" in proc.stdout.splitlines()


# --- hub serve without the hub extra ----------------------------------------------------

BLOCK_HUB_EXTRA = """
import sys
for name in ("starlette", "uvicorn"):
    sys.modules[name] = None  # import raises ModuleNotFoundError, as if not installed
from edgekit.cli import main
main(sys.argv[1:])
"""


def test_hub_serve_without_the_hub_extra_is_one_line(tmp_path: Path):
    proc = python(
        tmp_path / "no_extra.py",
        BLOCK_HUB_EXTRA,
        "hub",
        "serve",
        "--port",
        "0",
        "--db",
        str(tmp_path / "h.db"),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pip install 'edgekit[hub]'" in lines[0]
    assert lines[0].startswith("error: ")
    assert not (tmp_path / "h.db").exists()


def test_hub_client_commands_work_without_the_hub_extra(tmp_path: Path):
    # Only serving needs starlette/uvicorn; `token qr` and the admin clients do not.
    env = plain_env(EDGEKIT_REGISTRATION_TOKEN="ekt_no-extra-token")
    proc = python(
        tmp_path / "no_extra.py",
        BLOCK_HUB_EXTRA,
        "token",
        "qr",
        "--endpoint",
        "https://hub.example",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("https://hub.example")


# --- errors and EDGEKIT_DEBUG -----------------------------------------------------------

BUGGY_BACKEND = """
import sys
from edgekit.cli import main
from edgekit.plugins import IsoAssembler, get_plugin_manager, hookimpl

class Buggy(IsoAssembler):
    name = "buggy"

    def build_installer(self, request, ctx):
        raise NotImplementedError

    def build_site_isos(self, requests, ctx):
        raise NotImplementedError

    def inspect_iso(self, path):
        return {"volume_label": 42}["files"]  # a bug: KeyError

class Plugin:
    @hookimpl
    def edgekit_iso_assemblers(self):
        return [Buggy]

get_plugin_manager().register(Plugin(), name="buggy-plugin")
main(sys.argv[1:])
"""


def test_an_unexpected_error_is_one_line_and_a_hint(tmp_path: Path):
    proc = python(
        tmp_path / "buggy.py",
        BUGGY_BACKEND,
        "iso",
        "inspect",
        str(tmp_path / "x.iso"),
        "--backend",
        "buggy",
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    first, hint = proc.stderr.strip().splitlines()
    assert first == "error: unexpected KeyError: 'files'"
    assert "EDGEKIT_DEBUG=1" in hint


def test_an_unexpected_error_with_json_is_a_json_document(tmp_path: Path):
    argv = ["iso", "inspect", str(tmp_path / "x.iso"), "--backend", "buggy", "--json"]
    proc = python(tmp_path / "buggy.py", BUGGY_BACKEND, *argv)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert doc["error"] == "KeyError"
    assert "Traceback" not in proc.stderr


def test_edgekit_debug_shows_the_traceback_of_an_unexpected_error(tmp_path: Path):
    argv = ["iso", "inspect", str(tmp_path / "x.iso"), "--backend", "buggy"]
    proc = python(tmp_path / "buggy.py", BUGGY_BACKEND, *argv, env=plain_env(EDGEKIT_DEBUG="1"))
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert 'return {"volume_label": 42}["files"]' in proc.stderr  # the failing line
    assert "error: unexpected KeyError: 'files'" in proc.stderr


def test_edgekit_debug_shows_the_traceback_of_a_user_error(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: n\nprofiles: []\nimagez: []\n")
    quiet = edgekit("validate", str(bad))
    assert quiet.returncode == 2
    assert "Traceback" not in quiet.stderr
    loud = edgekit("validate", str(bad), env=plain_env(EDGEKIT_DEBUG="1"))
    assert loud.returncode == 2  # the exit code does not change
    assert "Traceback (most recent call last)" in loud.stderr
    assert "ConfigError" in loud.stderr
    assert quiet.stderr.strip() in loud.stderr  # and the message is still there


def test_edgekit_debug_zero_means_off(tmp_path: Path):
    proc = edgekit("iso", "inspect", str(tmp_path / "nope.iso"), env=plain_env(EDGEKIT_DEBUG="0"))
    assert proc.returncode == 1
    assert "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_reader_that_goes_away_is_not_an_error():
    # `edgekit schema | head -1`: the pipe closes before edgekit has written everything.
    # (click turns EPIPE into a quiet exit 1.)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=plain_env(),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even started: every write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert err == ""
