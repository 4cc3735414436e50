"""``edgekit hub serve`` without the ``hub`` extra: one line naming the fix, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Makes starlette and uvicorn unimportable, as in an install without the extra.
BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("starlette", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from edgekit.cli import main
sys.argv = ["edgekit", "hub", "serve", "--db", sys.argv[1]]
main()
"""


def test_serve_without_the_extra_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK, str(db)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "pip install 'edgekit[hub]'" in lines[0]
    assert not db.exists()  # nothing half-made


def test_clients_import_without_the_extra() -> None:
    code = BLOCK.split("from edgekit.cli")[0] + (
        "import edgekit.hub as hub\n"
        "from edgekit.hub import HostClient, HubClient, TlsFiles, connect, serve\n"
        "from edgekit.hub.airgap import import_registrations\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
