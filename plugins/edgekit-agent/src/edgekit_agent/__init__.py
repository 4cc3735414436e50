"""The on-device edgekit agent: a POSIX sh program for busybox, and its boot hook.

The agent registers its host with the hub named in the user-data, keeps its credential in
``/var/lib/edgekit/``, heartbeats and polls its desired state until it is assigned to a
cluster. :func:`agent_files` says where both files go on the device; the plugin
(:mod:`edgekit_agent.plugin`) adds them to every provider image and installer payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from edgekit.cpio import CpioEntry

__all__ = [
    "AGENT_PATH",
    "AGENT_VERSION",
    "HOOK_PATH",
    "PARTS_DIR",
    "agent_entries",
    "agent_files",
    "agent_parts_dir",
    "agent_script",
    "hook_script",
]

#: Where the agent lives on the device.
AGENT_PATH = "usr/bin/edgekit-agent"
#: Where its sourced parts live on the device (``data/agent/*.sh`` in this package).
PARTS_DIR = "usr/lib/edgekit/agent"
#: The boot hook that runs it (after the installer's 50-edgekit-installer).
HOOK_PATH = "etc/edgekit/boot.d/60-edgekit-agent"
#: Reported to the hub as ``agentVersion``; must match the script's AGENT_VERSION.
AGENT_VERSION = "0.1.0"


def _data(name: str) -> Path:
    # Editable and wheel installs both keep package data as plain files.
    return Path(str(resources.files("edgekit_agent") / "data" / name))


def agent_parts_dir() -> Path:
    """The package's directory of the agent's parts (what ``EDGEKIT_AGENT_PARTS`` names when
    a test sources the agent from the package)."""
    return _data("agent")


def agent_files() -> Mapping[str, Path]:
    """Path on the device (no leading ``/``) -> the file in this package: the agent, its
    parts (``PARTS_DIR/*.sh``) and the boot hook."""
    files = {AGENT_PATH: _data("edgekit-agent"), HOOK_PATH: _data("60-edgekit-agent")}
    for part in sorted(agent_parts_dir().glob("*.sh")):
        files[f"{PARTS_DIR}/{part.name}"] = part
    return files


def agent_script() -> str:
    """The agent's text."""
    return _data("edgekit-agent").read_text()


def hook_script() -> str:
    """The boot hook's text."""
    return _data("60-edgekit-agent").read_text()


def agent_entries() -> list[CpioEntry]:
    """The agent's files as executable cpio members, to append to an initrd."""
    return [CpioEntry.file(path, host, mode=0o755) for path, host in agent_files().items()]
