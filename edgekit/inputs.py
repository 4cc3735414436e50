"""Every local input of a forge file, read and checked before anything is built.

:func:`check_forge_inputs` is what ``edgekit validate``, ``Forge.load`` and ``--plan`` run
(through :class:`edgekit.forge.Forge`), so that a build never fails half-way for a reason
validation could see: the path policy (:mod:`edgekit.paths`), missing or special files,
user-data files (read, header checked, parsed and validated), the CSV site inventory (parsed
strictly), a ``k8s`` pack without a source, and sites defined twice. Every problem is
reported at once, addressed by its JSON path in the forge file (or by the referenced file's
own path and line).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from edgekit import config, limits
from edgekit.errors import ConfigError, Problem
from edgekit.model import Forge, LayoutBase, Site, UserData
from edgekit.model.sites import site_inventory_rows
from edgekit.paths import Kind, check_input

__all__ = ["check_forge_inputs", "inventory_sites", "read_inventory", "read_user_data"]


def read_user_data(path: Path, *, where: str = "$.iso.userData") -> UserData:
    """A user-data file: a regular file of bounded size whose first line is exactly
    ``#cloud-config``, parsed and validated; ConfigError naming the file otherwise."""
    text = limits.read_text(path, where=where)
    config.check_user_data_header(text, str(path), required=True)
    return config.parse_user_data(text, source=str(path))


def read_inventory(path: Path, *, where: str = "$.siteInventory") -> tuple[tuple[Site, int], ...]:
    """The sites of a CSV inventory file, each with its line (a byte order mark is fine)."""
    text = limits.read_text(path, where=where, encoding="utf-8-sig")
    problems = [
        Problem(f"{path}:{n}", why, n, str(path))
        for n, line in enumerate(text.split("\n"), 1)
        if (why := limits.bad_character(line.rstrip("\r"))) is not None
    ]
    if problems:
        raise ConfigError(problems[: limits.MAX_PROBLEMS])
    return site_inventory_rows(text, source=str(path))


def _local_inputs(spec: Forge) -> Iterator[tuple[str, str, Kind]]:
    """(JSON path, path as written, kind) of every local input the forge file names."""
    for i, img in enumerate(spec.images):
        for j, overlay in enumerate(img.overlays):
            yield f"$.images[{i}].overlays[{j}].source", overlay.source, "any"
        if isinstance(img.base, LayoutBase):
            yield f"$.images[{i}].base.layout", img.base.layout, "dir"
    for i, profile in enumerate(spec.profiles):
        for j, pack in enumerate(profile.packs):
            src = pack.source
            if src is not None and src.path and src.url is None and src.oci is None:
                yield f"$.profiles[{i}].packs[{j}].source.path", src.path, "any"
    if spec.iso is not None:
        if isinstance(spec.iso.user_data, str):
            yield "$.iso.userData", spec.iso.user_data, "file"
        for i, bundle in enumerate(spec.iso.content_bundles):
            yield f"$.iso.contentBundles[{i}]", bundle, "file"
    if spec.site_inventory:
        yield "$.siteInventory", spec.site_inventory, "file"


def check_forge_inputs(spec: Forge, base_dir: Path, source: str | None = None) -> tuple[Site, ...]:
    """Check every local input of ``spec`` (paths relative to ``base_dir``) and return all
    its sites, inline then from the inventory; ConfigError listing every problem."""
    problems: list[Problem] = []
    allow = spec.allow_external_paths
    resolved: dict[str, Path] = {}
    for where, raw, kind in _local_inputs(spec):
        path, whys = check_input(raw, base_dir, kind, allow_external=allow)
        problems.extend(Problem(where, why, None, source) for why in whys)
        if not whys:
            resolved[where] = path
    if spec.registry.ca_cert is not None:  # read by the publisher, never copied: no policy
        ca = Path(spec.registry.ca_cert).expanduser()
        ca = ca if ca.is_absolute() else base_dir / ca
        why = limits.file_kind_problem(ca)
        if why is not None:
            problems.append(Problem("$.registry.caCert", f"cannot read {ca}: {why}", None, source))
    problems.extend(_k8s_source_problems(spec, source))

    if "$.iso.userData" in resolved:
        try:
            read_user_data(resolved["$.iso.userData"])
        except ConfigError as e:
            problems.extend(e.problems)

    inventory: tuple[tuple[Site, int], ...] = ()
    if "$.siteInventory" in resolved:
        try:
            inventory = read_inventory(resolved["$.siteInventory"])
        except ConfigError as e:
            problems.extend(e.problems)
    sites = tuple(spec.sites) + tuple(site for site, _ in inventory)
    problems.extend(_duplicate_sites(spec, inventory, resolved.get("$.siteInventory"), source))
    if problems:
        raise ConfigError(problems)
    return sites


def inventory_sites(spec: Forge, path: Path, source: str | None = None) -> tuple[Site, ...]:
    """The inventory's sites, read again (after an edit) and checked against the inline ones."""
    inventory = read_inventory(path)
    problems = _duplicate_sites(spec, inventory, path, source)
    if problems:
        raise ConfigError(problems)
    return tuple(site for site, _ in inventory)


def _k8s_source_problems(spec: Forge, source: str | None) -> list[Problem]:
    # Every image builds its profile's Kubernetes layer from the k8s pack's source.
    profiles = spec.profile_set()
    used = {profiles.key(profiles[img.profile]) for img in spec.images}
    out = []
    for i, profile in enumerate(spec.profiles):
        if profiles.key(profile) not in used:
            continue
        for j, pack in enumerate(profile.packs):
            if pack.layer.value == "k8s" and pack.source is None:
                out.append(
                    Problem(
                        f"$.profiles[{i}].packs[{j}].source",
                        f"the k8s pack {pack.name!r} needs a source (a url with sha256, a "
                        "local path, or an OCI artifact): images are built from it",
                        None,
                        source,
                    )
                )
    return out


def _duplicate_sites(
    spec: Forge,
    inventory: tuple[tuple[Site, int], ...],
    csv_path: Path | None,
    source: str | None,
) -> list[Problem]:
    inline = {site.name: i for i, site in enumerate(spec.sites)}
    where = f" of {source}" if source else ""
    return [
        Problem(
            f"{csv_path}:{line}",
            f"site {site.name!r} appears twice: here and at $.sites[{inline[site.name]}]{where}",
            line,
            str(csv_path),
        )
        for site, line in inventory
        if site.name in inline
    ]
