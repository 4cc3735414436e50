"""Publishing a forge's cluster profiles to a hub: ``Forge.publish_profiles(hub)``.

Every profile version of the forge file goes to the hub, where published versions are
immutable. Publishing is idempotent: a version the hub already holds with the same content
is reported ``unchanged`` and not sent again. A version the hub holds with *other* content
is the hub's 409 ``ProfileVersionExists``; every such version is found (by comparing
content digests with what the hub lists) before anything is published, so a refused
publication publishes nothing and names each conflicting version with what differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

from edgekit.errors import Problem
from edgekit.model import ClusterProfile

if TYPE_CHECKING:
    from edgekit.hub.client import HubClient
    from edgekit.hub.tables import Table
    from edgekit.model import Forge as ForgeSpec

__all__ = ["ProfilePublication", "ProfilePublishing", "PublishedVersion", "publish_profiles"]

Outcome = Literal["published", "unchanged"]


@attrs.frozen
class PublishedVersion:
    """One profile version of the forge and what publishing did with it."""

    name: str
    version: str
    digest: str
    outcome: Outcome
    #: When the hub first published this version.
    created: datetime | None = None

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


@attrs.frozen
class ProfilePublication(Sequence[PublishedVersion]):
    """What :func:`publish_profiles` did, one entry per profile version in file order.

    Renders as a table: ``str()`` (text), ``_repr_html_`` (Jupyter), ``to_dataframe()``.
    """

    hub_url: str
    items: tuple[PublishedVersion, ...]

    @property
    def published(self) -> tuple[PublishedVersion, ...]:
        """The versions that were new to the hub."""
        return tuple(v for v in self.items if v.outcome == "published")

    @property
    def unchanged(self) -> tuple[PublishedVersion, ...]:
        """The versions the hub already held with this content."""
        return tuple(v for v in self.items if v.outcome == "unchanged")

    def __getitem__(self, index: Any) -> Any:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[PublishedVersion]:
        return iter(self.items)

    def table(self) -> Table:
        """One row per profile version."""
        from edgekit.hub.tables import Table

        title = (
            f"{len(self.published)} published, {len(self.unchanged)} unchanged at {self.hub_url}"
        )
        rows = [(v.name, v.version, v.outcome, v.digest, _time(v.created)) for v in self.items]
        return Table(title, ("profile", "version", "outcome", "digest", "created"), rows)

    def __str__(self) -> str:
        return self.table().text()

    def _repr_html_(self) -> str:
        return self.table().html()

    def to_dataframe(self) -> Any:
        """One row per version, as a pandas DataFrame (pandas is imported only now)."""
        return self.table().dataframe()

    def to_json(self) -> dict[str, Any]:
        """``{hub, items: [{name, version, digest, outcome, created}]}``."""
        return {
            "hub": self.hub_url,
            "items": [
                {
                    "name": v.name,
                    "version": v.version,
                    "digest": v.digest,
                    "outcome": v.outcome,
                    "created": _time(v.created),
                }
                for v in self.items
            ],
        }


def _time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def publish_profiles(
    hub: HubClient,
    profiles: Iterable[ClusterProfile],
    *,
    paths: Sequence[str] | None = None,
) -> ProfilePublication:
    """Publish every profile version of ``profiles`` (e.g. a forge file's) to ``hub``.

    Raises :class:`~edgekit.hub.HubRequestError` 409 ``ProfileVersionExists`` naming every
    version the hub holds with other content, before publishing anything (``problems`` at
    each one's ``paths[i]``, by default ``$.profiles[i]``, the forge file's); any other
    refusal of the hub as it comes.
    """
    from edgekit.hub.client import HubRequestError
    from edgekit.hub.domain_clusters import profile_differences
    from edgekit.hub.records import profile_digest

    wanted = list(profiles)
    held = {
        (p.name, p.version): p
        for name in dict.fromkeys(p.name for p in wanted)
        for p in hub.profiles.list(name)
    }
    digests = [profile_digest(p) for p in wanted]
    where = list(paths) if paths is not None else [f"$.profiles[{i}]" for i in range(len(wanted))]
    problems = []
    for i, (profile, digest) in enumerate(zip(wanted, digests, strict=True)):
        there = held.get((profile.name, profile.version))
        if there is not None and there.digest != digest:
            differs = "; ".join(profile_differences(there.profile, profile))
            problems.append(
                Problem(
                    where[i],
                    f"{profile.name}@{profile.version} is published with other content ({differs})",
                )
            )
    if problems:
        raise HubRequestError(
            409,
            "ProfileVersionExists",
            f"{len(problems)} profile version(s) are published with other content and "
            "published versions are immutable: give the changed profile a new version. "
            "Nothing was published",
            problems,
        )
    items = []
    for profile, digest in zip(wanted, digests, strict=True):
        there = held.get((profile.name, profile.version))
        if there is not None:
            items.append(
                PublishedVersion(profile.name, profile.version, digest, "unchanged", there.created)
            )
            continue
        # The hub checks again: a version published meanwhile with other content is a 409.
        done = hub.profiles.publish(profile)
        items.append(
            PublishedVersion(done.name, done.version, done.digest, "published", done.created)
        )
    return ProfilePublication(hub.url, tuple(items))


class ProfilePublishing:
    """``Forge.publish_profiles``; mixed into :class:`edgekit.forge.Forge`."""

    if TYPE_CHECKING:
        spec: ForgeSpec

    def publish_profiles(self, hub: HubClient) -> ProfilePublication:
        """Publish every profile version of this forge file to ``hub`` (an admin client,
        ``edgekit.hub.connect(url, api_key=...)``); see :func:`publish_profiles`."""
        return publish_profiles(hub, self.spec.profiles)
