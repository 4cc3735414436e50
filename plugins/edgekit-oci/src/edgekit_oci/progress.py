"""Progress events the builders report, so a CLI can draw progress bars."""

from __future__ import annotations

from collections.abc import Callable

import attrs

__all__ = ["LayerDone", "LayerProgress", "LayerStarted", "ProgressCallback", "ProgressEvent"]


@attrs.frozen
class LayerStarted:
    """A layer build (or cache lookup) began."""

    layer: str
    #: Total uncompressed bytes of file content in the layer, when known up front.
    total_bytes: int | None = None


@attrs.frozen
class LayerProgress:
    """More uncompressed bytes of a layer were processed; ``bytes_done`` is cumulative."""

    layer: str
    bytes_done: int


@attrs.frozen
class LayerDone:
    """A layer is in the layout; ``cached`` says it came from the layer cache."""

    layer: str
    digest: str
    size: int
    cached: bool


ProgressEvent = LayerStarted | LayerProgress | LayerDone
ProgressCallback = Callable[[ProgressEvent], None]
