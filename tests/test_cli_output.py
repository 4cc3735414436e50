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

import cli_runner
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


def run(argv: list[str], env: dict[str, str]):
    # capture_output: stdout and stderr are pipes, never a TTY.
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=120)


def edgekit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """The CLI with ``env`` as its whole environment (default: a script's, ``plain_env()``)."""
    return cli_runner.edgekit(*args, base=env or plain_env(), cwd=cwd)


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

BUGGY_EDGEKIT = """
import sys
import edgekit.dist
from edgekit.cli import main

def inspect_iso(path, *, backend="pycdlib", plugins=None):
    return {"volume_label": 42}["files"]  # stands for a bug in edgekit itself: KeyError

edgekit.dist.inspect_iso = inspect_iso  # what `edgekit iso inspect` calls
main(sys.argv[1:])
"""

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

    def inspect_iso(self, request, ctx):
        return {"volume_label": 42}["files"]  # a bug: KeyError

class Plugin:
    @hookimpl
    def edgekit_iso_assemblers(self):
        return [Buggy]

get_plugin_manager().register(Plugin(), name="buggy-plugin")
main(sys.argv[1:])
"""


def inspect_with(tmp_path: Path, code: str, *flags: str, **env: str):
    argv = ["iso", "inspect", str(tmp_path / "x.iso"), "--backend", "buggy", *flags]
    return python(tmp_path / "buggy.py", code, *argv, env=plain_env(**env))


def test_an_unexpected_error_is_one_line_and_a_hint(tmp_path: Path):
    proc = inspect_with(tmp_path, BUGGY_EDGEKIT)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    first, hint = proc.stderr.strip().splitlines()
    assert first == "error: unexpected KeyError: 'files'"
    assert "EDGEKIT_DEBUG=1" in hint


def test_an_unexpected_error_with_json_is_a_json_document(tmp_path: Path):
    proc = inspect_with(tmp_path, BUGGY_EDGEKIT, "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert doc["error"] == "KeyError"
    assert "Traceback" not in proc.stderr


def test_edgekit_debug_shows_the_traceback_of_an_unexpected_error(tmp_path: Path):
    proc = inspect_with(tmp_path, BUGGY_EDGEKIT, EDGEKIT_DEBUG="1")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert 'return {"volume_label": 42}["files"]' in proc.stderr  # the failing line
    assert proc.stderr.strip().endswith("error: unexpected KeyError: 'files'")
    assert "set EDGEKIT_DEBUG=1" not in proc.stderr  # no hint: the traceback is there


def test_a_backend_bug_is_one_line_naming_the_backend_and_a_hint(tmp_path: Path):
    # The plugin boundary turns the backend's KeyError into a BackendError naming it.
    proc = inspect_with(tmp_path, BUGGY_BACKEND)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    first, hint = proc.stderr.strip().splitlines()
    assert first == (
        "error: iso-assembler 'buggy' (<local>) failed in inspect_iso(): KeyError: 'files' "
        f"(at {tmp_path / 'buggy.py'}:16)"
    )
    assert (
        hint == "This is a bug in the plugin named above; set EDGEKIT_DEBUG=1 to see the traceback."
    )


def test_a_backend_bug_with_json_names_the_error_class(tmp_path: Path):
    proc = inspect_with(tmp_path, BUGGY_BACKEND, "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["error"]) == (False, "BackendError")
    assert "failed in inspect_iso(): KeyError: 'files'" in doc["message"]
    assert proc.stderr == ""


def test_edgekit_debug_shows_the_backend_s_own_traceback(tmp_path: Path):
    proc = inspect_with(tmp_path, BUGGY_BACKEND, EDGEKIT_DEBUG="1")
    assert proc.returncode == 1
    err = proc.stderr
    assert 'return {"volume_label": 42}["files"]' in err  # the plugin's failing line
    assert "The above exception was the direct cause of the following exception" in err
    assert err.strip().splitlines()[-1].startswith("error: iso-assembler 'buggy' (<local>)")
    assert "set EDGEKIT_DEBUG=1" not in err


def test_a_plugin_error_the_user_can_fix_has_no_bug_hint(tmp_path: Path):
    proc = edgekit("iso", "inspect", str(tmp_path / "x.iso"), "--backend", "pycdlb")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(
        "error: no iso-assembler backend named 'pycdlb' (did you mean 'pycdlib'?)"
    )


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
