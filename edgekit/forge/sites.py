"""Per-site steps as tasks: stale site ISOs built in chunks sized for the executor's
workers (one backend call a chunk), and published together.

Publishers that can publish a fleet at once override ``Publisher.push_site_isos`` (the
``oras`` publisher does: an index artifact per forge,
``<target>/sites:<forge>`` or ``oci:PATH:sites-<forge>``, see docs/site-isos.md). Any other
publisher gets one ``push_artifact`` per stale site, tagged ``<target>/sites:<site>``
(``oci:PATH:site-<site>``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edgekit import oci_types as mt
from edgekit.errors import BuildError
from edgekit.oci_ref import published_reference
from edgekit.plugins.interfaces import (
    Artifact,
    BuildContext,
    Publisher,
    PushArtifactRequest,
    PushSiteIsosRequest,
    RegistryOptions,
    SiteIsosPushed,
)

from .plan import Plan, Step
from .tasks import (
    BuildSiteIsos,
    PublishArtifact,
    PublishSiteIsos,
    Registration,
    Task,
    pushed,
    site_chunks,
)
from .workers import TaskEnv

if TYPE_CHECKING:
    from .runner import Runner

__all__ = [
    "SITE_ISO_ARTIFACT_TYPE",
    "FleetPublisher",
    "prune_removed_sites",
    "publish_site_tasks",
    "publishes_fleets",
    "pushed",
    "site_iso_tasks",
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


def _site(step: Step) -> str:
    return step.id.rsplit("/", 1)[1]


def site_iso_tasks(forge: Runner, members: Sequence[Step], env: TaskEnv, slots: int) -> list[Task]:
    """The stale ``site-iso/<site>`` steps of ``members`` as tasks of one backend call each,
    sized for ``slots`` workers (:func:`~.tasks.site_chunks`)."""
    by_name = {s.name: s for s in forge.sites}
    missing = [_site(s) for s in members if _site(s) not in by_name]
    if missing:
        raise BuildError(
            f"site(s) {', '.join(missing)} left the inventory while the run was starting; run again"
        )
    base = forge.base_user_data()  # read once for the fleet
    reg = forge.spec.registration
    registration = Registration(
        reg.endpoint if reg else None, forge.registration_token, reg.project if reg else None
    )
    chunks = site_chunks([(s.id, by_name[_site(s)]) for s in members], slots)
    label = members[0].id if len(members) == 1 else "site-iso/*"
    return [
        BuildSiteIsos(env, label, members[0].backend, tuple(chunk), base, registration)
        for chunk in chunks
    ]


def publish_site_tasks(
    forge: Runner,
    members: Sequence[Step],
    env: TaskEnv,
    results: Mapping[str, tuple[Artifact, ...]],
    target: str,
    options: RegistryOptions,
    slots: int,
) -> list[Task]:
    """The stale ``publish/site-iso/<site>`` steps of ``members`` as tasks: one for a fleet
    publisher (its index lists every site), chunks of one push per site for the others."""
    publisher = forge.plugins.publisher(members[0].backend)
    notes = {mt.FORGE: forge.spec.name}
    label = members[0].id if len(members) == 1 else "publish/site-iso/*"
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
        items = tuple((s.id, _site(s), results[s.depends_on[0]][0]) for s in members)
        return [PublishSiteIsos(env, label, members[0].backend, request, items)]
    pushes = []
    for step in members:
        site = _site(step)
        [art] = results[step.depends_on[0]]
        ref = published_reference(target, "sites", site, layout_tag=f"site-{site}")
        push = PushArtifactRequest(
            art.path, ref, SITE_ISO_ARTIFACT_TYPE, options, annotations={**notes, mt.SITE: site}
        )
        pushes.append((step.id, art, push))
    return [
        PublishArtifact(env, label, members[0].backend, tuple(chunk))
        for chunk in site_chunks(pushes, slots)
    ]


def prune_removed_sites(state: MutableMapping[str, Any], full: Plan, output_dir: Path) -> bool:
    """Forget the ``site-iso/<site>`` steps of sites no longer in the forge (``full`` is its
    whole plan) and delete their ISOs; whether ``state`` changed.

    A removed site's ISO holds its user-data (network, registration): left in ``sites/``
    it would be copied onto the next batch of USB sticks. Only files the state records
    for such a step, under ``OUTPUT/sites``, are deleted; anything else there stays.
    """
    live = {s.id for s in full.steps}
    sites_dir = (output_dir / "sites").resolve()
    gone = [sid for sid in state if sid.startswith("site-iso/") and sid not in live]
    for sid in gone:
        for art in state.pop(sid).get("artifacts", ()):
            path = Path(art.get("path", ""))
            path = (path if path.is_absolute() else output_dir / path).resolve()
            if path.parent == sites_dir:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    return bool(gone)
