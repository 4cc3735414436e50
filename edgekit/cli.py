"""The ``edgekit`` command: a thin layer over the Python API that adds formatting only.

Exit codes: 0 success, 1 failure, 2 usage or configuration error. Errors a user can cause
print a message (every problem, with its path) and never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from edgekit import __version__
from edgekit.errors import ConfigError, EdgekitError
from edgekit.plugins.interfaces import Publisher, RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)
out_console = Console()

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))


def fail(error: EdgekitError, *, as_json: bool = False) -> NoReturn:
    """Report a user error (no traceback) and exit with its code."""
    if as_json:
        doc: dict[str, Any] = {"ok": False, "error": type(error).__name__, "message": str(error)}
        if isinstance(error, ConfigError):
            doc["problems"] = [
                {"path": p.path, "message": p.message, "line": p.line, "source": p.source}
                for p in error.problems
            ]
        _emit_json(doc)
    else:
        click.echo(f"{click.style('error:', fg='red', bold=True)} {error}", err=True)
    sys.exit(error.exit_code)


@contextmanager
def user_errors(as_json: bool = False) -> Iterator[None]:
    """Turn :class:`EdgekitError` into a clean message and exit code."""
    try:
        yield
    except EdgekitError as exc:
        fail(exc, as_json=as_json)
    except OSError as exc:  # a path the user gave that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        fail(EdgekitError(f"{where}{exc.strerror or exc}"), as_json=as_json)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """edgekit: build and run edge Kubernetes fleets from Python or the shell."""


# --- validate / schema / plugins ----------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(["forge", "profile", "cluster", "site", "user-data", "pack", "host"]),
    help="What the file holds; detected when omitted.",
)
@json_option
def validate(file: Path, kind: str | None, as_json: bool) -> None:
    """Check FILE strictly and report every problem with its path."""
    from edgekit import config

    with user_errors(as_json):
        if not file.exists():
            raise ConfigError.single("$", f"{file}: no such file")
        obj: object = config.load(file, config.KINDS[kind] if kind else None)
        kind = kind or next(k for k, cls in config.KINDS.items() if type(obj) is cls)
        if kind == "forge":
            from edgekit.forge import Forge
            from edgekit.model import Forge as ForgeSpec

            assert isinstance(obj, ForgeSpec)
            Forge(obj, base_dir=file.resolve().parent, source=str(file))  # inventory, sites
    if as_json:
        _emit_json({"ok": True, "kind": kind, "file": str(file)})
    else:
        out_console.print(f"[green]ok[/]: {file} is a valid {kind}", highlight=False)


@cli.command()
@click.option(
    "--kind",
    type=click.Choice(["forge"]),
    default="forge",
    show_default=True,
    help="Which document's schema.",
)
def schema(kind: str) -> None:
    """Print the JSON Schema of the forge file (for editor completion)."""
    from edgekit.schema import forge_json_schema

    _emit_json(forge_json_schema())


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List plugins, their backends, and any plugin that failed to load."""
    from edgekit.plugins import get_plugin_manager

    pm = get_plugin_manager()
    with user_errors(as_json):
        infos = pm.backends()
    if as_json:
        _emit_json(
            {
                "backends": [
                    {
                        "capability": i.capability,
                        "name": i.name,
                        "plugin": i.plugin,
                        "distribution": i.distribution,
                        "builtin": i.builtin,
                        "unavailable": i.cls.unavailable_reason(),
                    }
                    for i in infos
                ],
                "plugins": [
                    {"name": name, "distribution": dist, "hooks": pm.hooks_of(name)}
                    for name, dist in pm.plugins()
                ],
                "broken": [
                    {"plugin": b.plugin, "distribution": b.distribution, "error": b.error}
                    for b in pm.broken
                ],
            }
        )
        return
    table = Table(title="edgekit backends")
    for col in ("capability", "name", "distribution", "status"):
        table.add_column(col)
    for i in infos:
        reason = i.cls.unavailable_reason()
        table.add_row(i.capability, i.name, i.distribution, reason or "ok")
    out_console.print(table)
    loaded = Table(title="plugins and the hooks they implement")
    for col in ("plugin", "distribution", "hooks"):
        loaded.add_column(col, overflow="fold")
    for name, dist in pm.plugins():
        loaded.add_row(name, dist, ", ".join(pm.hooks_of(name)))
    out_console.print(loaded)
    for b in pm.broken:
        warn = click.style("warning:", fg="yellow")
        click.echo(
            f"{warn} plugin {b.plugin!r} ({b.distribution}) failed to load: {b.error}", err=True
        )


# --- forge --------------------------------------------------------------------------------


class ProgressView:
    """Draws one progress bar per running step from forge events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: Any) -> None:
        from edgekit.forge import StepFinished, StepStarted
        from edgekit.plugins.interfaces import Progress as StepProgress

        if isinstance(event, StepStarted):
            self.tasks[event.step.id] = self.progress.add_task(event.step.id, total=None)
        elif isinstance(event, StepProgress):
            task = self.tasks.get(event.step)
            if task is not None:
                self.progress.update(task, completed=event.done, total=event.total)
        elif isinstance(event, StepFinished):
            task = self.tasks.get(event.step.id)
            label = f"{event.step.id} [dim](cached)[/]" if event.cached else event.step.id
            if task is None:
                task = self.progress.add_task(label, total=1)
            size = sum(a.size for a in event.artifacts)
            self.progress.update(task, description=label, total=size or 1, completed=size or 1)


def _print_plan(plan: Any) -> None:
    out_console.print(plan)
    for note in plan.notes:
        click.echo(f"{click.style('note:', fg='yellow')} {note}", err=True)


def _progress_bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def _run_forge(
    file: Path,
    *,
    plan_only: bool,
    no_cache: bool,
    output: Path | None,
    as_json: bool,
    kinds: list[str] | None = None,
) -> None:
    """Shared by ``forge`` and ``build ...``: plan, run with progress bars, summarise."""
    from edgekit.forge import Forge

    with user_errors(as_json):
        if not file.exists():
            raise ConfigError.single("$", f"{file}: no such file")
        pipeline = Forge.load(file, output_dir=output)
        plan = pipeline.plan(kinds)
        if plan_only:
            if as_json:
                _emit_json(plan.to_dict())
            else:
                _print_plan(plan)
            return
        if as_json:
            result = pipeline.run(no_cache=no_cache, kinds=kinds)
        else:
            _print_plan(plan)
            with _progress_bars() as progress:
                result = pipeline.run(no_cache=no_cache, events=ProgressView(progress), kinds=kinds)
    if as_json:
        _emit_json(
            {
                "ok": True,
                "manifest": str(result.manifest_path),
                "ran": list(result.ran),
                "cached": list(result.cached),
                "artifacts": [
                    {
                        "name": a.name,
                        "kind": a.kind,
                        "path": str(a.path),
                        "digest": a.digest,
                        "size": a.size,
                        "reference": a.reference,
                    }
                    for a in result.artifacts.values()
                ],
            }
        )
        return
    table = Table(title=f"artifacts (manifest: {result.manifest_path})")
    for col in ("artifact", "size", "digest", "reference"):
        table.add_column(col, overflow="fold")
    for a in result.artifacts.values():
        table.add_row(a.name, f"{a.size:,}", a.digest[:19], a.reference or "")
    out_console.print(table)


def _forge_options(func: F) -> F:
    func = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))(func)
    func = click.option("--plan", "plan_only", is_flag=True, help="Only show what would run.")(func)
    func = click.option(
        "--no-cache", is_flag=True, help="Run every step, even those whose key is unchanged."
    )(func)
    func = click.option(
        "--output",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        help="Output directory (default: the forge file's `output`, else ./dist).",
    )(func)
    return json_option(func)


@cli.command()
@_forge_options
def forge(file: Path, plan_only: bool, no_cache: bool, output: Path | None, as_json: bool) -> None:
    """Run the EdgeForge pipeline of FILE: images, ISOs, site ISOs, publishing."""
    _run_forge(file, plan_only=plan_only, no_cache=no_cache, output=output, as_json=as_json)


@cli.group()
def build() -> None:
    """Run one part of a forge file (and what it depends on), without publishing."""


def _build_command(name: str, kind: str, summary: str) -> None:
    """Add ``edgekit build NAME``: the forge pipeline limited to steps of ``kind``."""

    @build.command(name, help=summary)
    @_forge_options
    def command(
        file: Path, plan_only: bool, no_cache: bool, output: Path | None, as_json: bool
    ) -> None:
        _run_forge(
            file,
            plan_only=plan_only,
            no_cache=no_cache,
            output=output,
            as_json=as_json,
            kinds=[kind],
        )


_build_command(
    "image", "provider-image", "Build the provider images of FILE into OCI layouts (OUTPUT/images)."
)
_build_command(
    "iso", "installer-iso", "Build the installer ISO of FILE and the image it embeds (OUTPUT/iso)."
)
_build_command(
    "site-isos", "site-isos", "Build one small cidata ISO per site of FILE (OUTPUT/sites)."
)


# --- ISOs ---------------------------------------------------------------------------------


@cli.group()
def iso() -> None:
    """Look inside ISOs."""


@iso.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", default="pycdlib", show_default=True, help="ISO assembler to use.")
@json_option
def iso_inspect(file: Path, backend: str, as_json: bool) -> None:
    """Show an ISO's label, boot entries, partitions, files and embedded user-data."""
    from edgekit.plugins import get_plugin_manager

    with user_errors(as_json):
        info = get_plugin_manager().iso_assembler(backend).inspect_iso(file)
    if as_json:
        _emit_json(info)
        return
    out_console.print(f"[bold]{file}[/]  label [cyan]{info.get('volume_label')}[/]")
    entries = info.get("boot_entries", [])
    if entries:
        boot = Table(title="El Torito boot entries")
        for col in ("platform", "image", "emulation", "load size"):
            boot.add_column(col)
        for e in entries:
            boot.add_row(
                str(e.get("platform")),
                str(e.get("image_path") or f"sector {e.get('load_rba')}"),
                str(e.get("emulation", "")),
                str(e.get("load_size", "")),
            )
        out_console.print(boot)
    else:
        out_console.print("not bootable (no El Torito boot catalog)")
    hybrid = info.get("hybrid") or {}
    if hybrid.get("is_hybrid"):
        gpt = hybrid.get("gpt") or {}
        parts = [f"MBR with {len(hybrid.get('mbr_partitions', []))} partition(s)"]
        if gpt:
            checks = ("header_crc_valid", "entries_crc_valid", "backup_valid")
            ok = all(gpt.get(c) for c in checks)
            parts.append(
                f"GPT with {len(gpt.get('partitions', []))} partition(s), "
                + ("CRCs valid" if ok else "[red]CRCs INVALID[/]")
            )
        out_console.print("hybrid (boots as a disk too): " + "; ".join(parts))
    else:
        out_console.print("not hybrid (boots from optical media only)")
    files = info.get("files", [])
    out_console.print(f"{len(files)} file(s)")
    for f in files[:50]:
        out_console.print(f"  {f.get('path')}  {f.get('size', '')}", highlight=False)
    if len(files) > 50:
        out_console.print(f"  ... and {len(files) - 50} more (see --json)")
    user_data = info.get("user_data")
    if user_data:
        out_console.print("[bold]user-data:[/]")
        click.echo(user_data)


@iso.command("boot")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--uefi", is_flag=True, help="Boot with UEFI firmware (OVMF) instead of BIOS.")
@click.option("--disk", is_flag=True, help="Boot the image as a disk (USB stick), not a CD.")
@click.option(
    "--site-iso",
    "site_isos",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Attach a site ISO (cidata) as an extra CD; repeatable.",
)
@click.option("--until", help="Stop once the console shows this text (exit 0).")
@click.option("--timeout", default=600.0, show_default=True, help="Give up after SECONDS.")
def iso_boot(
    file: Path,
    uefi: bool,
    disk: bool,
    site_isos: tuple[Path, ...],
    until: str | None,
    timeout: float,
) -> None:
    """Boot FILE in QEMU and stream its serial console until it powers off.

    The guest reaches this machine's 127.0.0.1 as 10.0.2.2 (e.g. a local hub).
    """
    import time

    from edgekit.vm import VirtualMachine, VmError

    with user_errors():
        vm = VirtualMachine(
            iso=file,
            firmware="uefi" if uefi else "bios",
            media="disk" if disk else "cd",
            cdroms=site_isos,
        )
        shown = 0
        deadline = time.monotonic() + timeout
        with vm:
            while True:
                text = vm.text()
                if len(text) > shown:
                    click.echo(text[shown:], nl=False)
                    shown = len(text)
                if until is not None and until in text:
                    return
                if not vm.running:
                    click.echo(vm.text()[shown:], nl=False)
                    if until is not None:
                        raise VmError(f"the VM powered off without showing {until!r}")
                    return
                if time.monotonic() > deadline:
                    raise VmError(f"the VM was still running after {timeout:.0f} s")
                time.sleep(0.2)


# --- distribution -------------------------------------------------------------------------


def _registry_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add the registry flags; the command receives ``backend`` and ``options`` instead."""
    import functools

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
        from edgekit.plugins import get_plugin_manager
        from edgekit.plugins.interfaces import RegistryOptions

        options = RegistryOptions(plain_http=plain_http, ca_cert=ca_cert, auth_config=auth_config)
        with user_errors(as_json):
            backend = get_plugin_manager().publisher(publisher)
        func(*args, backend=backend, options=options, as_json=as_json, **kwargs)

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


#: File suffix -> edgekit artifact type, for `edgekit push FILE`.
ARTIFACT_TYPES = {
    ".iso": "application/vnd.edgekit.iso.v1",
    ".zst": "application/vnd.edgekit.content-bundle.v1",
    ".sha256": "application/vnd.edgekit.checksum.v1",
}


def _transfer(action: Callable[[Any], Any], as_json: bool, label: str) -> Any:
    """Run a push/pull with a bytes-and-rate progress bar (none with --json)."""
    from edgekit.plugins.interfaces import BuildContext
    from edgekit.plugins.interfaces import Progress as StepProgress

    cwd = Path.cwd()
    if as_json:
        return action(BuildContext(base_dir=cwd, output_dir=cwd, cache_dir=cwd))
    with _progress_bars() as progress:
        task = progress.add_task(label, total=None)

        def on_progress(p: StepProgress) -> None:
            progress.update(task, completed=p.done, total=p.total)

        ctx = BuildContext(base_dir=cwd, output_dir=cwd, cache_dir=cwd, progress=on_progress)
        return action(ctx)


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
    backend: Publisher,
    options: RegistryOptions,
    as_json: bool,
) -> None:
    """Push SOURCE to TARGET.

    SOURCE is an image in an OCI layout (oci:PATH:TAG) or a file pushed as an artifact.
    TARGET is a registry reference (host[:port]/repo[:tag]) or a layout (oci:PATH[:TAG]).
    """
    with user_errors(as_json):
        notes = {}
        for item in annotations:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError.single("--annotation", f"{item!r} is not KEY=VALUE")
            notes[key] = value
        if source.startswith("oci:"):
            path, sep, tag = source[4:].rpartition(":")
            if not sep or not path or not tag:
                raise ConfigError.single("SOURCE", f"{source!r} is not oci:PATH:TAG")
            result = _transfer(
                lambda ctx: backend.push_image(Path(path), tag, target, ctx, options),
                as_json,
                f"push {tag}",
            )
        else:
            file = Path(source)
            if not file.is_file():
                raise ConfigError.single("SOURCE", f"{source}: no such file (nor oci:PATH:TAG)")
            kind = artifact_type or ARTIFACT_TYPES.get(file.suffix)
            if kind is None:
                raise ConfigError.single(
                    "--artifact-type",
                    f"cannot tell the artifact type of {file.name}; give --artifact-type",
                )
            result = _transfer(
                lambda ctx: backend.push_artifact(
                    file, target, kind, ctx, options, annotations=notes, subject=subject
                ),
                as_json,
                f"push {file.name}",
            )
    doc = {
        "ok": True,
        "reference": result.reference,
        "digest": result.digest,
        "mediaType": result.media_type,
        "size": result.size,
        "uploadedBytes": result.uploaded_bytes,
        "skippedBlobs": result.skipped_blobs,
        "mountedBlobs": result.mounted_blobs,
    }
    if as_json:
        _emit_json(doc)
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
    backend: Publisher,
    options: RegistryOptions,
    as_json: bool,
) -> None:
    """Pull REFERENCE: an image into the OCI layout DEST, an artifact into the file DEST."""
    with user_errors(as_json):
        result = _transfer(
            lambda ctx: backend.pull(reference, dest, ctx, options, tag=tag),
            as_json,
            f"pull {reference}",
        )
    if as_json:
        _emit_json(
            {
                "ok": True,
                "reference": result.reference,
                "digest": result.digest,
                "mediaType": result.media_type,
                "size": result.size,
                "path": str(dest),
            }
        )
    else:
        click.echo(f"pulled {result.reference} {result.digest} -> {dest}")


@cli.command()
@click.argument("reference")
@click.option("--artifact-type", help="Only referrers of this artifactType.")
@_registry_options
def referrers(
    reference: str,
    artifact_type: str | None,
    backend: Publisher,
    options: RegistryOptions,
    as_json: bool,
) -> None:
    """List the artifacts (ISOs, signatures, ...) that refer to the image REFERENCE."""
    from edgekit.plugins import BuildContext

    with user_errors(as_json):
        cwd = Path.cwd()
        ctx = BuildContext(base_dir=cwd, output_dir=cwd, cache_dir=cwd)
        found = backend.referrers(reference, ctx, options, artifact_type=artifact_type)
    if as_json:
        _emit_json({"ok": True, "reference": reference, "referrers": list(found)})
        return
    table = Table(title=f"referrers of {reference}")
    for col in ("artifactType", "digest", "size", "title"):
        table.add_column(col, overflow="fold")
    for d in found:
        title = (d.get("annotations") or {}).get("org.opencontainers.image.title", "")
        table.add_row(d.get("artifactType", ""), d["digest"], f"{d['size']:,}", title)
    out_console.print(table)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (default: the forge file's `output`, else ./dist).",
)
@click.option("--no-boot", is_flag=True, help="Build and serve, but do not boot a host.")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds for the boot.")
@json_option
def demo(file: Path, output: Path | None, no_boot: bool, timeout: float, as_json: bool) -> None:
    """The whole quick start on this machine: hub, build, boot a host, cluster it.

    Starts the embedded hub, creates a registration token, runs the forge pipeline with it,
    then (when QEMU is installed) boots the installer with the first site's ISO, waits for
    the host to register, puts it in a single-node cluster and waits for its agent to take
    the assignment. Ends with a summary of every artifact and the host.
    """
    from edgekit.demo import run_demo

    def say(text: str) -> None:
        if not as_json:
            err_console.print(text, highlight=False, markup=False)

    with user_errors(as_json):
        if not file.exists():
            raise ConfigError.single("$", f"{file}: no such file")
        if as_json:
            result = run_demo(file, output_dir=output, boot=not no_boot, timeout=timeout, say=say)
        else:
            with _progress_bars() as progress:
                result = run_demo(
                    file,
                    output_dir=output,
                    boot=not no_boot,
                    timeout=timeout,
                    events=ProgressView(progress),
                    say=say,
                )
    host = result.host
    host_doc = (
        {"uid": host.uid, "site": host.site, "state": host.state, "address": host.address}
        if host is not None
        else None
    )
    if as_json:
        _emit_json(
            {
                "ok": True,
                "manifest": str(result.forge.manifest_path),
                "artifacts": [
                    {"name": a.name, "path": str(a.path), "digest": a.digest, "size": a.size}
                    for a in result.forge.artifacts.values()
                ],
                "hub": {"url": result.hub_url, "db": str(result.hub_db)},
                "host": host_doc,
                "cluster": result.cluster,
                "assignment": result.assignment,
                "bootSkipped": result.boot_skipped,
            }
        )
        return
    table = Table(title=f"artifacts (manifest: {result.forge.manifest_path})")
    for col in ("artifact", "size", "digest"):
        table.add_column(col, overflow="fold")
    for a in sorted(result.forge.artifacts.values(), key=lambda a: a.name):
        table.add_row(a.name, f"{a.size:,}", a.digest[:19])
    out_console.print(table)
    if host_doc is not None:
        hosts_table = Table(title=f"hosts registered with the hub ({result.hub_db})")
        for col in ("uid", "site", "state", "address", "cluster", "agent reports"):
            hosts_table.add_column(col, overflow="fold")
        hosts_table.add_row(
            host_doc["uid"], host_doc["site"] or "", host_doc["state"], host_doc["address"] or "",
            result.cluster or "", result.assignment or "",
        )  # fmt: skip
        out_console.print(hosts_table)
    else:
        out_console.print(f"no host was booted: {result.boot_skipped}")


# --- registration hub ---------------------------------------------------------------------

HUB_URL_ENV = "EDGEKIT_HUB_URL"
hub_url_option = click.option(
    "--hub",
    "hub_url",
    envvar=HUB_URL_ENV,
    default="http://127.0.0.1:8080",
    show_default=True,
    help=f"The hub's URL (or ${HUB_URL_ENV}). The admin API key comes from "
    "$EDGEKIT_HUB_API_KEY, never from a flag.",
)
ca_option = click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Verify the hub's TLS certificate with this CA bundle.",
)


def _admin(hub_url: str, ca_cert: Path | None) -> Any:
    import os

    from edgekit.hub import connect

    key = os.environ.get("EDGEKIT_HUB_API_KEY")
    if not key:
        raise ConfigError.single(
            "$EDGEKIT_HUB_API_KEY",
            "is not set: admin commands need the hub's API key in this environment variable",
        )
    return connect(hub_url, api_key=key, ca_cert=ca_cert)


def _time_text(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


@cli.group()
def hub() -> None:
    """Run the embedded registration hub and import airgapped registrations."""


@hub.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--db",
    "db_path",
    default="edgekit-hub.db",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SQLite database (created on first start).",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def hub_serve(
    host: str, port: int, db_path: Path, tls_cert: Path | None, tls_key: Path | None
) -> None:
    """Serve the hub until interrupted.

    The admin API key is $EDGEKIT_HUB_API_KEY, else the one stored in the database, else a
    new one generated on first start and printed once.
    """
    from edgekit.hub import TlsFiles, serve

    with user_errors():
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError.single("--tls-cert/--tls-key", "give both, or neither")
        tls = TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None
        serve(host, port, db_path, tls=tls)


@hub.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--db",
    "db_path",
    default="edgekit-hub.db",
    show_default=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The hub's SQLite database (the hub may be running).",
)
@json_option
def hub_import(paths: tuple[Path, ...], db_path: Path, as_json: bool) -> None:
    """Import registration bundles written by airgapped hosts (files or media directories).

    Each bundle's HMAC is checked against the token it names; a tampered or unknown bundle
    is refused and nothing of it is stored. Exit 1 if any bundle was refused.
    """
    from edgekit.hub.airgap import find_bundles, import_registrations

    with user_errors(as_json):
        results = import_registrations(db_path, find_bundles(paths))
    if as_json:
        _emit_json(
            {
                "ok": all(r.ok for r in results),
                "results": [
                    {
                        "path": str(r.path),
                        "ok": r.ok,
                        "hostUid": r.host_uid,
                        "site": r.site,
                        "error": r.error,
                    }
                    for r in results
                ],
            }
        )
    else:
        for r in results:
            if r.ok:
                click.echo(f"imported {r.host_uid} (site {r.site}) from {r.path}")
            else:
                click.echo(f"{click.style('refused:', fg='red')} {r.path}: {r.error}", err=True)
    if not all(r.ok for r in results):
        sys.exit(1)


@cli.group()
def token() -> None:
    """Registration tokens: create, list, revoke, and QR codes for them."""


@token.command("create")
@click.argument("name")
@click.option("--site", help="Bind the token to a site: hosts register into it.")
@click.option("--expires-in", default="30d", show_default=True, help="e.g. 12h, 30d.")
@click.option("--max-hosts", type=click.IntRange(min=1), help="At most this many hosts.")
@click.option("--project", help="The project hosts join.")
@hub_url_option
@ca_option
@json_option
def token_create(
    name: str,
    site: str | None,
    expires_in: str,
    max_hosts: int | None,
    project: str | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Create a token. Its secret is printed once, here, and never again."""
    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        created = client.tokens.create(
            name, site=site, expires_in=expires_in, max_hosts=max_hosts, project=project
        )
    secret = created.secret.reveal() if created.secret is not None else ""
    if as_json:
        _emit_json({"uid": created.uid, "name": created.name, "site": created.site,
                    "expiry": _time_text(created.expiry), "token": secret})  # fmt: skip
    else:
        click.echo(f"token {created.uid} ({created.name}), expires {_time_text(created.expiry)}")
        click.echo(secret)


@token.command("list")
@hub_url_option
@ca_option
@json_option
def token_list(hub_url: str, ca_cert: Path | None, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        tokens = client.tokens.list()
    rows = [
        {
            "uid": t.uid,
            "name": t.name,
            "site": t.site,
            "state": t.state,
            "expiry": _time_text(t.expiry),
            "maxHosts": t.max_hosts,
            "registeredHosts": t.registered_hosts,
        }
        for t in tokens
    ]
    if as_json:
        _emit_json(rows)
        return
    table = Table(title="registration tokens")
    for col in ("uid", "name", "site", "state", "expiry", "hosts"):
        table.add_column(col, overflow="fold")
    for r in rows:
        hosts = f"{r['registeredHosts']}" + (f"/{r['maxHosts']}" if r["maxHosts"] else "")
        table.add_row(r["uid"], r["name"], r["site"] or "", r["state"], r["expiry"], hosts)
    out_console.print(table)


@token.command("revoke")
@click.argument("uid")
@hub_url_option
@ca_option
def token_revoke(uid: str, hub_url: str, ca_cert: Path | None) -> None:
    """Revoke a token: hosts can no longer register with it."""
    with user_errors(), _admin(hub_url, ca_cert) as client:
        revoked = client.tokens.revoke(uid)
    click.echo(f"token {revoked.uid} is {revoked.state}")


@token.command("qr")
@click.option("--endpoint", required=True, help="The hub URL hosts register with.")
@click.option(
    "--token-env",
    default="EDGEKIT_REGISTRATION_TOKEN",
    show_default=True,
    help="The environment variable holding the token (tokens never go on the command line).",
)
def token_qr(endpoint: str, token_env: str) -> None:
    """Print a registration URL for a token and render it as a QR code.

    As with Palette's QR registration, a device (or a technician's phone) scans it to
    register with the token.
    """
    import os

    from edgekit.hub.qr import registration_url, render_qr

    with user_errors():
        secret = os.environ.get(token_env)
        if not secret:
            raise ConfigError.single(f"${token_env}", "is not set: put the token there")
        url = registration_url(endpoint, secret)
    click.echo(url)
    click.echo(render_qr(url))


@cli.command()
@click.option("--site", help="Only hosts of this site.")
@click.option("--state", help="Only hosts in this state (registered, ready, in_use, ...).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only hosts with it.")
@hub_url_option
@ca_option
@json_option
def hosts(
    site: str | None,
    state: str | None,
    tags: tuple[str, ...],
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Search the hosts registered with a hub."""
    with user_errors(as_json):
        wanted = {}
        for item in tags:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError.single("--tag", f"{item!r} is not KEY=VALUE")
            wanted[key] = value
        with _admin(hub_url, ca_cert) as client:
            found = client.hosts.search(site=site, state=state, tags=wanted or None)
    rows = [
        {
            "uid": h.uid,
            "site": h.site,
            "state": h.state,
            "address": h.address,
            "arch": h.arch,
            "lastSeen": _time_text(h.last_seen),
            "cluster": h.cluster_uid,
            "tags": dict(h.tags),
        }
        for h in found
    ]
    if as_json:
        _emit_json(rows)
        return
    table = Table(title=f"hosts at {hub_url}")
    for col in ("uid", "site", "state", "address", "arch", "last seen", "cluster"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["uid"], r["site"] or "", r["state"], r["address"] or "", r["arch"] or "",
            r["lastSeen"], r["cluster"] or "",
        )  # fmt: skip
    out_console.print(table)


@cli.group()
def cluster() -> None:
    """Clusters formed from registered hosts."""


@cluster.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--provider-image", help="The provider image reference hosts install.")
@hub_url_option
@ca_option
@json_option
def cluster_create(
    file: Path, provider_image: str | None, hub_url: str, ca_cert: Path | None, as_json: bool
) -> None:
    """Create the cluster described in FILE from hosts registered with the hub.

    The hub checks the pools, VIP and architectures against its hosts and gives each host
    its desired state, which the host's agent fetches.
    """
    from edgekit import config
    from edgekit.model import Cluster

    with user_errors(as_json):
        spec = config.load(file, Cluster)
        with _admin(hub_url, ca_cert) as client:
            created = client.clusters.create(spec, provider_image=provider_image)
    if as_json:
        _emit_json({"ok": True, "uid": created.uid, "name": created.name})
    else:
        click.echo(f"cluster {created.name} created ({created.uid})")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``edgekit`` command."""
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except EdgekitError as exc:  # raised outside a command's own handler
        fail(exc)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
