"""The health gate's webhook: once a wave's hosts pass the gate, the hub POSTs the wave's
status to the gate's URL, and only a 2xx answer lets the wave pass.

The call runs on a small thread pool so the controller (on the server's event loop) never
waits on the network: a tick starts the call, a later tick reads its answer. Answers are not
stored: after a restart, or a resume, the webhook is called again, so a wave never passes
without a fresh 2xx (and never because whoever runs the webhook went away).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import requests

__all__ = ["PENDING", "TIMEOUT", "GateWebhooks"]

#: Seconds one call may take.
TIMEOUT = 10.0
#: What :meth:`GateWebhooks.verdict` answers while the call runs.
PENDING = "pending"


def _post(url: str, payload: Mapping[str, Any]) -> str | None:
    """None for a 2xx answer, else why the gate fails (never the answer's body: it could
    carry anything)."""
    try:
        with requests.post(
            url, json=dict(payload), timeout=TIMEOUT, allow_redirects=False, stream=True
        ) as answer:
            if 200 <= answer.status_code < 300:
                return None
            return f"the gate webhook answered {answer.status_code}"
    except requests.RequestException as exc:
        return f"the gate webhook could not be reached ({type(exc).__name__})"


class GateWebhooks:
    """Calls in flight, by (roll-out, wave index, wave start)."""

    def __init__(self, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="edgekit-gate")
        self._calls: dict[tuple[str, int, float], Future[str | None]] = {}

    def verdict(
        self, key: tuple[str, int, float], url: str, payload: Mapping[str, Any]
    ) -> str | None:
        """:data:`PENDING` while the call for ``key`` runs (the first ask starts it), then
        None (2xx) or why the gate fails; the answer is forgotten once read."""
        call = self._calls.get(key)
        if call is None:
            self._calls[key] = self._pool.submit(_post, url, payload)
            return PENDING
        if not call.done():
            return PENDING
        del self._calls[key]
        return call.result()

    def close(self) -> None:
        """Stop the pool (calls in flight finish in their threads)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
