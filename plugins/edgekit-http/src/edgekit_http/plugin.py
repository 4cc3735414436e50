"""The edgekit plugin: the ``http`` and ``file`` registration transports."""

from __future__ import annotations

from collections.abc import Sequence

from edgekit.plugins import Transport, hookimpl

from .transports import FileTransport, HttpTransport

__all__ = ["edgekit_transports"]


@hookimpl
def edgekit_transports() -> Sequence[type[Transport]]:
    """``http`` (the hub's register call) and ``file`` (bundles for airgapped sites)."""
    return [HttpTransport, FileTransport]
