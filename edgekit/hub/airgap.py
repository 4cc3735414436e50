"""Registration bundles: how a host at an airgapped site registers through removable media.

A host without a route to the hub writes a **registration bundle** (the ``file`` transport,
or the agent with ``edgekit.agent.transport=file``); someone carries the media to the hub,
where :func:`receive_bundles` collects them through the registration transport (the
``file`` transport's ``receive``; a plugin's store-and-forward transport the same way) and
:func:`import_registrations` verifies each bundle and registers its host through the same
transaction as ``POST /v1/edgehosts/register``.

Design. The hub stores only ``sha256(token)``, never the token, so the bundle cannot be
checked against the token itself. Both sides know ``K = sha256(token)`` (32 raw bytes: the
host has the token, the hub has its stored hex digest), so the bundle is authenticated with
``HMAC-SHA256(K, payload)``. To find the token without trying every one, the bundle names it
by a fingerprint, ``sha256(K)`` truncated to 16 hex digits: derived from ``K`` only, it is
computable by the hub from its stored hash, and reveals nothing usable about the token
(recovering ``K`` from it would need a sha256 preimage). The bundle never carries the token
or ``K``.

Format (JSON, UTF-8, one object)::

    {"format": "edgekit-registration/v1",
     "payload": "<base64 of compact JSON>",
     "hmac": "<64 hex digits: HMAC-SHA256(K, the payload's base64 text as ASCII)>",
     "hostProof": "<optional, 64 hex digits: HMAC-SHA256(sha256(credential), same text)>"}

The payload is ``{"host": {hostUid, hostAddress, macAddress, arch, site, tags,
agentVersion}, "tokenFingerprint": "...", "created": "<RFC 3339 UTC>", "nonce": "<hex>"}``.
MACing the base64 text, not parsed JSON, means no canonical JSON is needed, so a POSIX-sh
writer on the device produces the same bytes a Python one does.

Re-registration follows the HTTP rule (:mod:`edgekit.hub.domain`): a bundle for a uid that
is already registered is imported only if it is the very bundle that registered it (a
replay changes nothing but the credential), carries a ``hostProof`` made with the host's
current credential (the hub stores ``sha256(credential)``, the same kind of key as ``K``),
or the host was reset by an admin. Bundles are decoded by the hub's strict JSON rules
(:mod:`edgekit.hub.wire`): deep nesting, duplicate keys and unstorable text are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from edgekit.errors import Problem, RegistrationError
from edgekit.hub.domain import Hub, host_fields
from edgekit.hub.errors import HubError
from edgekit.hub.security import Secret, hash_secret
from edgekit.hub.store import HubStore
from edgekit.hub.wire import decode_json

if TYPE_CHECKING:
    from edgekit.plugins.manager import PluginManager

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_SUFFIX",
    "MAX_BUNDLE_SIZE",
    "ImportResult",
    "bundle_key",
    "find_bundles",
    "fingerprint_from_hash",
    "import_registrations",
    "make_bundle",
    "receive_bundles",
    "token_fingerprint",
    "write_bundle",
]

BUNDLE_FORMAT = "edgekit-registration/v1"
#: Bundles are named ``edgekit-registration-<hostUid>.json``.
BUNDLE_PREFIX = "edgekit-registration-"
BUNDLE_SUFFIX = ".json"
#: A bundle holds a host record: kilobytes. Larger files are refused unread.
MAX_BUNDLE_SIZE = 64 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: The host fields a bundle may carry (Palette's names, as the register call takes them).
HOST_FIELDS = ("hostUid", "hostAddress", "macAddress", "arch", "site", "tags", "agentVersion")


def bundle_key(token: str | Secret) -> bytes:
    """``K``: the raw 32 bytes of sha256(token), the HMAC key both sides know."""
    secret = token.reveal() if isinstance(token, Secret) else token
    return bytes.fromhex(hash_secret(secret))


def fingerprint_from_hash(token_hash: str) -> str:
    """The token fingerprint from the hub's stored hex ``sha256(token)``."""
    return hashlib.sha256(bytes.fromhex(token_hash)).hexdigest()[:16]


def token_fingerprint(token: str | Secret) -> str:
    """The token fingerprint: the first 16 hex digits of sha256(sha256(token))."""
    return hashlib.sha256(bundle_key(token)).hexdigest()[:16]


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _host_fields(host: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(host) - set(HOST_FIELDS))
    if unknown:
        raise RegistrationError(
            f"host fields {', '.join(unknown)} are not registration fields "
            f"(known: {', '.join(HOST_FIELDS)})"
        )
    uid = host.get("hostUid")
    if not isinstance(uid, str) or not _SAFE_UID.fullmatch(uid):
        raise RegistrationError(
            f"hostUid {uid!r} must be 1-128 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit"
        )
    return {k: v for k, v in host.items() if v is not None}


def make_bundle(
    token: str | Secret,
    host: Mapping[str, Any],
    *,
    now: float | None = None,
    credential: str | Secret | None = None,
) -> bytes:
    """The bytes of a registration bundle for ``host`` (Palette field names) and ``token``.

    ``credential``: the host's current credential, when it has one (an earlier registration
    carried back, or one over HTTP); the bundle then proves it is that host
    (``hostProof``), which re-registering an already registered uid requires.
    """
    fields = _host_fields(host)
    payload = {
        "host": fields,
        "tokenFingerprint": token_fingerprint(token),
        "created": _rfc3339(time.time() if now is None else now),
        "nonce": secrets.token_hex(16),
    }
    text = base64.b64encode(
        json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    ).decode("ascii")
    mac = hmac.new(bundle_key(token), text.encode("ascii"), hashlib.sha256).hexdigest()
    document = {"format": BUNDLE_FORMAT, "payload": text, "hmac": mac}
    if credential is not None:
        document["hostProof"] = hmac.new(
            bundle_key(credential), text.encode("ascii"), hashlib.sha256
        ).hexdigest()
    return (json.dumps(document, indent=2) + "\n").encode()


def write_bundle(
    directory: str | os.PathLike[str],
    token: str | Secret,
    host: Mapping[str, Any],
    *,
    now: float | None = None,
    credential: str | Secret | None = None,
) -> Path:
    """Write ``host``'s bundle into ``directory`` atomically (temporary name, fsync, rename).

    One file per host (``edgekit-registration-<hostUid>.json``): writing again replaces it.
    """
    data = make_bundle(token, host, now=now, credential=credential)
    folder = Path(directory)
    if not folder.is_dir():
        raise RegistrationError(f"registration media {folder} is not a directory")
    dest = folder / f"{BUNDLE_PREFIX}{host['hostUid']}{BUNDLE_SUFFIX}"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise RegistrationError(f"cannot write to {folder}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o600)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RegistrationError(f"cannot write {dest}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


# -- import ----------------------------------------------------------------------------------
@attrs.frozen
class ImportResult:
    """What importing one bundle did: ``ok`` and the host, or the ``error`` that refused it
    (a sentence about the bundle, e.g. "fails its HMAC check: ..."; ``path`` names it).

    ``credential`` is the host's new credential (as an HTTP registration would return it);
    it reaches the device only if someone carries it back.
    """

    path: Path
    ok: bool
    host_uid: str | None = None
    site: str | None = None
    token_uid: str | None = None
    error: str | None = None
    credential: Secret | None = attrs.field(default=None, repr=False)


class BundleError(RegistrationError):
    """A bundle that is unreadable, malformed, forged or refused by the hub's rules."""


def _json(raw: bytes, what: str) -> Any:
    """``raw`` decoded by the hub's strict JSON rules (bounded depth, no duplicate keys,
    clean text), or a :class:`BundleError` that says why."""
    try:
        return decode_json(raw, limit=MAX_BUNDLE_SIZE, what=what)
    except HubError as exc:
        detail = "; ".join(str(p) for p in exc.problems)
        reason = exc.message + (f": {detail}" if detail else "")
        if exc.code == "MalformedJson" and what == "the bundle":
            raise BundleError(f"is not JSON: {reason}") from None
        raise BundleError(f"is refused: {reason}") from None


def _load(path: Path) -> tuple[str, str, dict[str, Any], str | None]:
    """(payload text, hmac hex, decoded payload, host proof hex) of the bundle at ``path``."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise BundleError("cannot be read: it is not a regular file")
        size = info.st_size
        if size > MAX_BUNDLE_SIZE:
            raise BundleError(f"is {size} bytes, more than {MAX_BUNDLE_SIZE}")
        with path.open("rb") as stream:
            raw = stream.read(MAX_BUNDLE_SIZE + 1)
    except OSError as exc:
        raise BundleError(f"cannot be read: {exc.strerror}") from None
    document = _json(raw, "the bundle")
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"is not a registration bundle (format must be {BUNDLE_FORMAT!r})")
    text, mac = document.get("payload"), document.get("hmac")
    if not isinstance(text, str) or not isinstance(mac, str) or not _HEX64.fullmatch(mac):
        raise BundleError("needs a string 'payload' and a 64-hex-digit 'hmac'")
    host_proof = document.get("hostProof")
    if host_proof is not None and (
        not isinstance(host_proof, str) or not _HEX64.fullmatch(host_proof)
    ):
        raise BundleError("has a 'hostProof' that is not 64 hex digits")
    try:
        decoded = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeError, binascii.Error):
        raise BundleError("has a payload that is not base64 of JSON") from None
    payload = _json(decoded, "its payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("host"), dict):
        raise BundleError("has a payload without a 'host' object")
    if not isinstance(payload.get("tokenFingerprint"), str):
        raise BundleError("has no token fingerprint")
    return text, mac, payload, host_proof


def _host_proof(text: str, host_proof: str | None) -> Callable[[str], bool] | None:
    """The check of a bundle's ``hostProof`` against a stored credential hash."""
    if host_proof is None:
        return None

    def proves(credential_hash: str) -> bool:
        expected = hmac.new(bytes.fromhex(credential_hash), text.encode("ascii"), hashlib.sha256)
        return hmac.compare_digest(expected.hexdigest(), host_proof)

    return proves


def find_bundles(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The bundles named by ``paths``: files as given, directories expanded to their
    ``edgekit-registration-*.json`` files (sorted). Raises when a path is missing or when
    nothing is found (what ``edgekit hub import PATH...`` wants)."""
    found: list[Path] = []
    paths = list(paths)
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(path.glob(f"{BUNDLE_PREFIX}*{BUNDLE_SUFFIX}"))
        elif path.is_file():
            found.append(path)
        elif not os.path.lexists(path):
            raise RegistrationError(f"{path} does not exist")
        else:  # a FIFO, a device, a dangling link: never opened (a FIFO would block)
            raise RegistrationError(f"{path} is neither a bundle file nor a directory of them")
    if not found:
        raise RegistrationError(_nothing_found(paths))
    return found


def _nothing_found(sources: Iterable[str | os.PathLike[str]]) -> str:
    # Name where it looked: an empty or wrong mount point is the usual cause.
    where = ", ".join(os.fspath(s) for s in sources)
    return (
        f"no registration bundles ({BUNDLE_PREFIX}*{BUNDLE_SUFFIX}) found in {where}:"
        " is the stick mounted there, and did the hosts boot with it attached?"
    )


def receive_bundles(
    sources: Iterable[str | os.PathLike[str]],
    *,
    transport: str = "file",
    plugins: PluginManager | None = None,
) -> list[Path]:
    """The bundles the registration transport ``transport`` carried to ``sources``
    (``edgekit hub import``): each source goes to the transport's ``receive`` (``file``:
    a bundle, a directory of them or a ``file:///`` URL), so a store-and-forward transport
    of a plugin delivers the same way. Raises when nothing is found."""
    from edgekit.plugins import BuildContext, ReceiveRequest, SelectedBackend
    from edgekit.plugins.manager import get_plugin_manager

    manager = plugins or get_plugin_manager()
    backend = manager.transport(transport)
    cwd = Path.cwd()
    ctx = BuildContext(
        base_dir=cwd,
        output_dir=cwd,
        cache_dir=cwd,
        step="import",
        plugins=manager,
        selected={"transport": SelectedBackend(transport)},
    )
    found: list[Path] = []
    sources = list(sources)
    for source in sources:
        found += backend.receive(ReceiveRequest(os.fspath(source)), ctx).bundles
    if not found:
        raise RegistrationError(_nothing_found(sources))
    return found


def _token_hashes(store: HubStore) -> dict[str, list[str]]:
    """Fingerprint -> stored token hashes (a 64-bit fingerprint may, rarely, be shared)."""
    out: dict[str, list[str]] = {}
    for _uid, token_hash in store.token_hashes():
        out.setdefault(fingerprint_from_hash(token_hash), []).append(token_hash)
    return out


def import_registrations(
    db_path_or_store: str | os.PathLike[str] | HubStore,
    bundle_paths: Iterable[str | os.PathLike[str]],
    *,
    max_age: float | None = None,
    now: float | None = None,
) -> list[ImportResult]:
    """Verify each bundle and register its host; one result per bundle, in order.

    A bundle is refused (``ok=False``, nothing stored for it) when it is malformed, its
    HMAC does not verify (checked in constant time) under any stored token with its
    fingerprint, it is older than ``max_age`` seconds, or the hub's registration rules
    refuse it (unknown, revoked or expired token; ``max_hosts`` reached; another site; a
    registered uid without proof of identity). Each bundle is one transaction.
    """
    now = time.time() if now is None else now
    if isinstance(db_path_or_store, HubStore):
        store, own = db_path_or_store, False
    else:
        store, own = HubStore(db_path_or_store), True
    results: list[ImportResult] = []
    try:
        for raw in bundle_paths:
            path = Path(raw)
            try:
                results.append(_import_one(store, path, max_age=max_age, now=now))
            except (BundleError, HubError) as exc:
                text = exc.message if isinstance(exc, HubError) else str(exc)
                results.append(ImportResult(path, False, error=text))
    finally:
        if own:
            store.close()
    return results


def _import_one(store: HubStore, path: Path, *, max_age: float | None, now: float) -> ImportResult:
    text, mac, payload, host_proof = _load(path)
    matches = _token_hashes(store).get(payload["tokenFingerprint"], [])
    token_hash = next(
        (
            h
            for h in matches
            if hmac.compare_digest(
                hmac.new(bytes.fromhex(h), text.encode("ascii"), hashlib.sha256).hexdigest(), mac
            )
        ),
        None,
    )
    if token_hash is None:
        if not matches:
            raise BundleError("names a registration token the hub does not know")
        raise BundleError("fails its HMAC check: it was altered or not made with this token")
    created = payload.get("created")
    if max_age is not None:
        try:
            when = datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BundleError(f"has an unreadable creation time {created!r}") from None
        if now - when > max_age:
            raise BundleError(f"was made at {created}, more than {max_age:.0f} s ago")
    problems: list[Problem] = []
    fields = host_fields(payload["host"], problems, "host")
    if fields is None:
        raise BundleError("has invalid host fields: " + "; ".join(str(p) for p in problems))
    # The domain's rules (unknown, revoked, expired, max_hosts, site, proof of identity for
    # a registered uid) and idempotency, exactly as over HTTP.
    proof = _host_proof(text, host_proof)
    record, credential = Hub(store).register(
        fields,
        token_hash=token_hash,
        proof=proof,
        bundle_digest=hashlib.sha256(text.encode("ascii")).hexdigest(),
        now=now,
    )
    return ImportResult(
        path,
        True,
        host_uid=record.uid,
        site=record.site,
        token_uid=record.token_uid,
        credential=Secret(credential),
    )
