"""The OCI vocabulary edgekit and its plugins share: media types, annotations, descriptors.

One module so that the image builder (``edgekit-oci``), the publisher (``edgekit-oras``), the
forge and ``edgekit.dist`` name the same thing the same way: a media type spelled once cannot
drift between the code that writes a manifest and the code that reads it back. Pure data; no
I/O. References and targets are :mod:`edgekit.oci_ref`'s; layouts on disk are
:mod:`edgekit.oci`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Self

import attrs

from edgekit.errors import BuildError, ConfigError, EdgekitError

__all__ = [
    "ACCEPT",
    "ARTIFACT_TYPES",
    "CHECKSUM",
    "CONTENT_BUNDLE",
    "CREATED",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "EMPTY_DIGEST",
    "EMPTY_JSON",
    "FORGE",
    "IMAGE_DIGEST",
    "IMAGE_REFERENCE",
    "INDEX_TYPES",
    "ISO",
    "ISO_IMAGE",
    "LAYER_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "PROFILE",
    "REF_NAME",
    "SITE",
    "SITE_ISO",
    "SITE_ISOS",
    "SITE_ISOS_CHUNK",
    "SITE_ISOS_INDEX",
    "TITLE",
    "Descriptor",
    "Platform",
    "check_digest",
    "check_media_type",
]

# --- image-spec media types -----------------------------------------------------------------
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
#: The empty config ``{}``: its bytes and digest (image-spec 1.1 "empty descriptor").
EMPTY_JSON: Final = b"{}"
EMPTY_DIGEST: Final = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: What a client accepts when fetching a manifest by tag or digest.
ACCEPT: Final = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

# --- edgekit artifact types (manifest ``artifactType``) -------------------------------------
ISO: Final = "application/vnd.edgekit.iso.v1"
SITE_ISO: Final = "application/vnd.edgekit.site-iso.v1"
CONTENT_BUNDLE: Final = "application/vnd.edgekit.content-bundle.v1"
CHECKSUM: Final = "application/vnd.edgekit.checksum.v1"
ARTIFACT_TYPES: Final = frozenset({ISO, SITE_ISO, CONTENT_BUNDLE, CHECKSUM})
#: A fleet's site ISOs as one artifact: its type, its index config and its chunk layers.
SITE_ISOS: Final = "application/vnd.edgekit.site-isos.v1"
SITE_ISOS_INDEX: Final = "application/vnd.edgekit.site-index.v1+json"
SITE_ISOS_CHUNK: Final = "application/vnd.edgekit.site-iso.chunk.v1"
#: A bootable ISO 9660 image as a plain file (an ``Artifact``'s ``media_type``).
ISO_IMAGE: Final = "application/x-iso9660-image"

#: Media type of the single layer holding the file, per artifact type.
LAYER_TYPES: Final = {
    ISO: "application/vnd.edgekit.iso.layer.v1.iso",
    SITE_ISO: "application/vnd.edgekit.site-iso.layer.v1.iso",
    CONTENT_BUNDLE: "application/vnd.edgekit.content-bundle.layer.v1.tar",
    CHECKSUM: "text/plain",
}

# --- annotations ----------------------------------------------------------------------------
TITLE: Final = "org.opencontainers.image.title"
CREATED: Final = "org.opencontainers.image.created"
REF_NAME: Final = "org.opencontainers.image.ref.name"
FORGE: Final = "dev.edgekit.forge"
PROFILE: Final = "dev.edgekit.profile"
SITE: Final = "dev.edgekit.site"
IMAGE_DIGEST: Final = "dev.edgekit.image.digest"
IMAGE_REFERENCE: Final = "dev.edgekit.image.reference"


_HEX = frozenset("0123456789abcdef")


def check_digest(digest: str, error: type[EdgekitError] = BuildError) -> str:
    """``digest`` if it is ``sha256:<64 lowercase hex>``; else raise ``error``."""
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or len(hexdigest) != 64 or not set(hexdigest) <= _HEX:
        raise error(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


@attrs.frozen
class Platform:
    """The platform an image in an index runs on."""

    architecture: str
    os: str = "linux"
    variant: str | None = None

    def to_json(self) -> dict[str, str]:
        """The JSON form (``architecture``, ``os``, ``variant`` when set)."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        """From the JSON form."""
        return cls(str(data["architecture"]), str(data.get("os", "linux")), data.get("variant"))


@attrs.frozen
class Descriptor:
    """An OCI content descriptor: what a manifest, an index or the referrers API lists."""

    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form (camelCase keys; optional fields only when set)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, error: type[EdgekitError] = BuildError) -> Self:
        """From the JSON form; a missing field or bad digest raises ``error`` (the caller's
        boundary error: ``BuildError`` in the image builder, ``PublishError`` in a publisher)."""
        try:
            media_type, digest, size = data["mediaType"], data["digest"], int(data["size"])
        except (KeyError, TypeError, ValueError) as e:
            raise error(f"malformed OCI descriptor {dict(data)!r}: {e}") from None
        platform = data.get("platform")
        return cls(
            media_type=str(media_type),
            digest=check_digest(str(digest), error),
            size=size,
            artifact_type=data.get("artifactType"),
            annotations=dict(data.get("annotations") or {}),
            platform=Platform.from_json(platform) if platform else None,
        )

    @property
    def ref_name(self) -> str | None:
        """The tag of this descriptor in a layout's ``index.json``, if any."""
        return self.annotations.get(REF_NAME)


# RFC 6838 section 4.2: type "/" subtype, each a restricted name of at most 127 characters.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")


def check_media_type(value: str, *, field: str = "media_type") -> str:
    """Return *value* if it is a media type (``type/subtype``, RFC 6838), else ConfigError."""
    if not _MEDIA_TYPE.fullmatch(value):
        shown = value.encode("unicode_escape").decode("ascii")  # no control character echoed
        raise ConfigError.single(
            field,
            f"{shown!r} is not a media type (type/subtype of letters, digits and !#$&^_.+-, "
            "e.g. application/vnd.example.iso)",
        )
    return value
