"""What the hub does with hostile requests: strict bodies, re-registration that must prove
the device, throttled failures, strong API keys, private files, and no half-done request.

Most tests drive the real ASGI application in-process over a real SQLite store (fast); the
stream test runs the real server."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hub_asgi import Answer, call, post_json
from starlette.applications import Starlette

from edgekit.errors import ConfigError
from edgekit.hub import views
from edgekit.hub.routes import create_app
from edgekit.hub.security import new_secret
from edgekit.hub.server import api_key_problem, ensure_api_key
from edgekit.hub.store import HubStore
from edgekit.hub.throttle import AuthThrottle, ThrottleLimits

KEY = new_secret("eka_")
ADMIN = {"ApiKey": KEY}


@pytest.fixture
def store(hub_db: str) -> Iterator[HubStore]:
    s = HubStore(hub_db)
    ensure_api_key(s, KEY)
    yield s
    s.close()


@pytest.fixture
def app(store: HubStore) -> Starlette:
    return create_app(store, max_body=16 * 1024)


def _token(app: Starlette, site: str | None = "store-1") -> str:
    spec: dict[str, Any] = {"expiry": "2999-01-01T00:00:00Z"}
    if site is not None:
        spec["site"] = site
    answer = post_json(
        app, "/v1/edgehosts/tokens", {"metadata": {"name": f"t-{site}"}, "spec": spec},
        headers=ADMIN,
    )  # fmt: skip
    assert answer.status == 201, answer.body
    return str(answer.json()["spec"]["token"])


def _register(app: Starlette, token: str, uid: str, credential: str | None = None,
              **fields: Any) -> Answer:  # fmt: skip
    headers = {"EdgeHostToken": token}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    return post_json(app, "/v1/edgehosts/register", {"hostUid": uid, **fields}, headers=headers)


def _search(app: Starlette) -> Answer:
    return post_json(app, "/v1/dashboard/edgehosts/search", {}, headers=ADMIN)


def _rows(store: HubStore) -> int:
    return store.count_hosts()[0]


# -- bodies -----------------------------------------------------------------------------------
def test_a_lone_surrogate_in_a_tag_is_refused_and_search_still_works(
    app: Starlette, store: HubStore
) -> None:
    """The regression of issue 9: one registration used to take the fleet view down."""
    token = _token(app)
    raw = b'{"hostUid": "edge-1", "tags": {"city": "\\ud800"}}'
    answer = call(app, "POST", "/v1/edgehosts/register", body=raw,
                  headers={"Content-Type": "application/json", "EdgeHostToken": token})  # fmt: skip
    assert answer.status == 400
    assert answer.json()["code"] == "InvalidText"
    assert answer.json()["problems"][0]["path"] == "$.tags.city"
    assert _rows(store) == 0
    found = _search(app)
    assert found.status == 200
    assert found.json()["items"] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hostUid", "edge-nl\n"),
        ("hostUid", "edge\u0000x"),
        ("hostAddress", "10.0.0.1\u0085"),
        ("site", "store-1\ud83d"),
        ("agentVersion", "1.0\u001b[31m"),
        ("tags", {"ke\udfffy": "v"}),
    ],
)
def test_bad_text_anywhere_is_refused_before_anything_is_stored(
    app: Starlette, store: HubStore, field: str, value: Any
) -> None:
    token = _token(app)
    body = {"hostUid": "edge-2", field: value}
    raw = json.dumps(body).encode()  # ensure_ascii: surrogates travel as \\u escapes
    answer = call(app, "POST", "/v1/edgehosts/register", body=raw,
                  headers={"Content-Type": "application/json", "EdgeHostToken": token})  # fmt: skip
    assert 400 <= answer.status < 500, answer.body
    assert _rows(store) == 0
    assert _search(app).status == 200


def test_status_messages_with_bad_text_are_refused(app: Starlette, store: HubStore) -> None:
    token = _token(app)
    reg = _register(app, token, "edge-3")
    bearer = {"Authorization": f"Bearer {reg.json()['credential']}"}
    for message in ("disk\ud800full", "a\u0007b"):
        raw = json.dumps({"state": "failed", "message": message}).encode()
        answer = call(app, "POST", "/v1/edgehosts/edge-3/status", body=raw,
                      headers={"Content-Type": "application/json", **bearer})  # fmt: skip
        assert answer.status == 400
    assert store.get_host("edge-3").status is None  # type: ignore[union-attr]
    assert _search(app).status == 200


def test_only_json_bodies_are_read(app: Starlette, store: HubStore) -> None:
    token = _token(app)
    body = json.dumps({"hostUid": "edge-4"}).encode()
    for media in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"EdgeHostToken": token}
        if media is not None:
            headers["Content-Type"] = media
        answer = call(app, "POST", "/v1/edgehosts/register", body=body, headers=headers)
        assert answer.status == 415, media
        assert answer.json()["code"] == "UnsupportedMediaType"
    with_charset = {"Content-Type": "application/json; charset=utf-8", "EdgeHostToken": token}
    ok = call(app, "POST", "/v1/edgehosts/register", body=body, headers=with_charset)
    assert ok.status == 200
    assert _rows(store) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 30000 + b"]" * 30000,  # 60 KB of nesting: was a RecursionError (500)
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"hostUid": "edge-5", "hostUid": "edge-6"}',  # duplicate key: the second won
        b'{"hostUid": "edge-5", "tags": {"a": "1", "a": "2"}}',
        b'{"hostUid": "edge-5", "x": NaN}',
        b'{"hostUid": "edge-5", "x": 1e400}',  # inf: could be stored, never answered
        b"\xff\xfe{}",
    ],
)
def test_ambiguous_or_deep_json_is_a_4xx(app: Starlette, store: HubStore, raw: bytes) -> None:
    token = _token(app)
    for path, headers in (
        ("/v1/edgehosts/register", {"EdgeHostToken": token}),
        ("/v1/edgehosts/tokens", ADMIN),
        ("/v1/spectroclusters/edge-native", ADMIN),
        ("/v1/dashboard/edgehosts/search", ADMIN),
    ):
        answer = call(app, "POST", path, body=raw,
                      headers={"Content-Type": "application/json", **headers})  # fmt: skip
        assert answer.status in (400, 413), (path, answer.body[:200])
        assert answer.json()["code"] in ("MalformedJson", "PayloadTooLarge")
    assert _rows(store) == 0


def test_a_failed_request_leaves_no_row(
    app: Starlette, store: HubStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the write (here: rendering the answer) rolls the request back."""
    token = _token(app)

    def broken(*args: object, **kw: object) -> dict[str, Any]:
        raise RuntimeError("rendering failed")

    monkeypatch.setattr("edgekit.hub.routes.hosts.host_json", broken)
    answer = _register(app, token, "edge-7")
    assert answer.status == 500
    assert answer.json() == {"code": "InternalError", "message": "internal error"}
    monkeypatch.setattr("edgekit.hub.routes.hosts.host_json", views.host_json)
    assert _rows(store) == 0
    assert store.list_tokens()[0].host_count == 0
    assert _register(app, token, "edge-7").status == 200


# -- re-registration --------------------------------------------------------------------------
def test_reregistration_must_prove_the_device(app: Starlette, store: HubStore) -> None:
    token = _token(app, "store-1")
    first = _register(app, token, "edge-8", hostAddress="10.0.0.8")
    credential = first.json()["credential"]
    # The same site's token, without the credential: refused, nothing changes.
    again = _register(app, token, "edge-8", hostAddress="10.6.6.6")
    assert (again.status, again.json()["code"]) == (409, "HostAlreadyRegistered")
    wrong = _register(app, token, "edge-8", credential="ekh_" + "x" * 40, hostAddress="10.6.6.6")
    assert (wrong.status, wrong.json()["code"]) == (409, "HostAlreadyRegistered")
    # A token with no site cannot take the host over by naming its site.
    anywhere = _token(app, None)
    takeover = _register(app, anywhere, "edge-8", site="store-1", hostAddress="10.6.6.6")
    assert takeover.status == 409
    host = store.get_host("edge-8")
    assert host is not None
    assert host.address == "10.0.0.8"
    assert store.host_for_credential(credential) is not None  # the device still works
    # With its credential: re-registered, a new credential.
    proven = _register(app, token, "edge-8", credential=credential, hostAddress="10.0.0.9")
    assert proven.status == 200
    assert proven.json()["credential"] != credential
    assert proven.json()["spec"]["hostAddress"] == "10.0.0.9"


def test_a_retry_after_a_lost_answer_is_the_same_device(app: Starlette, store: HubStore) -> None:
    token = _token(app)
    own = new_secret("ekh_")
    first = _register(app, token, "edge-9", credential=own)
    assert first.json()["credential"] == own  # a new host keeps the credential it brought
    # The answer was lost: the host retries with the same credential, twice.
    retry = _register(app, token, "edge-9", credential=own)
    retry2 = _register(app, token, "edge-9", credential=own)
    assert retry.status == retry2.status == 200
    latest = retry2.json()["credential"]
    assert store.host_for_credential(latest) is not None
    # Once the new credential was used, the old one proves nothing any more.
    assert _register(app, token, "edge-9", credential=own).status == 409
    weak = _register(app, token, "edge-10", credential="short")
    assert weak.status == 400
    assert weak.json()["problems"][0]["path"] == "Authorization"


def test_admin_reset_lets_a_reimaged_device_register(app: Starlette, store: HubStore) -> None:
    token = _token(app)
    credential = _register(app, token, "edge-11").json()["credential"]
    assert call(app, "POST", "/v1/edgehosts/edge-11/reset").status == 401
    reset = call(app, "POST", "/v1/edgehosts/edge-11/reset", headers=ADMIN)
    assert reset.status == 200
    assert store.host_for_credential(credential) is None  # revoked at once
    assert call(app, "POST", "/v1/edgehosts/ghost/reset", headers=ADMIN).status == 404
    other_site = _token(app, "store-2")
    assert _register(app, other_site, "edge-11").json()["code"] == "HostSiteConflict"
    again = _register(app, token, "edge-11")
    assert again.status == 200
    # The reset is used up.
    assert _register(app, token, "edge-11").status == 409
    assert store.count_hosts() == (1, 1)


# -- throttling -------------------------------------------------------------------------------
def test_failed_api_keys_are_throttled_per_source(store: HubStore) -> None:
    app = create_app(store, throttle=ThrottleLimits(per_source=3, per_target=1000, window=60))
    wrong = {"ApiKey": "eka_wrong"}
    for _ in range(3):
        assert call(app, "GET", "/v1/edgehosts/tokens", headers=wrong).status == 401
    limited = call(app, "GET", "/v1/edgehosts/tokens", headers=wrong)
    assert limited.status == 429
    assert limited.json()["code"] == "TooManyFailures"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # While throttled even the right key is not checked (a guess cannot be confirmed).
    assert call(app, "GET", "/v1/edgehosts/tokens", headers=ADMIN).status == 429
    # Another source is not affected.
    other = call(app, "GET", "/v1/edgehosts/tokens", headers=ADMIN, client="192.0.2.99")
    assert other.status == 200


def test_failed_tokens_and_credentials_are_throttled_per_target(store: HubStore) -> None:
    app = create_app(store, throttle=ThrottleLimits(per_source=1000, per_target=2, window=60))
    token = _token(app)
    credential = _register(app, token, "edge-12").json()["credential"]
    for i in range(2):
        bad = _register(app, "ekt_nope", "edge-13", client=f"198.51.100.{i}")
        assert bad.status == 401
    assert _register(app, "ekt_nope", "edge-13", client="198.51.100.9").status == 429
    nope = {"Authorization": "Bearer ekh_" + "n" * 40}
    for i in range(2):
        r = call(app, "GET", "/v1/edgehosts/edge-12", headers=nope, client=f"203.0.113.{i}")
        assert r.status == 401
    r = call(app, "GET", "/v1/edgehosts/edge-12",
             headers={"Authorization": f"Bearer {credential}"}, client="203.0.113.50")  # fmt: skip
    assert r.status == 429
    assert "retry-after" in r.headers


def test_the_window_slides() -> None:
    now = [1000.0]
    throttle = AuthThrottle(ThrottleLimits(per_source=2, per_target=10, window=30),
                            clock=lambda: now[0])  # fmt: skip
    throttle.failed("a", "admin")
    now[0] += 20
    throttle.failed("a", "admin")
    with pytest.raises(Exception, match="retry in 10 s"):
        throttle.check("a", "admin")
    now[0] += 10.5
    throttle.check("a", "admin")  # the first failure left the window
    bounded = AuthThrottle(ThrottleLimits(max_keys=100))
    for i in range(1000):
        bounded.failed(f"10.0.{i // 256}.{i % 256}", f"host:h{i}")
    assert len(bounded._failures) <= 100


# -- API key, files, streams ------------------------------------------------------------------
WEAK_KEYS = ["k", "x" * 40, "password" * 4, "a1" * 16, "eka_ hunter2 hunter2 hunter2 hunter2"]


@pytest.mark.parametrize("key", WEAK_KEYS)
def test_weak_api_keys_are_refused(tmp_path: Path, key: str) -> None:
    assert api_key_problem(key) is not None
    s = HubStore(tmp_path / "hub.db")
    try:
        with pytest.raises(ConfigError) as err:
            ensure_api_key(s, key)
        assert len(key) < 8 or key not in str(err.value)  # never echoed
    finally:
        s.close()
    assert api_key_problem(new_secret("eka_")) is None
    assert api_key_problem(os.urandom(16).hex()) is None  # 128 bits as hex


def test_database_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        s = HubStore(tmp_path / "hub.db")
        ensure_api_key(s, KEY)
        files = sorted(p.name for p in tmp_path.iterdir())
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        s.close()
    finally:
        os.umask(old)
    assert files == ["hub.db", "hub.db-shm", "hub.db-wal"]
    assert set(modes.values()) == {0o600}, modes


def test_generated_key_alone_on_stdout_logs_on_stderr(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_HUB_API_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit.hub.server", "--db", str(tmp_path / "hub.db"),
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        key = line.rsplit(" ", 1)[1].strip()
        assert "generated admin API key" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/v1/edgehosts/tokens",
                                 headers={"ApiKey": key}, timeout=5)  # fmt: skip
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200
    finally:
        watchdog.cancel()
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert out.strip() == ""  # nothing but the key line, read above
    assert "GET /v1/edgehosts/tokens" in err  # the access log is on stderr
    assert key not in err
    db = sqlite3.connect(tmp_path / "hub.db")
    assert key not in str(db.execute("SELECT * FROM settings").fetchall())
    db.close()


def test_multi_line_text_is_text_but_other_controls_are_not() -> None:
    # A pack's `values: |` YAML travels as a JSON string with newlines: it must be storable.
    from edgekit.hub.wire import text_problems

    assert list(text_problems({"packs": [{"values": "a: 1\r\nb:\n\t- 2\n"}]})) == []
    (problem,) = text_problems({"packs": [{"values": "a: 1\u0007"}]})
    assert problem.path == "$.packs[0].values"
