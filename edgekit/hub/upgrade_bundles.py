"""Upgrade bundles: how a host at an airgapped site gets its desired state on a USB stick.

The reverse of a registration bundle (:mod:`edgekit.hub.airgap`): the hub writes, for each
host, a signed **envelope** with the host's desired state, next to the OCI image layout of
the provider image that state names; someone carries the stick to the site; the device's
agent verifies the envelope, then every blob of the layout against its digest, exactly as it
does for a registry, and upgrades (docs/agent.md).

Keys. The hub stores ``sha256(token)``, the device has the token (its user-data), so both
know ``K = sha256(token)``, the registration bundle's key. An upgrade envelope is MACed with
a key derived from it *per host*: ``K_host = HMAC-SHA256(K, "edgekit-upgrade/v1 " + uid)``.
A bundle made for one host therefore fails the check on every other host, even one that
registered with the same token, and the check needs no canonical JSON: the MAC covers the
payload's base64 text, as in registration bundles. (HMAC and not a public-key signature:
the device verifies with busybox alone, which has sha256 but no Ed25519.)

Layout on the stick (``DEST`` is its mount point)::

    DEST/edgekit-upgrade/edgekit-upgrade-<hostUid>.json     one envelope per host
    DEST/edgekit-upgrade/images/sha256-<hex>/               an OCI layout per image digest

Envelope::

    {"format": "edgekit-upgrade/v1", "hostUid": "<uid>",
     "payload": "<base64 of compact JSON>", "hmac": "<64 hex: HMAC-SHA256(K_host, payload)>"}

Payload (compact JSON, members in this order): ``{"hostUid", "generation", "image":
{"digest", "layout": "images/sha256-<hex>", "ref"} | null, "site", "created", "nonce",
"desired": <the hub's desired state>}``.
A device refuses an envelope for another uid, a bad MAC, a generation it has already applied
(so an old stick cannot downgrade it), and any blob whose bytes do not hash to its digest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from edgekit.errors import ConfigError, Problem
from edgekit.hub.airgap import BundleError, _json, _rfc3339, bundle_key
from edgekit.hub.records import HostRecord
from edgekit.hub.security import Secret
from edgekit.hub.store import HubStore

if TYPE_CHECKING:
    from edgekit.plugins.interfaces import RegistryOptions
    from edgekit.plugins.manager import PluginManager

__all__ = [
    "FORMAT",
    "UPGRADE_DIR",
    "UpgradeBundle",
    "bundle_paths",
    "host_key",
    "read_upgrade_bundle",
    "write_upgrade_bundles",
]

FORMAT = "edgekit-upgrade/v1"
#: The directory on the stick that holds envelopes and image layouts.
UPGRADE_DIR = "edgekit-upgrade"


def host_key(token_hash: str, host_uid: str) -> bytes:
    """``K_host``: the per-host HMAC key, from the hub's stored hex ``sha256(token)``."""
    message = f"{FORMAT} {host_uid}".encode()
    return hmac.new(bytes.fromhex(token_hash), message, hashlib.sha256).digest()


@attrs.frozen
class UpgradeBundle:
    """One host's envelope as written (or read back): where it is and what it asks for."""

    path: Path
    host_uid: str
    generation: int
    desired: dict[str, Any] = attrs.field(repr=False)
    image_ref: str | None = None
    image_digest: str | None = None
    layout: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``edgekit hub upgrade-bundle --json``)."""
        return {
            "path": str(self.path),
            "hostUid": self.host_uid,
            "generation": self.generation,
            "image": self.image_ref,
            "digest": self.image_digest,
            "layout": None if self.layout is None else str(self.layout),
        }


def _selected(store: HubStore, hosts: Sequence[str], sites: Sequence[str]) -> list[HostRecord]:
    """The hosts named or at the sites named, each once, every unknown name reported."""
    problems: list[Problem] = []
    chosen: dict[str, HostRecord] = {}
    for i, uid in enumerate(hosts):
        record = store.get_host(uid)
        if record is None:
            problems.append(Problem(f"hosts[{i}]", f"no host {uid!r} is registered"))
        else:
            chosen[uid] = record
    for i, site in enumerate(sites):
        found, _ = store.search_hosts(sites=[site])
        if not found:
            problems.append(Problem(f"sites[{i}]", f"no host is registered at site {site!r}"))
        chosen.update((r.uid, r) for r in found)
    for uid, record in sorted(chosen.items()):
        desired = record.desired or {}
        if not isinstance(desired.get("generation"), int):
            # A spare host at a --site is the usual case: say so, and how to leave it out.
            problems.append(
                Problem(
                    f"host {uid}",
                    "has no desired state to carry (it is in no cluster): put it in one,"
                    " or name the hosts to carry instead of their site",
                )
            )
    if not hosts and not sites:
        problems.append(Problem("hosts", "name at least one host or site"))
    if problems:
        raise ConfigError(problems)
    return [chosen[uid] for uid in sorted(chosen)]


def write_upgrade_bundles(
    db_path_or_store: str | os.PathLike[str] | HubStore,
    dest: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = (),
    sites: Sequence[str] = (),
    options: RegistryOptions | None = None,
    publisher: str = "oras",
    plugins: PluginManager | None = None,
    now: float | None = None,
) -> list[UpgradeBundle]:
    """Write an upgrade bundle for each host named (or registered at a site named) to the
    stick mounted at ``dest``; return them, by host uid.

    Every host is checked first (all problems at once, nothing written); each provider
    image is pulled once (every digest verified by the publisher) into a layout shared by
    the hosts that run it. Every file is written under a temporary name and renamed, so an
    interrupted run leaves the stick's earlier bundles intact and no half-written one.
    """
    now = time.time() if now is None else now
    target = Path(dest) / UPGRADE_DIR
    if isinstance(db_path_or_store, HubStore):
        store, own = db_path_or_store, False
    else:
        store, own = HubStore(db_path_or_store), True
    try:
        chosen = _selected(store, hosts, sites)
        hashes = dict(store.token_hashes())
        missing = [
            Problem(f"host {r.uid}", "its registration token no longer exists")
            for r in chosen
            if r.token_uid not in hashes  # deleted: nothing the device could verify with
        ]
        if missing:
            raise ConfigError(missing)
        keys = {r.uid: hashes[r.token_uid] for r in chosen}
    finally:
        if own:
            store.close()
    target.mkdir(parents=True, exist_ok=True)
    (target / "images").mkdir(exist_ok=True)
    layouts: dict[str, tuple[str, Path]] = {}
    written: list[UpgradeBundle] = []
    for record in chosen:
        desired = dict(record.desired or {})
        ref = desired.get("providerImage")
        image: dict[str, Any] | None = None
        if isinstance(ref, str) and ref:
            if ref not in layouts:
                layouts[ref] = _pull_layout(ref, target, options, publisher, plugins)
            digest, layout = layouts[ref]
            image = {"ref": ref, "digest": digest, "layout": f"images/{layout.name}"}
        # In this order, the scalars and the image first and ``desired`` last: the device's
        # sh reads the head of the compact JSON with one anchored pattern (no JSON parser).
        payload = {
            "hostUid": record.uid,
            "generation": desired["generation"],
            "image": image,
            "site": record.site,
            "created": _rfc3339(now),
            "nonce": secrets.token_hex(16),
            "desired": desired,
        }
        if image is not None:
            payload["image"] = {k: image[k] for k in ("digest", "layout", "ref")}
        text = base64.b64encode(
            json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()
        ).decode("ascii")
        mac = hmac.new(host_key(keys[record.uid], record.uid), text.encode(), hashlib.sha256)
        envelope = {"format": FORMAT, "hostUid": record.uid, "payload": text}
        envelope["hmac"] = mac.hexdigest()
        path = target / f"edgekit-upgrade-{record.uid}.json"
        _write_atomically(path, (json.dumps(envelope, indent=2) + "\n").encode())
        written.append(
            UpgradeBundle(
                path,
                record.uid,
                int(desired["generation"]),
                desired,
                image_ref=None if image is None else ref,
                image_digest=None if image is None else image["digest"],
                layout=None if image is None else target / image["layout"],
            )
        )
    return written


def _pull_layout(
    ref: str,
    target: Path,
    options: RegistryOptions | None,
    publisher: str,
    plugins: PluginManager | None,
) -> tuple[str, Path]:
    """Pull ``ref`` into ``target/images/sha256-<hex>`` (once per digest); its digest."""
    from edgekit.dist import pull  # the publisher plugins load only when a bundle has an image

    scratch = Path(tempfile.mkdtemp(prefix=".pull-", dir=target / "images"))
    try:
        pulled = pull(
            ref, scratch / "layout", options=options, publisher=publisher, plugins=plugins
        )
        digest = str(pulled.digest)
        final = target / "images" / digest.replace(":", "-")
        if final.exists():  # the same image, already on the stick (an earlier run)
            return digest, final
        os.replace(scratch / "layout", final)
        return digest, final
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_upgrade_bundle(
    path: str | os.PathLike[str],
    *,
    token: str | Secret,
    host_uid: str,
    applied_generation: int | None = None,
    applied_cluster: str | None = None,
) -> UpgradeBundle:
    """The envelope at ``path`` checked as the device checks it (the reference for the
    agent's sh version): its format, that it is for ``host_uid``, its MAC under the key
    derived from ``token``, a generation above ``applied_generation``, and the image
    layout's manifest against its digest. Raises :class:`BundleError` naming the reason.

    Generations count per cluster: with ``applied_cluster`` (the cluster uid of the applied
    generation), a bundle whose desired state is another cluster's is not compared with
    ``applied_generation`` (a host moved to a younger cluster takes its first bundle)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror})") from None
    doc = _json(raw, "the bundle")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"{path}: is not an {FORMAT} envelope")
    if doc.get("hostUid") != host_uid:
        raise BundleError(f"{path}: is for host {doc.get('hostUid')!r}, not {host_uid!r}")
    text, mac = doc.get("payload"), doc.get("hmac")
    if not isinstance(text, str) or not isinstance(mac, str):
        raise BundleError(f"{path}: has no payload or hmac")
    key = host_key(bundle_key(token).hex(), host_uid)
    expected = hmac.new(key, text.encode("ascii", "replace"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        raise BundleError(f"{path}: fails its HMAC check: altered, or made for another host")
    try:
        payload = _json(base64.b64decode(text, validate=True), "the bundle's payload")
    except ValueError:
        raise BundleError(f"{path}: its payload is not base64") from None
    if not isinstance(payload, dict) or payload.get("hostUid") != host_uid:
        raise BundleError(f"{path}: its payload is for another host")
    generation = payload.get("generation")
    if not isinstance(generation, int):
        raise BundleError(f"{path}: has no generation")
    desired = payload.get("desired")
    if not isinstance(desired, dict):
        raise BundleError(f"{path}: has no desired state")
    same_cluster = applied_cluster is None or desired.get("clusterUid") == applied_cluster
    if applied_generation is not None and same_cluster and generation <= applied_generation:
        raise BundleError(
            f"{path}: carries generation {generation}, but {applied_generation} is applied"
        )
    image = payload.get("image")
    ref = digest = layout = None
    if image is not None:
        ref, digest = str(image["ref"]), str(image["digest"])
        layout = path.parent / str(image["layout"])
        _check_blob(layout, digest, path)
    return UpgradeBundle(path, host_uid, generation, dict(desired), ref, digest, layout)


def _check_blob(layout: Path, digest: str, path: Path) -> None:
    algo, _, hexd = digest.partition(":")
    blob = layout / "blobs" / algo / hexd
    h = hashlib.sha256()
    try:
        with blob.open("rb") as fp:
            for chunk in iter(lambda: fp.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        raise BundleError(f"{path}: the image layout has no manifest {digest}") from None
    if algo != "sha256" or h.hexdigest() != hexd:
        raise BundleError(f"{path}: the image's manifest does not match its digest {digest}")


def bundle_paths(dest: str | os.PathLike[str]) -> Iterable[Path]:
    """The envelopes on the stick mounted at ``dest``."""
    return sorted((Path(dest) / UPGRADE_DIR).glob("edgekit-upgrade-*.json"))
