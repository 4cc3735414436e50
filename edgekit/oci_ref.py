"""OCI references and targets: the one parser and the one naming rule edgekit uses.

Strict parsing of ``host[:port]/repo[:tag][@sha256:...]`` or ``oci:PATH[:TAG]`` (no defaulting
to Docker Hub: a reference must name its registry host, so a typo cannot send an image
somewhere unexpected), and :func:`published_reference`, the rule that says where something
named ``repository:tag`` lands under a ``registry.target``. That rule lives with the model
(which imports nothing of the core) so that ``ProviderImage.published_reference`` can use it;
it is re-exported here for plugins. The forge's plan, its publish steps, its manifest,
``edgekit.dist`` and the publishers all use these, so what a plan shows is where an image is
pushed. Pure string work: no I/O, importable by any plugin.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from edgekit.errors import ConfigError
from edgekit.model.images import published_reference

__all__ = [
    "LayoutRef",
    "Reference",
    "Target",
    "check_digest",
    "check_tag",
    "is_layout_target",
    "parse_reference",
    "parse_target",
    "published_reference",
    "resolve_target",
]

# Grammar from distribution/reference (the Docker/OCI reference grammar).
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPO = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}"
_REFERENCE_RE = re.compile(
    rf"^(?P<host>{_HOST})/(?P<repo>{_REPO})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^(?:{_DIGEST})$")


@attrs.frozen
class Reference:
    """A reference into a registry; :attr:`digest` wins over :attr:`tag` when both are set."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if known, else the tag."""
        ref = self.digest or self.tag
        if ref is None:
            raise ConfigError.single("reference", f"{self} has neither a tag nor a digest")
        return ref

    def with_digest(self, digest: str) -> Reference:
        """The same repository, pinned to *digest* (the tag is kept for display)."""
        return attrs.evolve(self, digest=digest)

    def with_tag(self, tag: str | None) -> Reference:
        """The same repository with another tag and no digest."""
        return attrs.evolve(self, tag=tag, digest=None)

    def __str__(self) -> str:
        s = f"{self.host}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


@attrs.frozen
class LayoutRef:
    """A local OCI image layout used as a registry (``oci:PATH[:TAG]``)."""

    path: Path
    tag: str | None = None
    digest: str | None = None

    def with_tag(self, tag: str | None) -> LayoutRef:
        """The same layout with another tag and no digest."""
        return attrs.evolve(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> LayoutRef:
        """The same layout, pinned to *digest*."""
        return attrs.evolve(self, digest=digest)

    def __str__(self) -> str:
        s = f"oci:{self.path}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


Target = Reference | LayoutRef


#: ``user:password@`` before the host (after an optional scheme): never printed back.
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/@]*@(?=[^/]*(?:/|$))")


def _invalid(text: str, why: str, field: str) -> ConfigError:
    return ConfigError.single(field, f"invalid OCI reference {text!r}: {why}")


def parse_reference(text: str, *, field: str = "reference") -> Reference:
    """Parse ``host[:port]/repo[:tag][@digest]``; raise :class:`ConfigError` naming the fault."""
    if not isinstance(text, str) or not text:
        raise _invalid(str(text), "empty", field)
    if _USERINFO.match(text):  # a password pasted into the reference: redact it
        raise _invalid(
            _USERINFO.sub(r"\1***@", text, count=1),
            "credentials do not belong in a reference (use docker login or --auth-config)",
            field,
        )
    if text != text.strip() or any(c.isspace() for c in text):
        raise _invalid(text, "contains whitespace", field)
    if "://" in text:
        raise _invalid(text, "drop the URL scheme (use plain_http=True for HTTP)", field)
    m = _REFERENCE_RE.match(text)
    if m is None:
        head, sep, rest = text.partition("/")
        if not sep or not rest:
            why = "expected host[:port]/repository[:tag][@sha256:<64 hex>]"
        elif not re.fullmatch(_HOST, head):
            why = f"{head!r} is not a valid registry host"
        elif "." not in head and ":" not in head and head != "localhost":
            why = f"{head!r} is not a registry host (add the host, e.g. registry.example.com/...)"
        elif "@" in rest and not re.search(rf"@(?:{_DIGEST})$", rest):
            why = "the digest must be sha256:<64 lowercase hex> (or sha512:<128 hex>)"
        elif re.search(r"[A-Z]", rest.split(":")[0].split("@")[0]):
            why = "repository names must be lowercase"
        else:
            why = "repository or tag has invalid characters (tags: [A-Za-z0-9_.-], max 128)"
        raise _invalid(text, why, field)
    host = m["host"]
    if "." not in host and ":" not in host and host != "localhost":
        raise _invalid(
            text,
            f"{host!r} is not a registry host (add the host, e.g. registry.example.com/...)",
            field,
        )
    if len(m["repo"]) > 255:
        raise _invalid(text, "repository name longer than 255 characters", field)
    return Reference(host=host, repository=m["repo"], tag=m["tag"], digest=m["digest"])


def parse_target(text: str | Reference | LayoutRef, *, field: str = "target") -> Target:
    """Parse a registry reference or ``oci:PATH[:TAG][@DIGEST]`` (a local OCI layout)."""
    if isinstance(text, Reference | LayoutRef):
        return text
    if isinstance(text, str) and text.startswith("oci:"):
        rest = text[4:]
        digest: str | None = None
        if "@" in rest:
            rest, _, digest = rest.rpartition("@")
            if not _DIGEST_RE.match(digest):
                raise _invalid(text, "the digest must be sha256:<64 lowercase hex>", field)
        tag: str | None = None
        # A tag is the part after the last ':' that follows the last '/', so paths may hold ':'.
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise _invalid(text, f"{tag!r} is not a valid tag ([A-Za-z0-9_.-], max 128)", field)
        if not rest:
            raise _invalid(text, "oci: needs a directory path (oci:PATH[:TAG])", field)
        return LayoutRef(path=Path(rest), tag=tag, digest=digest)
    return parse_reference(text, field=field)


def check_tag(tag: str, *, field: str = "tag") -> str:
    """Return *tag* if it is a valid OCI tag, else raise :class:`ConfigError`."""
    if not _TAG_RE.match(tag):
        raise ConfigError.single(field, f"{tag!r} is not a valid tag ([A-Za-z0-9_.-], max 128)")
    return tag


def check_digest(digest: str, *, field: str = "digest") -> str:
    """Return *digest* if it is ``sha256:<64 hex>`` (or sha512), else raise ConfigError."""
    if not _DIGEST_RE.match(digest):
        raise ConfigError.single(
            field,
            f"{digest!r} is not a digest: the digest must be sha256:<64 lowercase hex> "
            "(or sha512:<128 hex>)",
        )
    return digest


def is_layout_target(target: str) -> bool:
    """Whether ``target`` names a local OCI layout (``oci:PATH``) rather than a registry."""
    return target.startswith("oci:")


def resolve_target(target: str, base: Path) -> str:
    """``target`` with a relative ``oci:PATH`` made absolute against ``base`` (the output dir).

    Registry targets are returned unchanged."""
    if is_layout_target(target) and not Path(target[4:]).is_absolute():
        return f"oci:{(base / target[4:]).resolve()}"
    return target
