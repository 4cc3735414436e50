"""Typed progress events for pushes and pulls (a CLI renders bytes and rate from them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs

__all__ = [
    "BlobDone",
    "BlobMounted",
    "BlobProgress",
    "BlobSkipped",
    "BlobStarted",
    "ProgressCallback",
    "ProgressEvent",
]

Direction = Literal["push", "pull"]


@attrs.frozen
class BlobStarted:
    """A blob transfer began; *size* bytes will move."""

    digest: str
    size: int
    direction: Direction = "push"


@attrs.frozen
class BlobProgress:
    """*sent* more bytes of the blob moved (*done* of *size* so far)."""

    digest: str
    sent: int
    done: int
    size: int
    direction: Direction = "push"


@attrs.frozen
class BlobDone:
    """The blob transfer finished and was verified."""

    digest: str
    size: int
    direction: Direction = "push"


@attrs.frozen
class BlobSkipped:
    """The blob was already at the destination (HEAD said so, or the layout had it)."""

    digest: str
    size: int
    direction: Direction = "push"


@attrs.frozen
class BlobMounted:
    """The blob was mounted from another repository of the same registry, not uploaded."""

    digest: str
    size: int
    source_repository: str


ProgressEvent = BlobStarted | BlobProgress | BlobDone | BlobSkipped | BlobMounted
ProgressCallback = Callable[[ProgressEvent], None]
