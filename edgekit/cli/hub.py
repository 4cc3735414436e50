"""``edgekit hub serve|import``, ``token ...``, ``hosts [reset]``: the hub; the cluster
lifecycle (``profile``, ``cluster``, ``hosts summary``, ``events``) is in :mod:`.clusters`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from edgekit.cli._common import cli, console, emit_json, json_option, key_values, user_errors
from edgekit.cli.dist import _registry_options
from edgekit.errors import ConfigError, MissingExtraError
from edgekit.plugins.interfaces import RegistryOptions

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


F = TypeVar("F", bound=Callable[..., Any])


def _db_option(*, existing: bool, help: str) -> Callable[[F], F]:
    """``--db``: a file path, ``sqlite:///PATH`` or ``postgresql://...`` (kept a string: a
    ``Path`` would collapse a URL's ``//``). ``existing``: a SQLite file must already exist
    (a command that reads a hub must not create an empty one)."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        path = value if "://" not in value else None
        if value.startswith("sqlite:///"):
            path = value[len("sqlite:///") :]
        if existing and path is not None and not Path(path).is_file():
            # A relative default is read from the current directory: name the file looked
            # for, so a user in another directory sees why, and say what to give instead.
            raise click.BadParameter(
                f"{path!r}: no such SQLite database ({Path(path).absolute()} does not exist;"
                " give --db the database `edgekit hub serve` uses)",
                ctx,
                param,
            )
        return value

    return click.option(
        "--db",
        "db_path",
        default="edgekit-hub.db",
        show_default=True,
        callback=check,
        metavar="PATH|URL",
        help=help + " A file path, sqlite:///PATH or postgresql://user@host/db.",
    )


@cli.group()
def hub() -> None:
    """Run the embedded registration hub and import airgapped registrations."""


@hub.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free one).",
)
@_db_option(existing=False, help="The hub's database (SQLite: created on first start).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--rollout-interval",
    type=click.FloatRange(min=0.05, max=3600),
    default=1.0,
    show_default=True,
    help="Seconds between two ticks of the roll-out controller.",
)
def hub_serve(
    host: str,
    port: int,
    db_path: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    rollout_interval: float,
) -> None:
    """Serve the hub until interrupted.

    The admin API key is $EDGEKIT_HUB_API_KEY, else the one stored (hashed) in the
    database, else a new one generated on first start and printed once on stdout. stdout
    carries nothing else: every log line, the access log included, goes to stderr, so
    `edgekit hub serve > key.txt 2> hub.log` keeps the key out of the log.

    A key given in $EDGEKIT_HUB_API_KEY must be strong: at least 32 printable ASCII
    characters without spaces and about 100 bits of entropy (32 random hex digits pass);
    a weak one stops the hub (exit 2, the key is not echoed). Make one with
    `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.
    """
    with user_errors():
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError.single("--tls-cert/--tls-key", "give both, or neither")
        try:
            from edgekit.hub import TlsFiles, serve

            tls = TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None
            serve(host, port, db_path, tls=tls, rollout_interval=rollout_interval)
        except ModuleNotFoundError as exc:
            if (exc.name or "edgekit").partition(".")[0] == "edgekit":
                raise  # a module of edgekit itself is missing: a bug, not a missing extra
            raise MissingExtraError(
                f"the hub server needs the 'hub' extra ({exc.name or exc} is not installed): "
                "pip install 'edgekit[hub]'"
            ) from exc


@hub.command("import")
@click.argument("sources", nargs=-1, required=True)
@_db_option(existing=True, help="The hub's database (the hub may be running).")
@click.option(
    "--transport",
    default="file",
    show_default=True,
    help="The registration transport that carried the bundles (a plugin's, by name).",
)
@json_option
def hub_import(sources: tuple[str, ...], db_path: str, transport: str, as_json: bool) -> None:
    """Import registration bundles written by airgapped hosts.

    SOURCES go to the transport's receive: for `file`, bundle files, media directories or
    file:/// URLs. Each bundle's HMAC is checked against the token it names; a tampered or
    unknown bundle is refused and nothing of it is stored. Exit 1 if any bundle was refused.
    """
    from edgekit.hub.airgap import import_registrations, receive_bundles

    with user_errors(as_json):
        bundles = receive_bundles(sources, transport=transport)
        results = import_registrations(db_path, bundles)
    if as_json:
        emit_json(
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


@hub.command("upgrade-bundle")
@click.argument("hosts", nargs=-1)
@click.option("--site", "sites", multiple=True, help="Every host registered at SITE; repeatable.")
@click.option(
    "--out",
    "dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the stick is mounted: bundles go to OUT/edgekit-upgrade/.",
)
@_db_option(existing=True, help="The hub's database (the hub may be running).")
@_registry_options
def hub_upgrade_bundle(
    hosts: tuple[str, ...],
    sites: tuple[str, ...],
    dest: Path,
    db_path: str,
    options: RegistryOptions,
    publisher: str,
    as_json: bool,
) -> None:
    """Write signed upgrade bundles for airgapped HOSTS (or every host of --site) to a stick.

    Each host's envelope carries its desired state, MACed with a key only that host (and
    the hub) can derive; the provider image it names is pulled once into an OCI layout
    beside the envelopes, every digest verified; the device checks both before use.
    """
    from edgekit.hub.upgrade_bundles import write_upgrade_bundles

    with user_errors(as_json):
        written = write_upgrade_bundles(
            db_path, dest, hosts=hosts, sites=sites, options=options, publisher=publisher
        )
    if as_json:
        emit_json({"ok": True, "bundles": [b.to_dict() for b in written]})
        return
    for b in written:
        image = f" image {b.image_ref} ({b.image_digest})" if b.image_ref else ""
        click.echo(f"wrote {b.path.name}: generation {b.generation}{image}")


@cli.group()
def token() -> None:
    """Registration tokens: create (one, or one per site), list, revoke, and QR codes."""


def _inventory_sites(file: Path) -> list[str]:
    """The site names of a forge file (its sites, then its siteInventory's, as the forge
    builds them) or of a CSV site inventory."""
    from edgekit.cli._common import require_file

    require_file(file)
    if file.suffix.lower() == ".csv":
        from edgekit.inputs import read_inventory

        return [site.name for site, _ in read_inventory(file, where=str(file))]
    from edgekit.forge import Forge

    return [site.name for site in Forge.load(file).sites]


def _site_names(sites: tuple[str, ...], inventory: Path | None) -> list[str]:
    names = list(sites) + (_inventory_sites(inventory) if inventory is not None else [])
    if not names:
        raise ConfigError.single("--inventory", f"{inventory} has no sites")
    return names


_inventory_option = click.option(
    "--inventory",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A forge file (its sites and siteInventory) or a CSV site inventory.",
)


@token.command("create")
@click.argument("name")
@click.option("--site", help="Bind the token to a site: hosts register into it.")
@click.option(
    "--allow-site",
    "allowed",
    multiple=True,
    metavar="SITE",
    help="Bind the token to a set of sites (repeat): a host must name one of them.",
)
@_inventory_option
@click.option("--expires-in", default="30d", show_default=True, help="e.g. 12h, 30d.")
@click.option("--max-hosts", type=click.IntRange(min=1), help="At most this many hosts.")
@click.option("--project", help="The project hosts join.")
@hub_url_option
@ca_option
@json_option
def token_create(
    name: str,
    site: str | None,
    allowed: tuple[str, ...],
    inventory: Path | None,
    expires_in: str,
    max_hosts: int | None,
    project: str | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Create a token. Its secret is printed once, here, and never again.

    With --inventory (and/or --allow-site) the token is bound to those sites: a host that
    registers with it must name one of them, and any other site is refused (403
    SiteNotAllowed). For one token per site, see `token create-many`.
    """
    with user_errors(as_json):
        sites = _site_names(allowed, inventory) if allowed or inventory is not None else None
        with _admin(hub_url, ca_cert) as client:
            created = client.tokens.create(
                name,
                site=site,
                expires_in=expires_in,
                max_hosts=max_hosts,
                project=project,
                sites=sites,
            )
    secret = created.secret.reveal() if created.secret is not None else ""
    if as_json:
        emit_json({"uid": created.uid, "name": created.name, "site": created.site,
                    "sites": list(created.sites), "expiry": _time_text(created.expiry),
                    "token": secret})  # fmt: skip
    else:
        bound = f", {len(created.sites)} site(s)" if created.sites else ""
        click.echo(
            f"token {created.uid} ({created.name}{bound}), expires {_time_text(created.expiry)}"
        )
        click.echo(secret)


@token.command("create-many")
@click.option("--site", "sites", multiple=True, metavar="SITE", help="A site (repeat).")
@_inventory_option
@click.option("--name-prefix", default="", help="Each token is named PREFIX + its site.")
@click.option("--expires-in", default="30d", show_default=True, help="e.g. 12h, 30d.")
@click.option("--max-hosts", type=click.IntRange(min=1), help="At most this many hosts each.")
@click.option("--project", help="The project hosts join.")
@hub_url_option
@ca_option
@json_option
def token_create_many(
    sites: tuple[str, ...],
    inventory: Path | None,
    name_prefix: str,
    expires_in: str,
    max_hosts: int | None,
    project: str | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Create one token per site (--site, and every site of --inventory), each bound to its
    site. All or none: when any site is refused, no token is made. The secrets are printed
    once, here: as `SITE SECRET` lines, or with --json."""
    with user_errors(as_json):
        if not sites and inventory is None:
            raise ConfigError.single("--site/--inventory", "give at least one site")
        names = _site_names(sites, inventory)
        with _admin(hub_url, ca_cert) as client:
            created = client.tokens.create_many(
                names,
                name_prefix=name_prefix,
                expires_in=expires_in,
                max_hosts=max_hosts,
                project=project,
            )
    rows = [
        {"uid": t.uid, "name": t.name, "site": t.site, "expiry": _time_text(t.expiry),
         "token": t.secret.reveal() if t.secret is not None else ""}
        for t in created
    ]  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    click.echo(f"{len(rows)} tokens, one per site:", err=True)
    for r in rows:
        click.echo(f"{r['site']} {r['token']}")


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
            "sites": list(t.sites),
            "state": t.state,
            "expiry": _time_text(t.expiry),
            "maxHosts": t.max_hosts,
            "registeredHosts": t.registered_hosts,
        }
        for t in tokens
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table(title="registration tokens")
    for col in ("uid", "name", "site", "state", "expiry", "hosts"):
        table.add_column(col, overflow="fold")
    for r in rows:
        hosts = f"{r['registeredHosts']}" + (f"/{r['maxHosts']}" if r["maxHosts"] else "")
        site = r["site"] or (f"{len(r['sites'])} sites" if r["sites"] else "")
        table.add_row(r["uid"], r["name"], site, r["state"], r["expiry"], hosts)
    console().print(table)


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
    from edgekit.hub.qr import registration_url, render_qr

    with user_errors():
        secret = os.environ.get(token_env)
        if not secret:
            raise ConfigError.single(f"${token_env}", "is not set: put the token there")
        url = registration_url(endpoint, secret)
    click.echo(url)
    click.echo(render_qr(url))


@cli.group(invoke_without_command=True)
@click.option("--site", help="Only hosts of this site.")
@click.option("--state", help="Only hosts in this state (registered, ready, in_use, ...).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only hosts with it.")
@hub_url_option
@ca_option
@json_option
@click.pass_context
def hosts(
    ctx: click.Context,
    site: str | None,
    state: str | None,
    tags: tuple[str, ...],
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Search the hosts registered with a hub; `hosts reset UID` resets one."""
    if ctx.invoked_subcommand is not None:
        # The search's options would be silently dropped: say so instead. A subcommand's
        # own options (--hub, --json, ...) go after its name.
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("site", "state", "tags", "hub_url", "ca_cert", "as_json")
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            wording = {"--tags": "--tag", "--hub-url": "--hub", "--as-json": "--json"}
            names = ", ".join(wording.get(g, g) for g in given)
            raise click.UsageError(
                f"{names} given before '{ctx.invoked_subcommand}': put the options of "
                f"'edgekit hosts {ctx.invoked_subcommand}' after its name"
            )
        return
    with user_errors(as_json):
        wanted = key_values(tags, "--tag")
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
        emit_json(rows)
        return
    table = Table(title=f"hosts at {hub_url}")
    for col in ("uid", "site", "state", "address", "arch", "last seen", "cluster"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["uid"], r["site"] or "", r["state"], r["address"] or "", r["arch"] or "",
            r["lastSeen"], r["cluster"] or "",
        )  # fmt: skip
    console().print(table)


@hosts.command("reset")
@click.argument("uid")
@hub_url_option
@ca_option
@json_option
def hosts_reset(uid: str, hub_url: str, ca_cert: Path | None, as_json: bool) -> None:
    """Reset host UID: revoke its credential so it can register again without one.

    For a device that lost its credential (re-imaged, disk replaced): its next
    registration, with a valid token of its site, needs no proof. The host keeps its site,
    record and cluster.
    """
    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        host = client.hosts.reset(uid)
    if as_json:
        emit_json({"ok": True, "uid": host.uid, "site": host.site, "state": host.state,
                    "cluster": host.cluster_uid})  # fmt: skip
        return
    site = f"site {host.site}" if host.site else "its site"
    click.echo(
        f"host {host.uid} was reset: its credential is revoked; its next registration "
        f"with a token of {site} needs no proof"
    )


# The cluster lifecycle's commands live in their own module; importing it registers them
# (`edgekit.cli` imports this module only).
from edgekit.cli import clusters as _clusters  # noqa: E402, F401
