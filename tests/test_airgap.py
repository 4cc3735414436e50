"""Registration bundles: written for an airgapped host, verified and imported by the hub."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.errors import RegistrationError
from edgekit.hub.airgap import (
    BUNDLE_FORMAT,
    bundle_key,
    find_bundles,
    fingerprint_from_hash,
    import_registrations,
    make_bundle,
    token_fingerprint,
    write_bundle,
)
from edgekit.hub.security import hash_secret
from edgekit.hub.store import HubStore

HOST = {
    "hostUid": "edge-0001",
    "hostAddress": "10.0.10.25",
    "macAddress": "52:54:00:12:34:56",
    "arch": "amd64",
    "site": "store-042",
    "tags": {"city": "chicago"},
    "agentVersion": "0.1.0",
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HubStore]:
    s = HubStore(tmp_path / "hub.db")
    yield s
    s.close()


def _token(store: HubStore, **kw: object) -> str:
    _, secret = store.create_token("t", expiry=time.time() + 3600, **kw)  # type: ignore[arg-type]
    return secret


def test_key_and_fingerprint_derive_from_the_stored_hash() -> None:
    token = "ekt_example"
    assert bundle_key(token) == hashlib.sha256(token.encode()).digest()
    assert token_fingerprint(token) == hashlib.sha256(bundle_key(token)).hexdigest()[:16]
    assert fingerprint_from_hash(hash_secret(token)) == token_fingerprint(token)


def test_bundle_format_carries_no_secret(tmp_path: Path) -> None:
    token = "ekt_secret-value-123"
    path = write_bundle(tmp_path, token, HOST, now=1_700_000_000)
    assert path.name == "edgekit-registration-edge-0001.json"
    assert path.stat().st_mode & 0o777 == 0o600
    raw = path.read_text()
    doc = json.loads(raw)
    assert doc["format"] == BUNDLE_FORMAT
    payload = json.loads(base64.b64decode(doc["payload"]))
    assert payload["host"] == HOST
    assert payload["created"] == "2023-11-14T22:13:20Z"
    assert payload["tokenFingerprint"] == token_fingerprint(token)
    expected = hmac.new(bundle_key(token), doc["payload"].encode(), hashlib.sha256).hexdigest()
    assert doc["hmac"] == expected
    for secret in (token, hash_secret(token), bundle_key(token).hex()):
        assert secret not in raw
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_bundle_rejects_bad_hosts_and_media(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match="hostUid"):
        make_bundle("t", {**HOST, "hostUid": "../evil"})
    with pytest.raises(RegistrationError, match="not registration fields"):
        make_bundle("t", {**HOST, "password": "x"})
    with pytest.raises(RegistrationError, match="is not a directory"):
        write_bundle(tmp_path / "missing", "t", HOST)


def test_import_registers_like_http_and_is_idempotent(store: HubStore, tmp_path: Path) -> None:
    token = _token(store, site="store-042")
    path = write_bundle(tmp_path, token, HOST)
    (result,) = import_registrations(store, [path])
    assert result.ok, result.error
    assert result.host_uid == "edge-0001"
    assert result.site == "store-042"
    assert result.credential is not None
    assert "ekh_" not in repr(result)
    host = store.get_host("edge-0001")
    assert host is not None
    assert (host.address, host.mac, host.tags) == ("10.0.10.25", "52:54:00:12:34:56", HOST["tags"])
    assert store.host_for_credential(result.credential.reveal()) == host
    # Again: the same host, a rotated credential, one row.
    (again,) = import_registrations(store, [path])
    assert again.ok
    assert again.credential != result.credential
    assert store.count_hosts() == (1, 1)
    token_record = store.list_tokens()[0]
    assert token_record.host_count == 1
    # Credentials hash normally again after the import (the store is left as it was).
    assert store.host_for_credential(again.credential.reveal()) is not None  # type: ignore[union-attr]


def test_import_from_a_database_path(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    s = HubStore(db)
    token = _token(s)
    s.close()
    results = import_registrations(db, [write_bundle(tmp_path, token, HOST)])
    assert [r.ok for r in results] == [True]


def _tamper(path: Path, change: dict[str, object]) -> None:
    doc = json.loads(path.read_text())
    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["host"].update(change)
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    path.write_text(json.dumps(doc))


def test_tampered_bundle_is_refused_and_nothing_stored(store: HubStore, tmp_path: Path) -> None:
    token = _token(store)
    good = write_bundle(tmp_path, token, {**HOST, "hostUid": "edge-0002"})
    bad = write_bundle(tmp_path, token, HOST)
    _tamper(bad, {"site": "other-site"})
    results = import_registrations(store, [bad, good])
    assert not results[0].ok
    assert "fails its HMAC check" in (results[0].error or "")
    assert results[0].path == bad
    assert results[1].ok
    assert store.get_host("edge-0001") is None
    assert store.count_hosts() == (1, 1)


def test_refusals_name_their_cause(store: HubStore, tmp_path: Path) -> None:
    unknown = write_bundle(tmp_path, "ekt_never-issued", HOST)
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "x"}))
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (70 * 1024))
    results = import_registrations(store, [unknown, junk, other, big, tmp_path / "nope.json"])
    errors = [r.error or "" for r in results]
    assert not any(r.ok for r in results)
    assert "token the hub does not know" in errors[0]
    assert "is not JSON" in errors[1]
    assert "is not a registration bundle" in errors[2]
    assert "more than 65536" in errors[3]
    assert "cannot be read" in errors[4]
    assert store.count_hosts() == (0, 0)


def test_token_rules_apply(store: HubStore, tmp_path: Path) -> None:
    token_rec, token = store.create_token("one", expiry=time.time() + 3600, max_hosts=1)
    first = write_bundle(tmp_path, token, HOST)
    second = write_bundle(tmp_path, token, {**HOST, "hostUid": "edge-0009"})
    results = import_registrations(store, [first, second])
    assert results[0].ok
    assert not results[1].ok
    assert "already registered its 1 host(s)" in (results[1].error or "")
    store.set_token_active(token_rec.uid, False)
    (revoked,) = import_registrations(store, [first])
    assert "is revoked" in (revoked.error or "")
    store.set_token_active(token_rec.uid, True)
    store.set_token_expiry(token_rec.uid, time.time() - 1)
    (expired,) = import_registrations(store, [first])
    assert "expired" in (expired.error or "")


def test_site_mismatch_and_invalid_fields(store: HubStore, tmp_path: Path) -> None:
    token = _token(store, site="store-042")
    elsewhere = write_bundle(tmp_path, token, {**HOST, "site": "store-999"})
    bad_ip = write_bundle(tmp_path, token, {**HOST, "hostUid": "edge-3", "hostAddress": "x"})
    results = import_registrations(store, [elsewhere, bad_ip])
    assert "'store-999' is not one of them" in (results[0].error or "")
    assert "store-042" not in (results[0].error or "")
    assert "is not an IP address" in (results[1].error or "")
    assert store.count_hosts() == (0, 0)


def test_max_age(store: HubStore, tmp_path: Path) -> None:
    token = _token(store)
    old = write_bundle(tmp_path, token, HOST, now=time.time() - 7200)
    (result,) = import_registrations(store, [old], max_age=3600)
    assert "more than 3600 s ago" in (result.error or "")
    (fine,) = import_registrations(store, [old], max_age=3 * 3600)
    assert fine.ok


def test_find_bundles(tmp_path: Path) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    b = write_bundle(media, "t", {**HOST, "hostUid": "edge-b"})
    a = write_bundle(media, "t", {**HOST, "hostUid": "edge-a"})
    (media / "notes.txt").write_text("x")
    loose = tmp_path / "loose.json"
    loose.write_text("{}")
    assert find_bundles([media, loose]) == [a, b, loose]
    with pytest.raises(RegistrationError, match="does not exist"):
        find_bundles([tmp_path / "missing"])
    fifo = tmp_path / "bundle.fifo"
    os.mkfifo(fifo)
    with pytest.raises(RegistrationError, match="is neither a bundle file nor a directory"):
        find_bundles([fifo])  # refused without being opened (that would block)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistrationError, match="no registration bundles"):
        find_bundles([empty])


def test_deep_duplicate_or_unstorable_bundles_are_clear_refusals(
    store: HubStore, tmp_path: Path
) -> None:
    """Each is a sentence naming the bundle's problem: no RecursionError, nothing stored."""
    token = _token(store)
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 30000 + b"]" * 30000)
    dup = tmp_path / "dup.json"
    dup.write_text('{"format": "x", "format": "' + BUNDLE_FORMAT + '"}')
    # A genuine HMAC over a payload that nests deeply / holds a lone surrogate.
    nested_payload = base64.b64encode(b'{"host":' * 40 + b"{}" + b"}" * 40).decode()
    surrogate_payload = base64.b64encode(
        json.dumps({"host": {**HOST, "tags": {"x": "\ud800"}}, "tokenFingerprint": "f"}).encode()
    ).decode()
    signed = []
    for name, text in (("nested.json", nested_payload), ("surrogate.json", surrogate_payload)):
        mac = hmac.new(bundle_key(token), text.encode(), hashlib.sha256).hexdigest()
        path = tmp_path / name
        path.write_text(json.dumps({"format": BUNDLE_FORMAT, "payload": text, "hmac": mac}))
        signed.append(path)
    results = import_registrations(store, [deep, dup, *signed, tmp_path])
    errors = [r.error or "" for r in results]
    assert not any(r.ok for r in results)
    assert "nests 30000 levels deep" in errors[0]
    assert "has the key 'format' twice" in errors[1]
    assert "levels deep" in errors[2]
    assert "lone UTF-16 surrogate" in errors[3]
    assert "not a regular file" in errors[4]
    assert store.count_hosts() == (0, 0)


def test_reimport_must_prove_the_host(store: HubStore, tmp_path: Path) -> None:
    """A different bundle for a registered uid is a takeover attempt unless it proves the
    host (hostProof with its credential) or an admin reset the host."""
    from edgekit.hub.domain import Hub

    token = _token(store, site="store-042")
    media = tmp_path / "first"
    media.mkdir()
    first = write_bundle(media, token, HOST)
    (imported,) = import_registrations(store, [first])
    assert imported.ok
    forged = write_bundle(tmp_path, token, {**HOST, "hostAddress": "10.6.6.6"})
    (refused,) = import_registrations(store, [forged])
    assert not refused.ok
    assert "does not prove it is that host" in (refused.error or "")
    host = store.get_host("edge-0001")
    assert host is not None
    assert host.address == "10.0.10.25"
    assert imported.credential is not None
    proven = write_bundle(tmp_path, token, {**HOST, "hostAddress": "10.0.10.26"},
                          credential=imported.credential)  # fmt: skip
    (ok,) = import_registrations(store, [proven])
    assert ok.ok, ok.error
    assert store.get_host("edge-0001").address == "10.0.10.26"  # type: ignore[union-attr]
    wrong = write_bundle(tmp_path, token, HOST, credential="ekh_" + "w" * 40)
    assert not import_registrations(store, [wrong])[0].ok
    Hub(store).reset_host("edge-0001")
    (after_reset,) = import_registrations(store, [wrong])
    assert after_reset.ok, after_reset.error
    assert store.count_hosts() == (1, 1)
