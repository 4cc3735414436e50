"""Throttling of failed authentication: a sliding window per source address and per target.

A failure is a secret that was presented and is wrong (an API key, a registration token, a
host credential); a missing secret is not a failure. Once a source address has failed
``per_source`` times within ``window`` seconds, or a target (the admin API key, one host's
credential, the registration tokens) has failed ``per_target`` times from anywhere, every
request that would try that source or target again is refused with 429 and ``Retry-After``
*before* the secret is checked, so a guess cannot be confirmed while throttled.

Memory is bounded: at most ``max_keys`` keys are tracked (the stalest are forgotten first),
each with at most its limit of timestamps.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

import attrs

from edgekit.hub.errors import HubError, Refusal

__all__ = ["DEFAULT_THROTTLE", "AuthThrottle", "ThrottleLimits"]


@attrs.frozen
class ThrottleLimits:
    """How many failed authentications are allowed in ``window`` seconds."""

    per_source: int = 10
    per_target: int = 100
    window: float = 60.0
    max_keys: int = 100_000


DEFAULT_THROTTLE = ThrottleLimits()


class AuthThrottle:
    """Counts failed authentications and refuses more once a limit is reached."""

    def __init__(
        self, limits: ThrottleLimits = DEFAULT_THROTTLE, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.limits = limits
        self._clock = clock or time.monotonic
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _keys(self, source: str | None, target: str) -> list[tuple[str, int]]:
        keys = [(f"target:{target}", self.limits.per_target)]
        if source is not None:
            keys.append((f"source:{source}", self.limits.per_source))
        return keys

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.limits.window:
            stamps.popleft()
        return stamps

    def check(self, source: str | None, target: str) -> None:
        """Raise a THROTTLED :class:`HubError` when ``source`` or ``target`` is over its limit."""
        now = self._clock()
        wait = 0.0
        for key, limit in self._keys(source, target):
            stamps = self._recent(key, now)
            if len(stamps) >= limit:
                wait = max(wait, stamps[0] + self.limits.window - now)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise HubError(
                Refusal.THROTTLED,
                "TooManyFailures",
                f"too many failed authentications; retry in {seconds} s",
                retry_after=seconds,
            )

    def failed(self, source: str | None, target: str) -> None:
        """Record one failed authentication of ``source`` against ``target``."""
        now = self._clock()
        for key, limit in self._keys(source, target):
            stamps = self._recent(key, now)
            stamps.append(now)
            while len(stamps) > limit:
                stamps.popleft()
            self._failures[key] = stamps
            self._failures.move_to_end(key)
        while len(self._failures) > self.limits.max_keys:
            self._failures.popitem(last=False)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the failures of these keys (tests and admin tools)."""
        for key in keys:
            self._failures.pop(key, None)
