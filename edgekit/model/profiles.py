"""Cluster profiles: an ordered stack of packs, and what changing one implies for a cluster."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ._base import Check, check_name, doc, duplicates
from .packs import Layer, Pack

__all__ = ["ChangeKind", "ClusterProfile", "PackChange", "ProfileDiff", "ProfileRef", "UpgradeKind"]

# Semantic Versioning 2.0.0, without a leading "v".
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def is_semver(value: str) -> bool:
    """Whether ``value`` is a semantic version such as ``1.0.0`` or ``1.2.3-rc.1``."""
    return bool(SEMVER.fullmatch(value))


@attrs.frozen
class ProfileRef:
    """A reference to one version of a cluster profile."""

    name: str = attrs.field(metadata=doc("The profile name."))
    version: str = attrs.field(metadata=doc("The profile version (semver)."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            if not is_semver(self.version):
                c.fail("version", f"{self.version!r} is not a semantic version such as 1.0.0")
        c.done()


class UpgradeKind(enum.Enum):
    """How disruptive applying a profile change to a running cluster is (Kairos A/B upgrades)."""

    NONE = "none"
    IN_PLACE = "in_place"  # pack values applied without a reboot
    REBOOT = "reboot"  # OS/Kubernetes stages changed: nodes reboot
    REPAVE = "repave"  # the provider image changed: nodes are re-imaged

    @property
    def rank(self) -> int:
        """Order of disruption, 0 for none up to 3 for repave."""
        return list(UpgradeKind).index(self)


class ChangeKind(enum.Enum):
    """What changed about one pack between two profiles."""

    ADDED = "added"
    REMOVED = "removed"
    VERSION = "version"
    VALUES = "values"
    SOURCE = "source"


@attrs.frozen
class PackChange:
    """One change to one pack, and the upgrade it implies on its own."""

    pack: str = attrs.field(metadata=doc("The pack name."))
    layer: Layer = attrs.field(metadata=doc("The pack layer."))
    kind: ChangeKind = attrs.field(metadata=doc("What changed."))
    upgrade: UpgradeKind = attrs.field(metadata=doc("The upgrade this change implies."))
    old: str | None = attrs.field(default=None, metadata=doc("The old version, when relevant."))
    new: str | None = attrs.field(default=None, metadata=doc("The new version, when relevant."))
    keys: tuple[str, ...] = attrs.field(default=(), metadata=doc("Changed value keys (dotted)."))


@attrs.frozen
class ProfileDiff:
    """The changes between two profiles; :attr:`upgrade` is the most disruptive one implied."""

    changes: tuple[PackChange, ...]

    @property
    def upgrade(self) -> UpgradeKind:
        """The overall upgrade kind: the most disruptive of the changes (``none`` if none)."""
        return max(
            (c.upgrade for c in self.changes), key=lambda u: u.rank, default=UpgradeKind.NONE
        )

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __iter__(self) -> Iterator[PackChange]:
        return iter(self.changes)


@attrs.frozen
class ClusterProfile:
    """A named, versioned stack of packs: exactly one OS pack and one Kubernetes pack."""

    name: str = attrs.field(metadata=doc("The profile name, unique in a forge file."))
    version: str = attrs.field(metadata=doc("The profile version, a semantic version (1.0.0)."))
    packs: tuple[Pack, ...] = attrs.field(metadata=doc("The packs, in layer order as given."))
    description: str = attrs.field(default="", metadata=doc("A free-text description."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            if not is_semver(self.version):
                c.fail("version", f"{self.version!r} is not a semantic version such as 1.0.0")
        with c.rule():
            for layer in (Layer.OS, Layer.K8S):
                n = sum(1 for p in self.packs if p.layer is layer)
                if n != 1:
                    c.fail("packs", f"exactly one {layer.value} pack is required, found {n}")
            for dup in duplicates([p.name for p in self.packs]):
                c.fail("packs", f"pack name {dup!r} is used more than once")
        c.done()

    @property
    def os_pack(self) -> Pack:
        """The OS layer pack."""
        return next(p for p in self.packs if p.layer is Layer.OS)

    @property
    def k8s_pack(self) -> Pack:
        """The Kubernetes layer pack."""
        return next(p for p in self.packs if p.layer is Layer.K8S)

    @property
    def ref(self) -> ProfileRef:
        """A reference to this profile version."""
        return ProfileRef(self.name, self.version)

    def pack(self, name: str) -> Pack:
        """The pack called ``name``; KeyError if there is none."""
        for p in self.packs:
            if p.name == name:
                return p
        raise KeyError(name)

    def diff(self, other: ClusterProfile) -> ProfileDiff:
        """The changes that turn this profile into ``other``, per pack, with the upgrade kind."""
        mine = {p.name: p for p in self.packs}
        theirs = {p.name: p for p in other.packs}
        changes: list[PackChange] = []
        for name, p in mine.items():
            if name not in theirs:
                changes.append(PackChange(name, p.layer, ChangeKind.REMOVED, _swap_kind(p.layer)))
        for name, q in theirs.items():
            p_old = mine.get(name)
            if p_old is None:
                changes.append(PackChange(name, q.layer, ChangeKind.ADDED, _swap_kind(q.layer)))
                continue
            changes.extend(_pack_changes(p_old, q))
        return ProfileDiff(tuple(changes))


def _swap_kind(layer: Layer) -> UpgradeKind:
    # Replacing the OS pack replaces the provider image; replacing the K8s pack its stages.
    if layer is Layer.OS:
        return UpgradeKind.REPAVE
    if layer is Layer.K8S:
        return UpgradeKind.REBOOT
    return UpgradeKind.IN_PLACE


def _pack_changes(old: Pack, new: Pack) -> list[PackChange]:
    out: list[PackChange] = []
    base = old.layer in (Layer.OS, Layer.K8S)
    if old.version != new.version:
        kind = _swap_kind(new.layer) if base else UpgradeKind.IN_PLACE
        out.append(
            PackChange(old.name, new.layer, ChangeKind.VERSION, kind, old.version, new.version)
        )
    if old.source != new.source or old.registry != new.registry or old.layer != new.layer:
        kind = _swap_kind(new.layer) if base else UpgradeKind.IN_PLACE
        out.append(PackChange(old.name, new.layer, ChangeKind.SOURCE, kind))
    if old.values != new.values:
        keys = _changed_keys(old.values, new.values)
        out.append(
            PackChange(
                old.name, new.layer, ChangeKind.VALUES, _values_kind(new.layer, keys), keys=keys
            )
        )
    return out


def _flatten(m: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in m.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _changed_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, ...]:
    fa, fb = _flatten(a), _flatten(b)
    return tuple(sorted(k for k in fa.keys() | fb.keys() if fa.get(k, ...) != fb.get(k, ...)))


def _values_kind(layer: Layer, keys: tuple[str, ...]) -> UpgradeKind:
    if layer not in (Layer.OS, Layer.K8S):
        return UpgradeKind.IN_PLACE
    # `system.*` of the OS pack composes the provider image reference (system.uri).
    if layer is Layer.OS and any(k == "system" or k.startswith("system.") for k in keys):
        return UpgradeKind.REPAVE
    if any({"stages", "install"} & set(k.split(".")) for k in keys):
        return UpgradeKind.REBOOT
    return UpgradeKind.IN_PLACE if keys else UpgradeKind.NONE
