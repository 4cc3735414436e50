"""``edgekit push``, ``pull`` and ``referrers``: formatting over :mod:`edgekit.dist`."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.progress import TaskID
from rich.table import Table

from edgekit.cli._common import (
    cli,
    console,
    emit_json,
    json_option,
    key_values,
    progress_bars,
    user_errors,
)
from edgekit.errors import ConfigError
from edgekit.plugins.interfaces import Progress, RegistryOptions

ProgressCallback = Callable[[Progress], None] | None


def _registry_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add the registry flags; the command receives them as ``options`` (and ``publisher``)."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        plain_http: bool,
        ca_cert: Path | None,
        auth_config: Path | None,
        publisher: str,
        as_json: bool,
        **kwargs: Any,
    ) -> None:
        options = RegistryOptions(plain_http=plain_http, ca_cert=ca_cert, auth_config=auth_config)
        func(*args, publisher=publisher, options=options, as_json=as_json, **kwargs)

    decorated: Callable[..., None] = wrapper
    for option in (
        click.option(
            "--plain-http", is_flag=True, help="Talk plain HTTP (a registry without TLS)."
        ),
        click.option(
            "--ca-cert",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="Verify the registry's certificate with this CA bundle.",
        ),
        click.option(
            "--auth-config",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="Docker-style config.json with credentials (default: ~/.docker/config.json).",
        ),
        click.option(
            "--publisher", default="oras", show_default=True, help="Publisher backend to use."
        ),
        json_option,
    ):
        decorated = option(decorated)
    return decorated


@contextmanager
def _transfer_progress(as_json: bool, label: str) -> Iterator[ProgressCallback]:
    """A bytes-and-rate progress bar on stderr for a push or pull (none with --json).

    The bar appears with the first progress report, so an argument refused before any
    transfer prints only its error.
    """
    if as_json:
        yield None
        return
    bars = progress_bars()
    lock = threading.Lock()  # reports come from the publisher's worker threads
    task: TaskID | None = None

    def on_progress(p: Progress) -> None:
        nonlocal task
        with lock:
            if task is None:
                bars.start()
                task = bars.add_task(label, total=None)
            bars.update(task, completed=p.done, total=p.total)

    try:
        yield on_progress
    finally:
        with lock:
            if task is not None:
                bars.stop()


@cli.command()
@click.argument("source")
@click.argument("target")
@click.option("--artifact-type", help="artifactType for a file (default: by file suffix).")
@click.option("--subject", help="Make the artifact refer to this manifest (digest or reference).")
@click.option(
    "--annotation", "annotations", multiple=True, metavar="KEY=VALUE", help="Add an annotation."
)
@_registry_options
def push(
    source: str,
    target: str,
    artifact_type: str | None,
    subject: str | None,
    annotations: tuple[str, ...],
    publisher: str,
    options: RegistryOptions,
    as_json: bool,
) -> None:
    """Push SOURCE to TARGET.

    SOURCE is an image in an OCI layout (oci:PATH:TAG) or a file pushed as an artifact.
    TARGET is a registry reference (host[:port]/repo[:tag]) or a layout (oci:PATH[:TAG]).
    """
    from edgekit import dist

    label = f"push {source.rpartition(':')[2] if source.startswith('oci:') else Path(source).name}"
    with user_errors(as_json):
        notes = key_values(annotations, "--annotation")
        with _transfer_progress(as_json, label) as progress:
            result = dist.push(
                source,
                target,
                artifact_type=artifact_type,
                subject=subject,
                annotations=notes,
                options=options,
                publisher=publisher,
                progress=progress,
            )
    if as_json:
        emit_json({"ok": True, **result.to_dict()})
    else:
        click.echo(
            f"pushed {result.reference} {result.digest} "
            f"({result.uploaded_bytes:,} bytes sent, {result.skipped_blobs} blob(s) already there)"
        )


@cli.command()
@click.argument("reference")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--tag", help="Tag in the destination layout (images; default: the reference's).")
@_registry_options
def pull(
    reference: str,
    dest: Path,
    tag: str | None,
    publisher: str,
    options: RegistryOptions,
    as_json: bool,
) -> None:
    """Pull REFERENCE: an image into the OCI layout DEST, an artifact into the file DEST.

    DEST may be written oci:PATH[:TAG], as push's TARGET is (TAG as --tag).
    """
    from edgekit import dist

    with user_errors(as_json), _transfer_progress(as_json, f"pull {reference}") as progress:
        if str(dest).startswith("oci:"):  # else a directory literally named 'oci:...'
            from edgekit.oci_ref import LayoutRef, parse_target

            layout = parse_target(str(dest), field="dest")
            assert isinstance(layout, LayoutRef)
            if layout.digest:
                raise ConfigError.single("dest", f"{dest}: a layout to pull into has no digest")
            dest, tag = layout.path, tag or layout.tag
        result = dist.pull(
            reference, dest, tag=tag, options=options, publisher=publisher, progress=progress
        )
    if as_json:
        emit_json({"ok": True, **result.to_dict()})
    else:
        click.echo(f"pulled {result.reference} {result.digest} -> {result.path}")


@cli.command()
@click.argument("reference")
@click.option("--artifact-type", help="Only referrers of this artifactType.")
@_registry_options
def referrers(
    reference: str,
    artifact_type: str | None,
    publisher: str,
    options: RegistryOptions,
    as_json: bool,
) -> None:
    """List the artifacts (ISOs, signatures, ...) that refer to the image REFERENCE."""
    from edgekit import dist

    with user_errors(as_json):
        found = dist.referrers(
            reference, artifact_type=artifact_type, options=options, publisher=publisher
        )
    if as_json:
        emit_json({"ok": True, **found.to_dict()})
        return
    table = Table(title=f"referrers of {reference}")
    for col in ("artifactType", "digest", "size", "title"):
        table.add_column(col, overflow="fold")
    for r in found:
        table.add_row(r.artifact_type or "", r.digest, f"{r.size:,}", r.title)
    console().print(table)
