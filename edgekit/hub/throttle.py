"""Throttling of failed authentication: a sliding window per source address and per target.

A failure is a secret that was presented and is wrong (an API key, a registration token, a
host credential); a missing secret is not a failure. Once a source address has failed
``per_source`` times within ``window`` seconds, or a target (the admin API key, one host's
credential, the registration tokens) has failed ``per_target`` times from anywhere, every
request that would try that source or target again is refused with 429 and ``Retry-After``
*before* the secret is checked, so a guess cannot be confirmed while throttled.

Across replicas: with a store, each failure is also written to the database
(:mod:`edgekit.hub.store_throttle`), and every replica counts, per key, its own failures
(in memory, at once) plus those of the other replicas, read in one query at most once per
``refresh`` seconds. :meth:`AuthThrottle.check` runs on every authenticated request (each
device poll), so it must not cost a query each time: a failure on another replica is
therefore seen here after at most ``refresh`` seconds (1 s). Times are wall-clock
(``time.time``): the replicas are different processes, possibly on different machines.

Memory is bounded: at most ``max_keys`` keys are tracked (the stalest are forgotten first),
each with at most its limit of timestamps; the other replicas' view holds at most
``max_keys`` keys too.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs

from edgekit.hub.dialects import StoreUnavailable
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.store_throttle import FailureLog, RemoteFailures

if TYPE_CHECKING:
    from edgekit.hub.store import HubStore

__all__ = ["DEFAULT_REFRESH", "DEFAULT_THROTTLE", "AuthThrottle", "ThrottleLimits"]

log = logging.getLogger("edgekit.hub")

#: Seconds between two reads of the other replicas' failures (the propagation delay).
DEFAULT_REFRESH = 1.0


@attrs.frozen
class ThrottleLimits:
    """How many failed authentications are allowed in ``window`` seconds."""

    per_source: int = 10
    per_target: int = 100
    window: float = 60.0
    max_keys: int = 100_000


DEFAULT_THROTTLE = ThrottleLimits()


class AuthThrottle:
    """Counts failed authentications and refuses more once a limit is reached.

    ``store``: the hub's store, to share the counts with the other replicas on its database
    (without one, the counts are this process's only).
    """

    def __init__(
        self,
        limits: ThrottleLimits = DEFAULT_THROTTLE,
        *,
        clock: Callable[[], float] | None = None,
        store: HubStore | None = None,
        refresh: float = DEFAULT_REFRESH,
    ) -> None:
        self.limits = limits
        # Wall-clock time only for the shared rows (other processes, other machines); the
        # local counts and the refresh use a monotonic clock, which a clock step (NTP, a
        # resumed VM) cannot stretch. A test's ``clock`` is both.
        self._clock = clock or time.time
        self._mono = clock or time.monotonic
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._log = None if store is None else FailureLog(store, secrets.token_hex(8))
        self._refresh = refresh
        #: When the other replicas' failures were last read (never: -inf).
        self._read_at = -math.inf
        self._others: dict[str, RemoteFailures] = {}

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

    def _read_others(self, mono: float, wall: float) -> None:
        """Re-read the other replicas' failures when the last read is ``refresh`` old."""
        if self._log is None or mono - self._read_at < self._refresh:
            return
        # Stamped first: an unreachable database is retried after ``refresh``, not on
        # every request; the last view is kept meanwhile.
        self._read_at = mono
        try:
            self._others = self._log.others(wall - self.limits.window, self.limits.max_keys)
        except Exception as exc:  # never a 500 for the request that happened to ask
            log.warning("throttle: the other replicas' failures cannot be read: %s", _why(exc))

    def check(self, source: str | None, target: str) -> None:
        """Raise a THROTTLED :class:`HubError` when ``source`` or ``target`` is over its limit."""
        now, wall = self._mono(), self._clock()
        self._read_others(now, wall)
        window = self.limits.window
        wait = 0.0
        for key, limit in self._keys(source, target):
            stamps = self._recent(key, now)
            # Until the oldest failure leaves the window (each clock for its own stamps).
            count, frees = len(stamps), stamps[0] + window - now if stamps else math.inf
            other = self._others.get(key)
            if other is not None and other.oldest > wall - window:
                count += other.count
                frees = min(frees, other.oldest + window - wall)
            if count >= limit:
                wait = max(wait, frees)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise HubError(
                Refusal.THROTTLED,
                "TooManyFailures",
                f"too many failed authentications; retry in {seconds} s",
                retry_after=seconds,
            )

    def failed(self, source: str | None, target: str) -> None:
        """Record one failed authentication of ``source`` against ``target``: counted here
        at once, and written for the other replicas. An unreachable database does not
        make the refusal a 500: the failure still counts here."""
        now = self._mono()
        keys = self._keys(source, target)
        for key, limit in keys:
            stamps = self._recent(key, now)
            stamps.append(now)
            while len(stamps) > limit:
                stamps.popleft()
            self._failures[key] = stamps
            self._failures.move_to_end(key)
        while len(self._failures) > self.limits.max_keys:
            self._failures.popitem(last=False)
        if self._log is not None:
            try:
                self._log.record(keys, self._clock(), self.limits.window)
            except Exception as exc:  # the refusal stays a 401, never a 500
                log.warning("throttle: a failed authentication was not shared: %s", _why(exc))

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the failures of these keys (tests and admin tools)."""
        for key in keys:
            self._failures.pop(key, None)
            self._others.pop(key, None)


def _why(exc: Exception) -> str:
    """What a warning says of a store error: its type and text (no request data in it)."""
    if isinstance(exc, StoreUnavailable):
        return exc.detail
    return f"{type(exc).__name__}: {exc}"
