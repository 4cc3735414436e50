"""Media types edgekit reads and writes, and the edgekit artifact types."""

from __future__ import annotations

from typing import Final

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
#: The empty config ``{}``: its bytes and digest (image-spec 1.1 "empty descriptor").
EMPTY_JSON: Final = b"{}"
EMPTY_DIGEST: Final = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: What we accept when fetching a manifest by tag or digest.
ACCEPT: Final = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

# --- edgekit artifact types (manifest ``artifactType``) ---------------------------------
ISO: Final = "application/vnd.edgekit.iso.v1"
SITE_ISO: Final = "application/vnd.edgekit.site-iso.v1"
CONTENT_BUNDLE: Final = "application/vnd.edgekit.content-bundle.v1"
CHECKSUM: Final = "application/vnd.edgekit.checksum.v1"
ARTIFACT_TYPES: Final = frozenset({ISO, SITE_ISO, CONTENT_BUNDLE, CHECKSUM})

#: Media type of the single layer holding the file, per artifact type.
LAYER_TYPES: Final = {
    ISO: "application/vnd.edgekit.iso.layer.v1.iso",
    SITE_ISO: "application/vnd.edgekit.site-iso.layer.v1.iso",
    CONTENT_BUNDLE: "application/vnd.edgekit.content-bundle.layer.v1.tar",
    CHECKSUM: "text/plain",
}

# --- annotations ------------------------------------------------------------------------
TITLE: Final = "org.opencontainers.image.title"
CREATED: Final = "org.opencontainers.image.created"
REF_NAME: Final = "org.opencontainers.image.ref.name"
PROFILE: Final = "dev.edgekit.profile"
SITE: Final = "dev.edgekit.site"
IMAGE_DIGEST: Final = "dev.edgekit.image.digest"
