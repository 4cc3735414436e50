"""A simulated fleet: N agents that speak the hub's real HTTP API as the device agent does.

For rehearsing a roll-out plan on thousands of hosts before touching a store, and for tests.
Every simulated host registers with a token (proving itself with a credential it made, as
the device agent does), heartbeats, polls its desired state, and walks an update through
the phases the device reports (``downloading``, ``applying``, ``rebooting``, ``healthy``),
with faults injected per site or per fraction of updates and durations in simulated
seconds (``time_scale`` real seconds each). A ``seed`` makes which hosts fail reproducible.

Design: one scheduler thread keeps a heap of (due time, host) and hands due hosts to a
bounded pool of worker threads that make the HTTP calls over one shared connection pool,
so 10,000 hosts need ``workers`` sockets, not 10,000. A host is never in two workers at once.
The calls go through urllib3 directly, not requests: the simulator is CPU-bound on its own
client (one process plays the whole fleet), and a call costs about a third of the CPU that
way (0.45 against 1.4-1.6 ms per request, measured against the hub's ``/healthz``).
"""

from __future__ import annotations

import enum
import heapq
import html
import json
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import urllib3

from edgekit.errors import EdgekitError
from edgekit.model import Secret

__all__ = [
    "Durations",
    "Fault",
    "Faults",
    "FleetSimulator",
    "SimulatedHost",
    "SimulationReport",
    "run_simulation",
]


class Fault(enum.Enum):
    """What goes wrong with one simulated update (or host)."""

    FAIL_APPLY = "fail-apply"  # reports ``failed`` while applying
    NEVER_REPORT = "never-report"  # stops reporting after its first phase (heartbeats on)
    ROLL_BACK = "roll-back"  # reboots into the new image, which fails: ``rolled-back``
    OFFLINE = "offline"  # stops talking to the hub altogether


@attrs.frozen
class Faults:
    """Which updates fail and how: a share of every update per fault, and faults by site
    (every update of every host of that site). Shares are drawn per (host, generation) from
    the simulator's seed, so a rerun with the same seed fails the same hosts."""

    fail_apply: float = 0.0
    never_report: float = 0.0
    roll_back: float = 0.0
    offline: float = 0.0
    sites: Mapping[str, Fault] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        shares = (self.fail_apply, self.never_report, self.roll_back, self.offline)
        if any(not 0 <= s <= 1 for s in shares) or sum(shares) > 1:
            raise EdgekitError("fault shares must each be in [0, 1] and add up to at most 1")

    def pick(self, rng: random.Random, site: str | None) -> Fault | None:
        """The fault of one update (None: it goes well)."""
        if site is not None and site in self.sites:
            return self.sites[site]
        draw = rng.random()
        for fault, share in (
            (Fault.FAIL_APPLY, self.fail_apply),
            (Fault.NEVER_REPORT, self.never_report),
            (Fault.ROLL_BACK, self.roll_back),
            (Fault.OFFLINE, self.offline),
        ):
            if draw < share:
                return fault
            draw -= share
        return None


@attrs.frozen
class Durations:
    """How long each phase takes, in simulated seconds."""

    download: float = 30.0
    apply: float = 10.0
    reboot: float = 20.0


@attrs.define
class SimulatedHost:
    """One simulated host and what it last told the hub."""

    uid: str
    site: str | None
    arch: str = "amd64"
    credential: Secret | None = None
    phase: str | None = None
    observed_generation: int = 0
    image: str | None = None
    offline: bool = False
    errors: int = 0
    last_error: str | None = None
    #: The first refusal, kept: the cause (a later 429 of the throttle hides it otherwise).
    first_error: str | None = None
    #: The newest generation this host tried (failed, rolled back or went silent on).
    attempted: int = 0
    #: The cluster whose desired states it handles: generations count per cluster, so a host
    #: that joins another cluster starts its generations anew (the device keys what it
    #: handled by ``clusterUid:generation`` for the same reason).
    cluster_uid: str | None = None
    # the update being walked through: (generation, phases left, fault)
    _plan: tuple[int, list[str], Fault | None] | None = None
    # a report the hub did not answer: sent again first on the next turn, as an agent does
    _unsent: dict[str, Any] | None = None


_PHASES = {
    "repave": ["downloading", "applying", "rebooting", "healthy"],
    "reboot": ["applying", "rebooting", "healthy"],
    "in_place": ["applying", "healthy"],
    "none": ["healthy"],
}


#: A uid prefix that keeps ``PREFIX-NNNNN`` a valid host uid (the hub's 128-character rule).
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class FleetSimulator:
    """Simulated agents against the hub at ``url``; use it as a context manager.

    ``hosts`` is a number (uids ``PREFIX-00000``..., ``prefix`` defaulting to ``sim``,
    spread round-robin over ``sites``) or explicit :class:`SimulatedHost` objects. A second
    fleet against the same hub needs another ``prefix``: the first one's uids are
    registered with credentials only that run had. ``poll_interval`` is in simulated seconds
    (the device agent's default is 5).
    """

    def __init__(
        self,
        url: str,
        token: str | Secret,
        hosts: int | Sequence[SimulatedHost],
        *,
        sites: Sequence[str] = (),
        prefix: str = "sim",
        seed: int = 0,
        faults: Faults | None = None,
        durations: Durations | None = None,
        poll_interval: float = 5.0,
        time_scale: float = 0.01,
        workers: int = 16,
        ca_cert: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if time_scale <= 0 or poll_interval <= 0 or workers < 1:
            raise EdgekitError("time_scale and poll_interval must be > 0, workers >= 1")
        if not _PREFIX.fullmatch(prefix):
            raise EdgekitError(
                f"prefix {prefix!r}: use 1-64 letters, digits, '.', '_' or '-', starting with"
                " a letter or digit (it starts every simulated host's uid)"
            )
        self.url = url.rstrip("/")
        self._token = token.reveal() if isinstance(token, Secret) else token
        if isinstance(hosts, int):
            names: list[str | None] = [*sites] or [None]
            hosts = [
                SimulatedHost(f"{prefix}-{i:05d}", names[i % len(names)]) for i in range(hosts)
            ]
        self.hosts: dict[str, SimulatedHost] = {h.uid: h for h in hosts}
        self.seed = seed
        self.faults = faults or Faults()
        self.durations = durations or Durations()
        self.poll_interval = poll_interval
        self.time_scale = time_scale
        self.timeout = timeout
        # retries=False: the simulator backs off by itself, as an agent does (urllib3 would
        # otherwise retry, and sleep on a 429's or 503's Retry-After, inside one turn).
        tls: dict[str, Any] = {} if ca_cert is None else {"ca_certs": ca_cert}
        self._http = urllib3.PoolManager(
            num_pools=1, maxsize=workers, retries=False, timeout=timeout, **tls
        )
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="edgekit-sim")
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests = 0

    def __repr__(self) -> str:
        return f"FleetSimulator({self.url!r}, {len(self.hosts)} hosts)"

    # ----------------------------------------------------------------------- control

    def start(self) -> FleetSimulator:
        """Start every host now (each registers on its first turn)."""
        now = time.monotonic()
        for uid in self.hosts:
            self._schedule(uid, now)
        self._thread = threading.Thread(target=self._run, name="edgekit-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop every host and close the connections."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._pool.shutdown(wait=True)
        self._http.clear()

    def __enter__(self) -> FleetSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>"
            for k, v in sorted(self.counts().items())
        )
        return (
            f"<b>FleetSimulator</b> {html.escape(self.url)}: {len(self.hosts)} hosts, "
            f"{self.requests} requests<table><tr><th>phase</th><th>hosts</th></tr>{cells}</table>"
        )

    def counts(self) -> Counter[str]:
        """Hosts per phase (``unregistered`` before a host registered, ``offline``)."""
        return Counter(
            "offline"
            if h.offline
            else ("unregistered" if h.credential is None else (h.phase or "registered"))
            for h in self.hosts.values()
        )

    def wait(self, predicate: Any, *, timeout: float = 60.0, what: str = "the fleet") -> None:
        """Wait until ``predicate(self)`` is true; EdgekitError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise EdgekitError(
                    f"timed out after {timeout:g} s waiting for {what}: {dict(self.counts())}"
                )
            time.sleep(0.05)

    def wait_registered(self, timeout: float = 60.0) -> None:
        """Wait until every host has registered."""
        self.wait(
            lambda s: all(h.credential is not None for h in s.hosts.values()),
            timeout=timeout,
            what="every host to register",
        )

    def at_generation(self, uids: Iterable[str], generation: int) -> bool:
        """Whether every one of ``uids`` reported ``generation`` and ``healthy``."""
        return all(
            self.hosts[u].observed_generation >= generation
            and self.hosts[u].phase == "healthy"
            and self.hosts[u]._unsent is None
            for u in uids
        )

    # ----------------------------------------------------------------------- the loop

    def _schedule(self, uid: str, due: float) -> None:
        with self._wake:
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, uid))
            self._wake.notify()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                if not self._heap:
                    self._wake.wait(0.1)
                    continue
                due, _, uid = self._heap[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._wake.wait(min(delay, 0.1))
                    continue
                heapq.heappop(self._heap)
            self._pool.submit(self._turn, uid)

    def _turn(self, uid: str) -> None:
        host = self.hosts[uid]
        try:
            delay = self._step(host)
        except (urllib3.exceptions.HTTPError, _Refused, ValueError) as e:
            host.errors += 1
            host.last_error = str(e) if isinstance(e, _Refused) else type(e).__name__
            if host.first_error is None:
                host.first_error = host.last_error
            delay = min(60.0, self.poll_interval * 2 ** min(host.errors, 4))  # back off
        else:
            host.errors = 0
        if delay is not None and not self._stop.is_set():
            self._schedule(uid, time.monotonic() + delay * self.time_scale)

    def _request(self, method: str, url: str, body: Any, headers: dict[str, str]) -> Any:
        """One call; the answer's JSON, or :class:`_Refused` for a 4xx or 5xx."""
        self.requests += 1
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        r = self._http.request(method, url, body=data, headers=headers)
        if r.status >= 400:
            raise _Refused(f"{r.status} {r.reason}: {r.data[:200].decode(errors='replace')}")
        return json.loads(r.data)

    def _call(self, host: SimulatedHost, method: str, suffix: str, body: Any = None) -> Any:
        assert host.credential is not None
        return self._request(
            method,
            f"{self.url}/v1/edgehosts/{host.uid}{suffix}",
            body,
            {"Authorization": f"Bearer {host.credential.reveal()}"},
        )

    def _register(self, host: SimulatedHost) -> None:
        own = Secret("ekh_" + secrets.token_urlsafe(24))
        body: dict[str, Any] = {"hostUid": host.uid, "arch": host.arch, "agentVersion": "sim"}
        if host.site is not None:
            body["site"] = host.site
        answer = self._request(
            "POST",
            f"{self.url}/v1/edgehosts/register",
            body,
            {"EdgeHostToken": self._token, "Authorization": f"Bearer {own.reveal()}"},
        )
        host.credential = Secret(answer["credential"])

    def _report(self, host: SimulatedHost, phase: str, generation: int, message: str = "") -> None:
        body: dict[str, Any] = {"phase": phase, "observedGeneration": generation}
        if message:
            body["message"] = message
        # The device is there whether the hub heard it or not (a hub killed after committing
        # the report but before answering): it keeps the report and sends it again, and
        # never walks an update it finished a second time.
        host.phase, host.observed_generation, host._unsent = phase, generation, body
        self._call(host, "POST", "/status", body)
        host._unsent = None

    def _step(self, host: SimulatedHost) -> float | None:
        """One turn of one host; returns the simulated seconds until its next turn."""
        if host.offline:
            return None
        if host.credential is None:
            self._register(host)
            return 0.0
        if host._unsent is not None:
            self._call(host, "POST", "/status", host._unsent)
            host._unsent = None
            return 0.0
        if host._plan is not None:
            return self._advance(host)
        self._call(host, "POST", "/heartbeat", {})
        desired = self._call(host, "GET", "/desired-state").get("desired")
        if desired and desired.get("clusterUid") != host.cluster_uid:
            host.cluster_uid, host.observed_generation, host.attempted = (
                desired.get("clusterUid"),
                0,
                0,
            )
        if desired and int(desired["generation"]) > max(host.observed_generation, host.attempted):
            gen = int(desired["generation"])
            rng = random.Random(f"{self.seed}:{host.uid}:{gen}")
            fault = self.faults.pick(rng, host.site)
            if fault is Fault.OFFLINE:
                host.offline = True
                return None
            # A join or a release has nothing to install: the host reports healthy at once.
            kind = desired.get("upgrade", "none") if desired.get("action") == "update" else "none"
            host._plan = (gen, list(_PHASES.get(kind, _PHASES["none"])), fault)
            return self._advance(host)
        return self.poll_interval

    def _advance(self, host: SimulatedHost) -> float | None:
        assert host._plan is not None
        gen, phases, fault = host._plan
        phase = phases.pop(0)
        previous = host.observed_generation
        if phase == "healthy":
            host._plan = None
            self._report(host, "healthy", gen)
            return self.poll_interval
        if phase == "applying" and fault is Fault.FAIL_APPLY:
            host._plan, host.attempted = None, gen  # a device does not retry by itself
            self._report(host, "failed", previous, "simulated: the update failed to apply")
            return self.poll_interval
        if phase == "rebooting" and fault is Fault.ROLL_BACK:
            host._plan, host.attempted = None, gen
            self._report(
                host, "rolled-back", previous, "simulated: the new image did not confirm health"
            )
            return self.poll_interval
        self._report(host, phase, previous)
        if fault is Fault.NEVER_REPORT:
            host._plan, host.attempted = None, gen  # heartbeats on, never reports again
            return self.poll_interval
        durations = {"downloading": self.durations.download, "applying": self.durations.apply}
        return durations.get(phase, self.durations.reboot)


class _Refused(Exception):
    """The hub answered a 4xx or 5xx (the text: status, reason, the body's start)."""


@attrs.frozen
class SimulationReport:
    """What :func:`run_simulation` saw: hosts per phase at the end, and the requests made."""

    hosts: int
    counts: Mapping[str, int]
    requests: int
    seconds: float
    #: Why hosts are still unregistered: the hub's last answer to each, the first few
    #: distinct ones by uid (a run whose hosts never registered must say why).
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As ``edgekit simulate --json`` prints it."""
        return {
            "hosts": self.hosts,
            "counts": dict(sorted(self.counts.items())),
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "errors": list(self.errors),
        }


def _unregistered_errors(sim: FleetSimulator, limit: int = 3) -> tuple[str, ...]:
    # The first refusals first (the cause), then the last ones (what the hub says now).
    unregistered = [
        sim.hosts[uid] for uid in sorted(sim.hosts) if sim.hosts[uid].credential is None
    ]
    seen: list[str] = []
    for e in [h.first_error for h in unregistered] + [h.last_error for h in unregistered]:
        if e and e not in seen:
            seen.append(e)
            if len(seen) == limit:
                break
    return tuple(seen)


def run_simulation(
    url: str,
    token: str | Secret,
    hosts: int,
    *,
    seconds: float,
    on_tick: Any = None,
    **options: Any,
) -> SimulationReport:
    """Run ``hosts`` simulated agents against ``url`` for ``seconds`` real seconds.

    ``options`` are :class:`FleetSimulator`'s; ``on_tick(counts)`` is called about once a
    second (for progress). Returns the counts at the end.
    """
    started = time.monotonic()
    with FleetSimulator(url, token, hosts, **options) as sim:
        while (left := seconds - (time.monotonic() - started)) > 0:
            time.sleep(min(1.0, left))
            if on_tick is not None:
                on_tick(sim.counts())
        counts = sim.counts()
        errors = _unregistered_errors(sim)
    return SimulationReport(hosts, counts, sim.requests, time.monotonic() - started, errors)
