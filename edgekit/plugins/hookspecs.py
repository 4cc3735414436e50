"""Hook specifications: every point where a plugin can extend edgekit.

A plugin is a module or object with functions marked ``@edgekit.plugins.hookimpl`` whose
names match the specifications below. Third-party plugins are found through the ``edgekit``
entry point group. Hooks are called with keyword arguments only, and an implementation may
accept fewer arguments than its specification.

``docs/hooks.md`` is generated from this module and a test keeps the two identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from edgekit.plugins.interfaces import (
        Artifact,
        ImageBuilder,
        IsoAssembler,
        Publisher,
        Transport,
    )

PROJECT = "edgekit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration: plugins announce the backends they provide -----------------------------


@hookspec
def edgekit_image_builders() -> Sequence[type[ImageBuilder]]:
    """Return the provider-image builder classes this plugin provides.

    Called once per plugin when the plugin manager first needs backends. Return a list of
    classes, not instances: a backend is instantiated only when a step uses it. Each class
    must be a concrete subclass of ``ImageBuilder`` with a ``name``, or the whole plugin is
    skipped and reported. Two image builders with one ``name`` are a conflict: listed by
    ``edgekit plugins``, an error only for whoever selects that name.
    """
    raise NotImplementedError


@hookspec
def edgekit_iso_assemblers() -> Sequence[type[IsoAssembler]]:
    """Return the ISO assembler classes (installer and site ISOs) this plugin provides.

    Called like :func:`edgekit_image_builders`; names are unique among ISO assemblers.
    """
    raise NotImplementedError


@hookspec
def edgekit_publishers() -> Sequence[type[Publisher]]:
    """Return the publisher classes (OCI push and pull) this plugin provides.

    Called like :func:`edgekit_image_builders`; names are unique among publishers.
    """
    raise NotImplementedError


@hookspec
def edgekit_transports() -> Sequence[type[Transport]]:
    """Return the registration transport classes this plugin provides.

    Called like :func:`edgekit_image_builders`; names are unique among transports.
    """
    raise NotImplementedError


# --- pipeline: observe and extend a forge run ---------------------------------------------


@hookspec
def edgekit_image_extra_files(image_name: str, arch: str) -> Mapping[str, str] | None:
    """Return extra files to add to a provider image: path in the image -> host path.

    Called for every provider image the pipeline builds, once per architecture. This is how
    the on-device agent and its boot hooks get into images without the builder knowing about
    them. Results of all plugins are merged; two plugins claiming one path is an error.
    """
    raise NotImplementedError


@hookspec
def edgekit_installer_payload_files(iso_name: str) -> Mapping[str, str] | None:
    """Return extra files for the installer payload: path in the initrd -> host path.

    Called once per installer ISO. The files travel in the cpio archive appended to the
    image's initrd, so boot hooks placed in ``/etc/edgekit/boot.d/`` run at boot.
    """
    raise NotImplementedError


@hookspec
def edgekit_step_started(step_id: str, kind: str, backend: str) -> None:
    """Called when a pipeline step starts running (not when it is skipped as cached)."""
    raise NotImplementedError


@hookspec
def edgekit_step_finished(
    step_id: str, kind: str, artifacts: Sequence[Artifact], cached: bool
) -> None:
    """Called when a pipeline step has finished, or was skipped because its key is unchanged.

    ``cached`` is True when the step's outputs were reused without running it.
    """
    raise NotImplementedError


@hookspec
def edgekit_manifest_written(path: str, artifacts: Sequence[Artifact]) -> None:
    """Called after a forge run wrote its artifact manifest (``manifest.json``) to ``path``."""
    raise NotImplementedError
