"""Registration transports for edgekit: ``http`` and ``file`` (airgapped sites)."""

from __future__ import annotations

from .transports import FileTransport, HttpTransport, normalise_endpoint

__all__ = ["FileTransport", "HttpTransport", "normalise_endpoint"]
