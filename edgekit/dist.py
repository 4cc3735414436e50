"""Distribution from Python: push, pull and list referrers; look inside ISOs.

These are the functions ``edgekit push|pull|referrers`` and ``edgekit iso inspect`` call,
for scripts and notebooks. Each selects a backend through the plugin manager (the
``oras`` publisher and the ``pycdlib`` ISO assembler by default) and returns a typed
record that renders as a table in a notebook and has a ``to_dict()`` JSON form (the one
the CLI's ``--json`` prints)::

    import edgekit as ek

    pushed = ek.dist.push("oci:dist/images/sample:v1", "registry.local:5000/edge/sample:v1")
    ek.dist.push("dist/iso/installer.iso", "registry.local:5000/edge/sample",
                 subject=pushed.digest)
    ek.dist.referrers("registry.local:5000/edge/sample:v1")
    ek.dist.inspect_iso("dist/sites/store-1.iso").user_data

Errors are :class:`~edgekit.errors.EdgekitError`: a bad argument is a
:class:`~edgekit.errors.ConfigError` naming the parameter; a failed transfer a
:class:`~edgekit.errors.PublishError`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from edgekit import limits
from edgekit import oci_types as mt
from edgekit.errors import ConfigError, PublishError
from edgekit.oci_ref import LayoutRef, is_layout_target, parse_target
from edgekit.oci_types import Descriptor
from edgekit.plugins.interfaces import (
    BuildContext,
    InspectIsoRequest,
    IsoBootEntry,
    IsoFileEntry,
    Progress,
    Publisher,
    PullRequest,
    PullResult,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    ReferrersRequest,
    RegistryOptions,
    SelectedBackend,
)
from edgekit.plugins.interfaces import IsoInspection as _IsoInspection
from edgekit.plugins.manager import PluginManager, get_plugin_manager

__all__ = [
    "ARTIFACT_TYPES",
    "IsoBootEntry",
    "IsoFileEntry",
    "IsoInspection",
    "Pulled",
    "Pushed",
    "Referrer",
    "Referrers",
    "artifact_type_for",
    "inspect_iso",
    "pull",
    "push",
    "push_file",
    "push_image",
    "referrers",
]

#: File suffix -> edgekit artifact type, for :func:`push_file` without ``artifact_type``.
ARTIFACT_TYPES: Mapping[str, str] = {
    ".iso": mt.ISO,
    ".zst": mt.CONTENT_BUNDLE,
    ".sha256": mt.CHECKSUM,
}

ProgressCallback = Callable[[Progress], None]


def _table(caption: str, head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A small HTML table for ``_repr_html_`` (every cell escaped)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><caption>{html.escape(caption)}</caption><tr>{th}</tr>{body}</table>"


# --- records ----------------------------------------------------------------------------


@attrs.frozen
class Pushed(PushResult):
    """What :func:`push` did: the publisher's :class:`~edgekit.plugins.interfaces.PushResult`
    (the same fields, not a copy of them) with a JSON form and a notebook view."""

    @classmethod
    def from_result(cls, result: PushResult) -> Pushed:
        """The record of a publisher's :class:`~edgekit.plugins.interfaces.PushResult`."""
        return cls(**attrs.asdict(result, recurse=False))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``edgekit push --json`` without its ``ok``)."""
        return {
            "reference": self.reference,
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "uploadedBytes": self.uploaded_bytes,
            "skippedBlobs": self.skipped_blobs,
            "mountedBlobs": self.mounted_blobs,
            "uploadedBlobs": self.uploaded_blobs,
        }

    def _repr_html_(self) -> str:
        rows = [(k, f"{v:,}" if isinstance(v, int) else v) for k, v in self.to_dict().items()]
        return _table(f"pushed {self.reference}", ("field", "value"), rows)


@attrs.frozen
class Pulled(PullResult):
    """What :func:`pull` fetched and where it is: the publisher's
    :class:`~edgekit.plugins.PullResult` with a JSON form and a notebook view."""

    @classmethod
    def from_result(cls, result: PullResult) -> Pulled:
        """The record of a publisher's :class:`~edgekit.plugins.PullResult`."""
        return cls(**attrs.asdict(result, recurse=False))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``edgekit pull --json`` without its ``ok``)."""
        return {
            "reference": self.reference,
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "path": str(self.path),
        }

    def _repr_html_(self) -> str:
        return _table(f"pulled {self.reference}", ("field", "value"), list(self.to_dict().items()))


@attrs.frozen
class Referrer(Descriptor):
    """One artifact that refers to an image: its OCI :class:`~edgekit.oci_types.Descriptor`
    (``to_json()`` is the form the referrers API returns) with its file name."""

    @property
    def title(self) -> str:
        """The file name the artifact carries (``org.opencontainers.image.title``), or ``""``."""
        return self.annotations.get(mt.TITLE, "")


@attrs.frozen
class Referrers:
    """The artifacts that refer to :attr:`reference` (what :func:`referrers` returns)."""

    reference: str
    referrers: tuple[Referrer, ...]

    def __iter__(self) -> Any:
        return iter(self.referrers)

    def __len__(self) -> int:
        return len(self.referrers)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``edgekit referrers --json`` without its ``ok``)."""
        return {"reference": self.reference, "referrers": [r.to_json() for r in self.referrers]}

    def _repr_html_(self) -> str:
        rows = [(r.artifact_type or "", r.digest, f"{r.size:,}", r.title) for r in self.referrers]
        head = ("artifactType", "digest", "size", "title")
        return _table(f"referrers of {self.reference}", head, rows)


@attrs.frozen
class IsoInspection(_IsoInspection):
    """What :func:`inspect_iso` found in an ISO: the ISO assembler's
    :class:`~edgekit.plugins.IsoInspection` with a JSON form and a notebook view."""

    @classmethod
    def from_result(cls, result: _IsoInspection) -> IsoInspection:
        """The record of an ISO assembler's :class:`~edgekit.plugins.IsoInspection`."""
        return cls(**attrs.asdict(result, recurse=False))

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the ISO assembler's full description (``edgekit iso inspect --json``)."""
        return dict(self.details)

    def _repr_html_(self) -> str:
        boot = _table(
            "El Torito boot entries",
            ("platform", "image", "emulation", "load size"),
            [(e.platform, e.image, e.emulation, e.load_size or "") for e in self.boot_entries],
        )
        head = (
            f"<p><b>{html.escape(str(self.path))}</b> label <code>"
            f"{html.escape(self.volume_label)}</code>; {len(self.files)} file(s); "
            + (html.escape("; ".join(self.partition_tables)) if self.hybrid else "not hybrid")
            + "</p>"
        )
        data = f"<pre>{html.escape(self.user_data)}</pre>" if self.user_data else ""
        return head + (boot if self.boot_entries else "<p>not bootable</p>") + data


# --- functions --------------------------------------------------------------------------


def _manager(plugins: PluginManager | None) -> PluginManager:
    return plugins or get_plugin_manager()


def _publisher(publisher: str | Publisher, plugins: PluginManager | None) -> Publisher:
    if isinstance(publisher, Publisher):
        return publisher
    return _manager(plugins).publisher(publisher)


def _context(
    progress: ProgressCallback | None,
    plugins: PluginManager | None = None,
    publisher: str | Publisher = "oras",
) -> BuildContext:
    """A context for a transfer outside a forge run: relative paths are the cwd's; the
    publisher selected is the one the call names, from the manager it was given."""
    cwd = Path.cwd()
    name = publisher.name if isinstance(publisher, Publisher) else publisher
    return BuildContext(
        base_dir=cwd,
        output_dir=cwd,
        cache_dir=cwd,
        progress=progress if progress is not None else (lambda _: None),
        plugins=_manager(plugins),
        selected={"publisher": SelectedBackend(name)},
    )


def artifact_type_for(path: Path) -> str | None:
    """The artifact type :func:`push_file` gives ``path`` by its suffix, or None."""
    return ARTIFACT_TYPES.get(path.suffix)


def push_image(
    layout: str | Path,
    tag: str,
    target: str,
    *,
    options: RegistryOptions | None = None,
    publisher: str | Publisher = "oras",
    plugins: PluginManager | None = None,
    progress: ProgressCallback | None = None,
) -> Pushed:
    """Push the image tagged ``tag`` in the OCI layout ``layout`` to ``target``, byte-exact.

    ``target`` is a registry reference (``host[:port]/repo[:tag]``) or a layout
    (``oci:PATH[:TAG]``). Blobs the target has are not sent again; the tag is written last.
    ``progress`` receives byte counts (from worker threads).
    """
    backend = _publisher(publisher, plugins)
    request = PushImageRequest(Path(layout), tag, target, options or RegistryOptions())
    result = backend.push_image(request, _context(progress, plugins, publisher))
    return Pushed.from_result(result)


def push_file(
    path: str | Path,
    target: str,
    *,
    artifact_type: str | None = None,
    subject: str | None = None,
    annotations: Mapping[str, str] | None = None,
    options: RegistryOptions | None = None,
    publisher: str | Publisher = "oras",
    plugins: PluginManager | None = None,
    progress: ProgressCallback | None = None,
) -> Pushed:
    """Push the file ``path`` to ``target`` as an OCI artifact.

    ``artifact_type`` defaults to the one of its suffix (:data:`ARTIFACT_TYPES`);
    ``subject`` (a digest or reference) makes the artifact a referrer of that image.
    """
    file = Path(path)
    why = limits.file_kind_problem(file)  # a FIFO would block the upload; a dir is no file
    if why == "no such file":
        raise ConfigError.single("source", f"{path}: no such file (nor oci:PATH:TAG)")
    if why is not None:
        raise ConfigError.single("source", f"cannot read {path}: {why}")
    kind = artifact_type or artifact_type_for(file)
    if kind is None:
        raise ConfigError.single(
            "artifact_type", f"cannot tell the artifact type of {file.name}; give artifact_type"
        )
    backend = _publisher(publisher, plugins)
    request = PushArtifactRequest(
        file,
        target,
        kind,
        options or RegistryOptions(),
        annotations=dict(annotations or {}),
        subject=subject,
    )
    result = backend.push_artifact(request, _context(progress, plugins, publisher))
    return Pushed.from_result(result)


def push(
    source: str | Path,
    target: str,
    *,
    artifact_type: str | None = None,
    subject: str | None = None,
    annotations: Mapping[str, str] | None = None,
    options: RegistryOptions | None = None,
    publisher: str | Publisher = "oras",
    plugins: PluginManager | None = None,
    progress: ProgressCallback | None = None,
) -> Pushed:
    """Push ``source`` to ``target``: what ``edgekit push SOURCE TARGET`` does.

    ``source`` is an image in an OCI layout (``oci:PATH:TAG``, see :func:`push_image`) or a
    file pushed as an artifact (see :func:`push_file`; ``artifact_type``, ``subject`` and
    ``annotations`` apply to files only).
    """
    common: dict[str, Any] = {
        "options": options,
        "publisher": publisher,
        "plugins": plugins,
        "progress": progress,
    }
    if isinstance(source, str) and is_layout_target(source):
        layout = parse_target(source, field="source")
        if not isinstance(layout, LayoutRef) or not layout.tag or layout.digest:
            raise ConfigError.single("source", f"{source!r} is not oci:PATH:TAG")
        return push_image(layout.path, layout.tag, target, **common)
    return push_file(
        source,
        target,
        artifact_type=artifact_type,
        subject=subject,
        annotations=annotations,
        **common,
    )


def pull(
    reference: str,
    dest: str | Path,
    *,
    tag: str | None = None,
    options: RegistryOptions | None = None,
    publisher: str | Publisher = "oras",
    plugins: PluginManager | None = None,
    progress: ProgressCallback | None = None,
) -> Pulled:
    """Pull ``reference``: an image into the OCI layout ``dest`` (tagged ``tag``, default
    the reference's tag), an artifact into the file ``dest``; every digest is verified."""
    backend = _publisher(publisher, plugins)
    request = PullRequest(reference, Path(dest), options or RegistryOptions(), tag=tag)
    result = backend.pull(request, _context(progress, plugins, publisher))
    return Pulled.from_result(result)


def referrers(
    reference: str,
    *,
    artifact_type: str | None = None,
    options: RegistryOptions | None = None,
    publisher: str | Publisher = "oras",
    plugins: PluginManager | None = None,
) -> Referrers:
    """The artifacts (ISOs, signatures, ...) that refer to the image ``reference``,
    optionally only those of ``artifact_type``."""
    backend = _publisher(publisher, plugins)
    request = ReferrersRequest(reference, options or RegistryOptions(), artifact_type)
    found = backend.referrers(request, _context(None, plugins, publisher))
    return Referrers(
        reference,
        tuple(Referrer.from_json(d.to_json(), error=PublishError) for d in found.descriptors),
    )


def inspect_iso(
    path: str | Path, *, backend: str = "pycdlib", plugins: PluginManager | None = None
) -> IsoInspection:
    """Look inside an ISO: label, boot entries, hybrid partition tables, files, user-data.

    Raises :class:`~edgekit.errors.SourceError` when ``path`` is missing or not an ISO.
    """
    assembler = _manager(plugins).iso_assembler(backend)
    # The manager's guard has checked the result's type (BackendResultError if not).
    found = assembler.inspect_iso(InspectIsoRequest(Path(path)), _context(None, plugins))
    return IsoInspection.from_result(found)
