"""Selecting clusters by their labels and profile."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._base import Check, check_name, doc

__all__ = ["Selector"]


@attrs.frozen
class Selector:
    """Clusters whose labels include every one of ``tags`` (and, if given, whose profile is
    called ``profile``)."""

    tags: Mapping[str, str] = attrs.field(factory=dict, metadata=doc("Labels to match, all."))
    profile: str | None = attrs.field(default=None, metadata=doc("A profile name to match."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        with c.rule():
            items: list[tuple[object, object]] = list(self.tags.items())  # checked at run time
            for key, value in items:
                if not isinstance(key, str) or not isinstance(value, str):
                    c.fail("tags", f"{key!r}: {value!r} is not a string label")
        with c.rule():
            if self.profile is not None:
                check_name(c, "profile", self.profile)
        c.done()
