"""Per-site steps: every stale site ISO built in one backend call, and published together.

Publishers that can publish a fleet at once override ``Publisher.push_site_isos`` (the
``oras`` publisher does: an index artifact per forge,
``<target>/sites:<forge>`` or ``oci:PATH:sites-<forge>``, see docs/site-isos.md). Any other
publisher gets one ``push_artifact`` per stale site, tagged ``<target>/sites:<site>``
(``oci:PATH:site-<site>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from edgekit import oci_types as mt
from edgekit.config import render_user_data
from edgekit.errors import BuildError
from edgekit.oci_ref import published_reference
from edgekit.plugins.interfaces import (
    Artifact,
    BuildContext,
    Publisher,
    PushArtifactRequest,
    PushSiteIsosRequest,
    RegistryOptions,
    SiteIsoRequest,
    SiteIsosPushed,
)

from .plan import Step

if TYPE_CHECKING:
    from .runner import Runner

__all__ = [
    "SITE_ISO_ARTIFACT_TYPE",
    "FleetPublisher",
    "build_site_isos",
    "publish_site_isos",
    "publishes_fleets",
]

SITE_ISO_ARTIFACT_TYPE = mt.SITE_ISO


@runtime_checkable
class FleetPublisher(Protocol):
    """A publisher that publishes many site ISOs in one call: one that overrides
    :meth:`Publisher.push_site_isos` (kept for type checkers; :func:`publishes_fleets` is
    what the forge asks)."""

    def push_site_isos(self, request: PushSiteIsosRequest, ctx: BuildContext) -> SiteIsosPushed:
        """Publish every ``(site, path, digest)`` of ``request.isos`` to ``request.target``
        (``host/repo:tag``); sites already published with that digest send nothing.
        Returns each site's result: the reference a device fetches and the ISO's digest."""
        ...


def publishes_fleets(publisher: Publisher) -> bool:
    """Whether ``publisher`` publishes a fleet's site ISOs in one call."""
    return type(publisher).push_site_isos is not Publisher.push_site_isos


def pushed(art: Artifact, reference: str, digest: str) -> Artifact:
    """The published twin of ``art``: ``published-<kind>/<name>`` with its reference."""
    kind, _, name = art.name.partition("/")
    return attrs.evolve(art, name=f"published-{kind}/{name}", reference=reference, digest=digest)


def _site(step: Step) -> str:
    return step.id.rsplit("/", 1)[1]


def build_site_isos(
    forge: Runner, members: Sequence[Step], ctx: BuildContext
) -> dict[str, tuple[Artifact, ...]]:
    """Build the site ISOs of ``members`` (stale ``site-iso/<site>`` steps) in one call."""
    assembler = forge.plugins.iso_assembler(members[0].backend)
    by_name = {s.name: s for s in forge.sites}
    missing = [_site(s) for s in members if _site(s) not in by_name]
    if missing:
        raise BuildError(
            f"site(s) {', '.join(missing)} left the inventory while the run was starting; run again"
        )
    base = forge.base_user_data()  # read once for the fleet
    requests = [
        SiteIsoRequest(
            site=name,
            user_data=render_user_data(forge.user_data_for(by_name[name], base=base)),
            dest=forge.output_dir / "sites" / f"{name}.iso",
            meta_data=f"instance-id: {name}\nlocal-hostname: {name}\n",
        )
        for name in (_site(s) for s in members)
    ]
    built = {a.name: a for a in assembler.build_site_isos(requests, ctx)}
    out: dict[str, tuple[Artifact, ...]] = {}
    for step in members:
        art = built.get(f"site-iso/{_site(step)}")
        if art is None:
            raise BuildError(f"the {step.backend!r} ISO assembler returned no {step.id}")
        out[step.id] = (art,)
    return out


def publish_site_isos(
    forge: Runner,
    members: Sequence[Step],
    ctx: BuildContext,
    results: Mapping[str, tuple[Artifact, ...]],
    target: str,
    options: RegistryOptions,
) -> dict[str, tuple[Artifact, ...]]:
    """Publish the site ISOs of ``members`` (stale ``publish/site-iso/<site>`` steps)."""
    publisher = forge.plugins.publisher(members[0].backend)
    notes = {mt.FORGE: forge.spec.name}
    out: dict[str, tuple[Artifact, ...]] = {}
    if publishes_fleets(publisher):
        # The whole fleet goes in (the index lists every site); unchanged ISOs send nothing.
        fleet = sorted(
            (sid.split("/", 1)[1], arts[0].path, arts[0].digest)
            for sid, arts in results.items()
            if sid.startswith("site-iso/")
        )
        name = forge.spec.name
        ref = published_reference(target, "sites", name, layout_tag=f"sites-{name}")
        request = PushSiteIsosRequest(fleet, ref, options, annotations=notes)
        done = publisher.push_site_isos(request, ctx)  # its result checked at the boundary
        for step in members:
            [art] = results[step.depends_on[0]]
            got = done.sites[_site(step)]
            out[step.id] = (pushed(art, got.reference, got.digest),)
        return out
    for step in members:
        site = _site(step)
        [art] = results[step.depends_on[0]]
        ref = published_reference(target, "sites", site, layout_tag=f"site-{site}")
        got = publisher.push_artifact(
            PushArtifactRequest(
                art.path, ref, SITE_ISO_ARTIFACT_TYPE, options, annotations={**notes, mt.SITE: site}
            ),
            ctx,
        )
        out[step.id] = (pushed(art, got.reference, got.digest),)
    return out
