"""SIGKILL the hub in the middle of a registration load, restart it on the same DB and port."""

from __future__ import annotations

import threading
import time

from edgekit.hub import HubServer
from edgekit.hub.store import HubStore


def test_sigkill_mid_load_loses_no_acknowledged_registration(hub_db: str) -> None:
    hosts, clients = 600, 16
    with HubServer(hub_db, access_log=False) as hub:
        token = hub.client().tokens.create("faults", site="faults", expires_in="1h").secret
        assert token is not None
        acked: list[str] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def client(uids: list[str]) -> None:
            try:
                for uid in uids:
                    # retry_for covers the kill and the restart: the client keeps trying
                    # until its registration is acknowledged.
                    agent = hub.host_client(uid, retry_for=60)
                    agent.register(token, arch="amd64", address="10.2.0.1")
                    with lock:
                        acked.append(uid)
            except BaseException as exc:
                failures.append(exc)

        uids = [f"fault-{i:04d}" for i in range(hosts)]
        threads = [
            threading.Thread(target=client, args=(uids[c::clients],)) for c in range(clients)
        ]
        for t in threads:
            t.start()
        while len(acked) < hosts // 4:  # mid-load
            time.sleep(0.01)
        hub.kill()
        with lock:
            acked_before_kill = list(acked)
        db = HubStore(hub.db_url)  # what the database holds, read with the hub dead
        stored = {r[0] for r in db._db.execute("SELECT uid FROM hosts")}
        db.close()
        # Everything acknowledged before the kill is on disk, with the hub dead.
        assert set(acked_before_kill) <= stored
        time.sleep(0.5)  # clients meanwhile fail and back off
        hub.start()
        for t in threads:
            t.join(timeout=120)
        assert not failures, failures
        assert sorted(acked) == uids
        # No duplicates, and every host is counted once against its token.
        db = HubStore(hub.db_url)
        rows, distinct = db.count_hosts()
        (count,) = db._db.execute("SELECT host_count FROM tokens").fetchone()
        db.close()
        assert rows == distinct == count == hosts
        assert hosts // 4 <= len(acked_before_kill) < hosts  # the kill was mid-load
