"""``edgekit profile publish``, ``cluster ...``, ``hosts summary`` and ``events``: the cluster
lifecycle of a hub (:mod:`edgekit.hub.client_clusters`). Each command calls one public client
method and formats what it returns: a rich table of the result's ``table()``, or its JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table as RichTable

from edgekit.cli._common import (
    cli as _cli,
)
from edgekit.cli._common import (
    console,
    emit_json,
    json_option,
    key_values,
    require_file,
    user_errors,
)
from edgekit.cli.hub import _admin, _time_text, ca_option, hosts, hub_url_option
from edgekit.errors import ConfigError

__all__ = ["cluster", "events", "profile"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _print(table: Any) -> None:
    """An :class:`edgekit.hub.tables.Table` (what every result's ``table()`` returns) as a
    rich table: the same columns and rows as ``str()`` and ``_repr_html_`` show."""
    out = RichTable(title=table.title or None, title_justify="left")
    for col in table.columns:
        out.add_column(col, overflow="fold")
    for row in table.rows:
        out.add_row(*(_cell(v) for v in row))
    if not table.rows:
        out.caption = "(none)"
    console().print(out)


def _cluster_json(c: Any) -> dict[str, Any]:
    ref = c.profile
    return {
        "uid": c.uid,
        "name": c.name,
        "profile": f"{ref.name}@{ref.version}",
        "generation": c.generation,
        "resourceVersion": c.resource_version,
        "labels": dict(c.labels),
        "created": _time_text(c.created),
        "spec": c.spec,
    }


def _profile_ref(text: str) -> Any:
    from edgekit.model import ProfileRef

    name, sep, version = text.partition("@")
    if not sep or not name or not version:
        raise ConfigError.single("--profile", f"{text!r} is not NAME@VERSION")
    return ProfileRef(name, version)


def _profiles_of(file: Path) -> list[Any]:
    """Every profile of a forge file, or the one of a profile file."""
    return [profile for profile, _ in _profiles_with_paths(file)]


def _profiles_with_paths(file: Path) -> list[tuple[Any, str]]:
    """Every profile of a forge file (at ``$.profiles[i]``), or the one of a profile file
    (at ``$``)."""
    from edgekit import config
    from edgekit.model import ClusterProfile
    from edgekit.model import Forge as ForgeSpec

    require_file(file)
    obj: object = config.load(file)
    if isinstance(obj, ForgeSpec):
        return [(p, f"$.profiles[{i}]") for i, p in enumerate(obj.profiles)]
    if isinstance(obj, ClusterProfile):
        return [(obj, "$")]
    raise ConfigError.single(
        "$", f"{file} holds a {config.detect_kind_of_file(file)}, not a forge or profile file"
    )


# -- profile ---------------------------------------------------------------------------------
@_cli.group()
def profile() -> None:
    """Cluster profile versions in the hub."""


@profile.command("publish")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@hub_url_option
@ca_option
@json_option
def profile_publish(file: Path, hub_url: str, ca_cert: Path | None, as_json: bool) -> None:
    """Publish the profiles of FILE (a forge file: every version of every profile; or a
    profile file).

    Publishing a version again with the same content is a no-op (shown as already in the
    hub); other content under a published version is refused (409 naming what differs,
    for every such version, and then nothing is published): versions are immutable.
    """
    from edgekit.forge.profiles import publish_profiles

    with user_errors(as_json):
        found = _profiles_with_paths(file)
        with _admin(hub_url, ca_cert) as client:
            result = publish_profiles(
                client, [p for p, _ in found], paths=[path for _, path in found]
            )
    if as_json:
        emit_json(result.to_json()["items"])
        return
    for v in result:
        again = ", unchanged: already in the hub" if v.outcome == "unchanged" else ""
        click.echo(f"profile {v.name}@{v.version} published ({v.digest}{again})")


# -- cluster ---------------------------------------------------------------------------------
@_cli.group()
def cluster() -> None:
    """Clusters formed from registered hosts: create, list, update, scale, status, delete."""


@cluster.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--provider-image", help="The provider image reference hosts install.")
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label (cluster list --tag)."
)
@click.option(
    "--profiles",
    "profiles_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A forge or profile file holding the cluster's profile: publish it first "
    "(a no-op when that version is already published with this content).",
)
@hub_url_option
@ca_option
@json_option
def cluster_create(
    file: Path,
    provider_image: str | None,
    labels: tuple[str, ...],
    profiles_file: Path | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Create the cluster described in FILE from hosts registered with the hub.

    The hub checks the pools, VIP and architectures against its hosts and gives each host
    its desired state, which the host's agent fetches. The cluster's profile version must
    be published (`edgekit profile publish`), or given with --profiles.
    """
    from edgekit import config
    from edgekit.model import Cluster

    with user_errors(as_json):
        require_file(file)
        spec = config.load(file, Cluster)
        wanted = key_values(labels, "--label")
        chosen = None
        if profiles_file is not None:
            ref = spec.profile
            found = [p for p in _profiles_of(profiles_file) if p.ref == ref]
            if not found:
                raise ConfigError.single(
                    "--profiles",
                    f"{profiles_file} has no profile {ref.name}@{ref.version} "
                    f"(the one cluster {spec.name!r} runs)",
                )
            chosen = found[0]
        with _admin(hub_url, ca_cert) as client:
            created = client.clusters.create(
                spec, provider_image=provider_image, labels=wanted or None, profile=chosen
            )
    if as_json:
        emit_json({"ok": True, "uid": created.uid, "name": created.name})
    else:
        click.echo(f"cluster {created.name} created ({created.uid})")


@cluster.command("list")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only clusters with it.")
@click.option("--profile", "profile_name", help="Only clusters running this profile.")
@hub_url_option
@ca_option
@json_option
def cluster_list(
    tags: tuple[str, ...],
    profile_name: str | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """List clusters (by name), optionally those with labels or a profile."""
    from edgekit.model.selectors import Selector

    with user_errors(as_json):
        wanted = key_values(tags, "--tag")
        selector = Selector(tags=wanted, profile=profile_name) if wanted or profile_name else None
        with _admin(hub_url, ca_cert) as client:
            found = client.clusters.list(selector)
    if as_json:
        emit_json({"total": found.total, "items": [_cluster_json(c) for c in found]})
    else:
        _print(found.table())


@cluster.command("get")
@click.argument("name")
@hub_url_option
@ca_option
@json_option
def cluster_get(name: str, hub_url: str, ca_cert: Path | None, as_json: bool) -> None:
    """One cluster, by name or uid: profile, generation, resourceVersion, pools."""
    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        found = client.clusters.get(name)
    if as_json:
        emit_json(_cluster_json(found))
        return
    _print(found.table())
    for pool, cp, uids in found.pools:
        role = "control plane" if cp else "workers"
        click.echo(f"pool {pool} ({role}): {', '.join(uids) or '(no hosts)'}")


def _emit_change(result: Any, as_json: bool) -> None:
    """What update and scale return: the plan (dry run) or the cluster with its plan."""
    from edgekit.hub.plans import UpdatePlan

    plan = result if isinstance(result, UpdatePlan) else result.plan
    if as_json:
        doc: dict[str, Any] = {"ok": True, "plan": plan.to_json()}
        if plan is not result:
            doc["cluster"] = _cluster_json(result)
        emit_json(doc)
        return
    _print(plan.table())
    if plan is result:
        click.echo("dry run: nothing was stored")
    elif not plan.changed:
        click.echo(f"cluster {result.name}: nothing changed")
    else:
        click.echo(
            f"cluster {result.name} updated: generation {result.generation}, "
            f"resourceVersion {result.resource_version}"
        )


def _values_file(file: Path) -> dict[str, Mapping[str, Any]]:
    from edgekit import limits
    from edgekit.config import parse_values

    source = f"--values {file}"
    text = limits.read_text(file, limit=limits.MAX_YAML_BYTES, source=source)
    return dict(parse_values(text, source=source))


dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Show the plan (what each host gets); store nothing."
)
if_match_option = click.option(
    "--if-match",
    type=click.IntRange(min=1),
    help="The resourceVersion this change is based on: refused (409) if the cluster changed.",
)


@cluster.command("update")
@click.argument("name")
@click.option("--profile", "profile_ref", metavar="NAME@VERSION", help="Run this profile version.")
@click.option(
    "--values",
    "values_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML: per-pack values over the profile's ({pack: {key: value}}).",
)
@click.option("--provider-image", help="The provider image reference hosts install.")
@dry_run_option
@if_match_option
@hub_url_option
@ca_option
@json_option
def cluster_update(
    name: str,
    profile_ref: str | None,
    values_file: Path | None,
    provider_image: str | None,
    dry_run: bool,
    if_match: int | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Change cluster NAME's profile version, pack values or provider image.

    Checked like a creation, atomically: every problem at once, nothing stored on error.
    Prints the plan: per host, the action and the upgrade kind (repave, reboot, in_place).
    """
    with user_errors(as_json):
        ref = _profile_ref(profile_ref) if profile_ref is not None else None
        values = _values_file(values_file) if values_file is not None else None
        if ref is None and values is None and provider_image is None:
            raise ConfigError.single(
                "$", "nothing to change: give --profile, --values or --provider-image"
            )
        with _admin(hub_url, ca_cert) as client:
            result = client.clusters.update(
                name,
                profile=ref,
                values=values,
                provider_image=provider_image,
                dry_run=dry_run,
                if_match=if_match,
            )
    _emit_change(result, as_json)


@cluster.command("scale")
@click.argument("name")
@click.option(
    "--worker", "workers", multiple=True, metavar="UID", help="The worker hosts (all of them)."
)
@click.option("--no-workers", is_flag=True, help="Remove every worker.")
@click.option(
    "--control-plane",
    "control_plane",
    multiple=True,
    metavar="UID",
    help="The control-plane hosts (all of them; 1 -> 3 needs --vip).",
)
@click.option("--vip", help="The control plane's virtual IP (growing it to three hosts).")
@dry_run_option
@if_match_option
@hub_url_option
@ca_option
@json_option
def cluster_scale(
    name: str,
    workers: tuple[str, ...],
    no_workers: bool,
    control_plane: tuple[str, ...],
    vip: str | None,
    dry_run: bool,
    if_match: int | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Set the hosts of cluster NAME's worker pool or control plane (add or remove hosts).

    Hosts left out are released: they return to ready once their agent confirms.
    """
    with user_errors(as_json):
        if workers and no_workers:
            raise ConfigError.single("--no-workers", "give --worker UID... or --no-workers")
        if not (workers or no_workers or control_plane or vip):
            raise ConfigError.single(
                "$", "nothing to change: give --worker, --no-workers, --control-plane or --vip"
            )
        with _admin(hub_url, ca_cert) as client:
            result = client.clusters.scale(
                name,
                workers=list(workers) if workers or no_workers else None,
                control_plane=list(control_plane) or None,
                vip=vip,
                dry_run=dry_run,
                if_match=if_match,
            )
    _emit_change(result, as_json)


@cluster.command("status")
@click.argument("name")
@hub_url_option
@ca_option
@json_option
def cluster_status(name: str, hub_url: str, ca_cert: Path | None, as_json: bool) -> None:
    """Desired against observed for each host of cluster NAME, and its conditions."""
    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        status = client.clusters.status(name)
    if as_json:
        emit_json(status.to_json())
        return
    _print(status.table())
    for c in status.conditions:
        if c.message:
            click.echo(f"{c.type}={'True' if c.status else 'False'}: {c.message}")


@cluster.command("delete")
@click.argument("name")
@if_match_option
@hub_url_option
@ca_option
@json_option
def cluster_delete(
    name: str, if_match: int | None, hub_url: str, ca_cert: Path | None, as_json: bool
) -> None:
    """Delete cluster NAME; its hosts return to ready once their agents confirm."""
    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        released = client.clusters.delete(name, if_match=if_match)
    if as_json:
        emit_json({"ok": True, "cluster": name, "releasedHosts": list(released)})
    else:
        click.echo(f"cluster {name} deleted; released: {', '.join(released) or '(no hosts)'}")


# -- hosts summary, events -------------------------------------------------------------------
@hosts.command("summary")
@click.option(
    "--group-by",
    default="state",
    show_default=True,
    help="Comma-separated: state, site, arch, cluster, phase, tag:KEY.",
)
@hub_url_option
@ca_option
@json_option
def hosts_summary(group_by: str, hub_url: str, ca_cert: Path | None, as_json: bool) -> None:
    """Host counts per group, computed by the hub."""
    with user_errors(as_json):
        keys = [k.strip() for k in group_by.split(",") if k.strip()]
        if not keys:
            raise ConfigError.single("--group-by", "give at least one key")
        with _admin(hub_url, ca_cert) as client:
            found = client.hosts.summary(group_by=keys)
    if as_json:
        emit_json(
            {
                "groupBy": list(found.group_by),
                "groups": found.groups,
                "hosts": found.hosts,
                "items": [{"key": dict(k), "count": n} for k, n in found.rows],
            }
        )
    else:
        _print(found.table())


def _event_json(e: Any) -> dict[str, Any]:
    return {"revision": e.revision, "time": _time_text(e.time), "kind": e.kind,
            "type": e.type, "uid": e.uid, "data": dict(e.data)}  # fmt: skip


def _event_line(e: Any) -> str:
    return f"{e.revision}  {_time_text(e.time)}  {e.kind} {e.type}  {e.uid}"


def _pages(client: Any, since: int, kinds: list[str]) -> Iterable[Any]:
    """Every stored event after ``since``, page by page (memory bounded by one page)."""
    while True:
        page = client.events.list(since, kinds=kinds)
        yield from page.events
        if not page.events:
            return
        since = page.events[-1].revision


@_cli.command("events")
@click.option("--since", type=click.IntRange(min=0), help="Events after this revision.")
@click.option("--kind", "kinds", multiple=True, help="Only events of this kind (host, cluster...).")
@click.option("--follow", is_flag=True, help="Keep printing events as they happen.")
@click.option(
    "--timeout", type=click.FloatRange(min=0), help="With --follow: stop after S seconds."
)
@hub_url_option
@ca_option
@json_option
def events(
    since: int | None,
    kinds: tuple[str, ...],
    follow: bool,
    timeout: float | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Host, cluster and profile changes, with their revisions.

    Without --follow: the events after --since (default: all) and exit. With --follow:
    from --since (default: now) on, as they happen; --json prints one JSON object a line.
    """
    with user_errors(as_json):
        if timeout is not None and not follow:
            raise ConfigError.single("--timeout", "only with --follow")
        with _admin(hub_url, ca_cert) as client:
            if not follow:
                found = list(_pages(client, since or 0, list(kinds)))
                if as_json:
                    emit_json([_event_json(e) for e in found])
                    return
                for e in found:
                    click.echo(_event_line(e))
                return
            for e in client.events.watch(since, kinds=list(kinds), until=timeout):
                if as_json:
                    import json

                    click.echo(json.dumps(_event_json(e), default=str))
                else:
                    click.echo(_event_line(e))
