"""The hub's domain errors: what an operation refuses, independent of HTTP.

Every layer raises :class:`HubError`; only the HTTP layer (:mod:`edgekit.hub.routes`) turns a
:class:`Refusal` kind into a status code, and the airgap import into a sentence.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from edgekit.errors import Problem

__all__ = ["HubError", "Refusal"]


class Refusal(enum.Enum):
    """Why an operation was refused (the HTTP layer maps each to one status code)."""

    INVALID = "invalid"  # the request's content breaks a rule (400)
    UNAUTHENTICATED = "unauthenticated"  # no or a wrong secret (401)
    FORBIDDEN = "forbidden"  # a valid secret that may not do this (403)
    NOT_FOUND = "not-found"  # 404
    CONFLICT = "conflict"  # the hub's state does not allow it (409)
    TOO_LARGE = "too-large"  # 413
    UNSUPPORTED_MEDIA = "unsupported-media"  # 415
    THROTTLED = "throttled"  # too many failed authentications (429)
    UNAVAILABLE = "unavailable"  # the database cannot be reached right now (503)


class HubError(Exception):
    """An operation the hub refuses: a :class:`Refusal`, a stable ``code``, a sentence, and
    the request paths of every problem found."""

    def __init__(
        self,
        kind: Refusal,
        code: str,
        message: str,
        problems: Sequence[Problem] = (),
        *,
        retry_after: int | None = None,
        auth_target: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message
        self.problems = tuple(problems)
        self.retry_after = retry_after
        #: Set when the refusal is a failed authentication against this target (a secret
        #: was presented and was wrong): the HTTP layer counts it for throttling.
        self.auth_target = auth_target
