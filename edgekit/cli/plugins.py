"""``edgekit plugins``: the backends, plugins and hooks installed, and broken plugins."""

from __future__ import annotations

from rich.table import Table

from edgekit.cli._common import cli, console, echo_error, emit_json, json_option, user_errors


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List plugins, their backends, and any plugin that failed to load."""
    from edgekit.plugins import get_plugin_manager

    with user_errors(as_json):
        pm = get_plugin_manager()
        infos = pm.backends()
        loaded = list(pm.plugins())
        hooks = {name: pm.hooks_of(name) for name, _ in loaded}
        broken = list(pm.broken)
    if as_json:
        emit_json(
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
                    {"name": name, "distribution": dist, "hooks": hooks[name]}
                    for name, dist in loaded
                ],
                "broken": [
                    {"plugin": b.plugin, "distribution": b.distribution, "error": b.error}
                    for b in broken
                ],
            }
        )
        return
    out = console()
    table = Table(title="edgekit backends")
    for col in ("capability", "name", "distribution", "status"):
        table.add_column(col)
    for i in infos:
        reason = i.cls.unavailable_reason()
        table.add_row(i.capability, i.name, i.distribution, reason or "ok")
    out.print(table)
    hooks_table = Table(title="plugins and the hooks they implement")
    for col in ("plugin", "distribution", "hooks"):
        hooks_table.add_column(col, overflow="fold")
    for name, dist in loaded:
        hooks_table.add_row(name, dist, ", ".join(hooks[name]))
    out.print(hooks_table)
    for b in broken:
        echo_error(
            "warning:",
            f"plugin {b.plugin!r} ({b.distribution}) failed to load: {b.error}",
            color="yellow",
        )
