"""The edgekit plugin: puts the agent and its boot hook into images and installer payloads."""

from __future__ import annotations

from collections.abc import Mapping

from edgekit.plugins import hookimpl

from . import agent_files

__all__ = ["edgekit_image_extra_files", "edgekit_installer_payload_files"]


def _files() -> dict[str, str]:
    return {path: str(host) for path, host in agent_files().items()}


@hookimpl
def edgekit_image_extra_files(image_name: str, arch: str) -> Mapping[str, str]:
    """Both files, in every provider image (the script is architecture-independent)."""
    return _files()


@hookimpl
def edgekit_installer_payload_files(iso_name: str) -> Mapping[str, str]:
    """Both files, in the installer initrd, so the installer boot registers the host too."""
    return _files()
