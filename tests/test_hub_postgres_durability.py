"""Durability on replicas: clients hammer two hub replicas sharing one PostgreSQL, one
replica is SIGKILLed mid-load, and every registration and status report a replica
acknowledged (2xx) is in the database afterwards, read with SQLAlchemy (not through the
hub), none twice."""

from __future__ import annotations

import http.client
import json
import threading
import time

import sqlalchemy as sa
from pg_replicas import replicas

from edgekit.hub.migrations import parse_url
from edgekit.hub.security import new_secret
from edgekit.testing import PostgresServer

HOSTS, THREADS, REPORTS = 240, 12, 3


class _Balancer:
    """What a load balancer in front of the replicas does: send to a replica, and on a
    refused or cut connection (or a 503) send the same idempotent request to the next."""

    def __init__(self, ports: list[int], first: int) -> None:
        self.ports, self.at = ports, first
        self.failovers = 0
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.ports[self.at], timeout=30)

    def send(self, method: str, path: str, body: object, headers: dict[str, str]) -> int:
        """Returns the index of the replica that answered 2xx."""
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, f"{method} {path}: no replica answered"
            try:
                self.conn.request(method, path, json.dumps(body), headers)
                response = self.conn.getresponse()
                text = response.read()
            except (OSError, http.client.HTTPException):
                status = 0
            else:
                status = response.status
                if 200 <= status < 300:
                    return self.at
                assert status == 503, f"{method} {path} answered {status}: {text[:200]!r}"
            self.conn.close()
            self.failovers += 1
            self.at = (self.at + 1) % len(self.ports)
            self.conn = self._connect()
            time.sleep(0.01)


def test_acknowledged_writes_survive_sigkill_of_the_replica_that_acked_them(
    hub_postgres: PostgresServer,
) -> None:
    with replicas(hub_postgres, 2) as (url, [a, b]):
        engine = sa.create_engine(parse_url(url)[1])
        try:
            a.start()
            b.start()
            token = a.client().tokens.create("dur", site="dur", expires_in="1h").secret
            assert token is not None
            ports = [a.port, b.port]
            lock = threading.Lock()
            # (uid, report number or 0 for the registration, replica that acknowledged it)
            acked: list[tuple[str, int, int]] = []
            failures: list[BaseException] = []
            failovers: list[int] = []

            def client(n: int, uids: list[str]) -> None:
                balancer = _Balancer(ports, n % 2)  # half the clients start on each replica
                try:
                    for uid in uids:
                        own = new_secret("ekh_")
                        auth = {
                            "Content-Type": "application/json",
                            "Authorization": f"Bearer {own}",
                        }
                        body = {"hostUid": uid, "arch": "amd64", "hostAddress": "10.3.0.1"}
                        at = balancer.send(
                            "POST", "/v1/edgehosts/register", body,
                            {**auth, "EdgeHostToken": token.reveal()},
                        )  # fmt: skip
                        with lock:
                            acked.append((uid, 0, at))
                        for g in range(1, REPORTS + 1):
                            report = {"state": "applied", "message": f"report {g}"}
                            at = balancer.send("POST", f"/v1/edgehosts/{uid}/status", report, auth)
                            with lock:
                                acked.append((uid, g, at))
                except BaseException as exc:
                    failures.append(exc)
                failovers.append(balancer.failovers)

            uids = [f"dur-{i:04d}" for i in range(HOSTS)]
            threads = [
                threading.Thread(target=client, args=(n, uids[n::THREADS])) for n in range(THREADS)
            ]
            for t in threads:
                t.start()
            total = HOSTS * (1 + REPORTS)
            while len(acked) < total // 3:  # mid-load
                assert not failures, failures
                time.sleep(0.01)
            a.kill()
            with lock:
                at_kill = len(acked)
                by_a = [x for x in acked if x[2] == 0]  # what A acknowledged before it died
            assert len(by_a) > 50  # A was serving its share when it died

            def stored() -> tuple[dict[str, int], dict[str, int]]:
                """uid -> number of its stored status report (0: none), and uid -> row count."""
                with engine.connect() as db:
                    rows = db.execute(sa.text("SELECT uid, status FROM hosts")).all()
                generations: dict[str, int] = {}
                counts: dict[str, int] = {}
                for uid, status in rows:
                    counts[uid] = counts.get(uid, 0) + 1
                    # The message names the report: "report g".
                    generations[uid] = (
                        int(json.loads(status)["message"].split()[1]) if status else 0
                    )
                return generations, counts

            # Right after the kill, while B goes on taking writes: everything the dead replica
            # acknowledged is committed (a host's reports come in order, so a stored report
            # numbered at least the acknowledged one means the acknowledged report was written).
            generations, _ = stored()
            lost = [(uid, g) for uid, g, _ in by_a if generations.get(uid, -1) < g]
            assert not lost, lost[:10]
            for t in threads:
                t.join(timeout=180)
            assert not failures, failures
            assert len(acked) == total
            assert at_kill < total * 2 // 3  # the kill was mid-load
            # The clients on A went on through B (each of them failed over once, at least).
            assert sum(1 for f in failovers if f > 0) >= THREADS // 2
            generations, counts = stored()
            assert sorted(counts) == uids
            assert set(counts.values()) == {1}  # none twice
            assert all(generations[uid] == REPORTS for uid in uids)
            with engine.connect() as db:
                (host_count,) = db.execute(sa.text("SELECT host_count FROM tokens")).one()
                created = db.execute(
                    sa.text("SELECT uid, type FROM events WHERE kind = 'host' ORDER BY rev")
                ).all()
            assert host_count == HOSTS  # each host counted once against its token
            firsts = [uid for uid, kind in created if kind == "created"]
            assert sorted(firsts) == uids  # one creation event per host, none twice
        finally:
            engine.dispose()
