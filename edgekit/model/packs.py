"""Packs: the layers of a cluster profile (OS, Kubernetes, CNI, CSI, add-ons)."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ._base import INVALID, Check, check_name, check_not_blank, check_version, doc

__all__ = ["Layer", "Pack", "PackSource", "PackValues"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The reference grammar of the distribution spec: [domain[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
REPOSITORY = rf"{_DOMAIN}(?::[0-9]+)?(?:/{_COMPONENT})+"
_OCI_REF = re.compile(
    rf"^{REPOSITORY}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
)


def is_oci_reference(value: str) -> bool:
    """Whether ``value`` looks like an OCI reference (``registry/repo:tag`` or ``@sha256:``)."""
    return bool(_OCI_REF.fullmatch(value))


class Layer(enum.Enum):
    """The layer a pack belongs to, in the order Palette stacks them."""

    OS = "os"
    K8S = "k8s"
    CNI = "cni"
    CSI = "csi"
    ADDON = "addon"


@attrs.frozen
class PackSource:
    """Where a pack's content comes from: exactly one of ``url``, ``path`` or ``oci``."""

    url: str | None = attrs.field(default=None, metadata=doc("An https or http URL to fetch."))
    sha256: str | None = attrs.field(
        default=None, metadata=doc("The expected SHA-256 of the URL's content (64 hex digits).")
    )
    path: str | None = attrs.field(
        default=None,
        metadata=doc(
            "A local file or directory (relative to the forge file), or with `oci` the path "
            "inside the artifact."
        ),
    )
    oci: str | None = attrs.field(
        default=None, metadata=doc("An OCI reference (registry/repo:tag or @sha256 digest).")
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        with c.rule():
            given = [n for n in ("url", "oci") if getattr(self, n) is not None]
            if self.path is not None and self.oci is None:
                given.append("path")
            if len(given) != 1:
                c.fail(
                    "url",
                    "exactly one of url, path or oci is required, got "
                    + (", ".join(given) if given else "none"),
                )
        with c.rule():
            if self.url is not None:
                if not self.url.startswith(("https://", "http://")):
                    c.fail("url", f"{self.url!r} is not an http(s) URL")
                if self.sha256 is None:
                    c.fail("sha256", "required with url (the SHA-256 of the downloaded content)")
        with c.rule():
            if self.sha256 is not None:
                if self.url is None:
                    c.fail("sha256", "only meaningful with url")
                elif not _SHA256.fullmatch(self.sha256):
                    c.fail("sha256", f"{self.sha256!r} is not 64 lowercase hex digits")
        with c.rule():
            if self.oci is not None and not is_oci_reference(self.oci):
                c.fail("oci", f"{self.oci!r} is not an OCI reference (registry/repo:tag)")
        with c.rule():
            if self.path is not None:
                check_not_blank(c, "path", self.path)
        c.done()

    @classmethod
    def from_url(cls, url: str, sha256: str) -> PackSource:
        """A source downloaded from ``url`` and verified against ``sha256``."""
        return cls(url=url, sha256=sha256)

    @classmethod
    def from_path(cls, path: str) -> PackSource:
        """A source read from a local file or directory."""
        return cls(path=path)

    @classmethod
    def from_oci(cls, ref: str, path: str | None = None) -> PackSource:
        """A source pulled from an OCI artifact, optionally only ``path`` inside it."""
        return cls(oci=ref, path=path)


class PackValues(Mapping[str, Any]):
    """A pack's values: a read-only mapping, and the YAML text it was read from, if any.

    The loader (:mod:`edgekit.config`) parses ``values: |`` text once, when the document is
    read, and keeps the text in :attr:`text` so that writing the document back gives the
    text the user wrote (comments and all). Everything else reads the mapping. Two values
    are equal when their mappings are: formatting is not a change.
    """

    __slots__ = ("_data", "text")

    def __init__(self, data: Mapping[str, Any] | None = None, *, text: str | None = None) -> None:
        self._data: dict[str, Any] = dict(data or {})
        #: The YAML text the values were read from; None when they were given as a mapping.
        self.text = text

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a mapping of mutable values

    def __repr__(self) -> str:
        return f"PackValues({self._data!r})"


def _to_values(value: Any) -> Any:
    # A mapping becomes PackValues; anything else is kept for __attrs_post_init__ to refuse
    # with a message (an attrs converter cannot report a path-addressed problem).
    if isinstance(value, PackValues):
        return value
    if isinstance(value, Mapping):
        return PackValues(value)
    return value


@attrs.frozen
class Pack:
    """One layer of a cluster profile: a named, versioned piece of software and its values."""

    name: str = attrs.field(metadata=doc("The pack name, unique within a profile."))
    layer: Layer = attrs.field(metadata=doc("The layer: os, k8s, cni, csi or addon."))
    version: str = attrs.field(metadata=doc('The pack version (quote it in YAML: "1.10").'))
    source: PackSource | None = attrs.field(
        default=None, metadata=doc("Where the pack's content comes from, if edgekit fetches it.")
    )
    registry: str | None = attrs.field(
        default=None, metadata=doc("The pack registry the pack is published in, if any.")
    )
    values: PackValues = attrs.field(
        factory=PackValues,
        converter=_to_values,
        metadata=doc(
            "The pack values: YAML text or a mapping.", schema_type=str | Mapping[str, Any]
        ),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            check_version(c, "version", self.version)
        values: Any = self.values  # typed PackValues, but a caller may pass anything
        if values is not INVALID and not isinstance(values, PackValues):
            c.fail(
                "values",
                "must be a mapping; YAML text is parsed where documents are read "
                "(edgekit.config.values_from_text(text) gives the mapping for Python code)",
            )
        c.done()

    @property
    def values_mapping(self) -> Mapping[str, Any]:
        """The values (kept for callers of the time when values could be unparsed text)."""
        return self.values

    @classmethod
    def os(cls, name: str, version: str, **kw: Any) -> Pack:
        """An OS layer pack."""
        return cls(name=name, layer=Layer.OS, version=version, **kw)

    @classmethod
    def k8s(cls, name: str, version: str, **kw: Any) -> Pack:
        """A Kubernetes layer pack."""
        return cls(name=name, layer=Layer.K8S, version=version, **kw)
