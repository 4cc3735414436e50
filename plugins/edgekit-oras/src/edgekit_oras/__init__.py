"""edgekit backend: OCI distribution (push, pull, referrers), streaming and byte-exact.

The engine's public API; the pluggy glue (``plugin.py``) adapts it to edgekit's Publisher.
"""

from __future__ import annotations

from edgekit.oci_ref import LayoutRef, Reference, Target, parse_reference, parse_target

from .client import ConnectionOptions, Credentials, RetryPolicy
from .engine import (
    Descriptor,
    PullResult,
    PushResult,
    build_artifact_manifest,
    is_artifact,
    list_referrers,
    pull,
    pull_artifact,
    pull_to_layout,
    push_artifact,
    push_layout,
    resolve,
)

__all__ = [
    "ConnectionOptions",
    "Credentials",
    "Descriptor",
    "LayoutRef",
    "PullResult",
    "PushResult",
    "Reference",
    "RetryPolicy",
    "Target",
    "build_artifact_manifest",
    "is_artifact",
    "list_referrers",
    "parse_reference",
    "parse_target",
    "pull",
    "pull_artifact",
    "pull_to_layout",
    "push_artifact",
    "push_layout",
    "resolve",
]
