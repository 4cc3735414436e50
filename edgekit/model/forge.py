"""The forge file (``edgeforge.yaml``): what to build, from what, and where it goes."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from ._base import INVALID, Check, check_name, check_not_blank, doc, duplicates
from .images import Arch, ImageSpec, ProviderImage
from .packs import REPOSITORY
from .profiles import ClusterProfile, ProfileRef
from .sites import Site
from .userdata import UserData

__all__ = [
    "AmbiguousProfileError",
    "BackendChoice",
    "Backends",
    "BootEntry",
    "Forge",
    "IsoSpec",
    "ProfileSet",
    "Registration",
    "RegistrySpec",
    "registry_target_problems",
]

_VOLUME_LABEL = re.compile(r"^[A-Z0-9_]{1,32}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REMOTE = re.compile(rf"^{REPOSITORY}$")


@attrs.frozen
class BackendChoice:
    """A backend selected by name, with the options the backend itself validates.

    In a forge file either the name alone (``publisher: oras``) or
    ``publisher: {name: s3dir, options: {bucket: edge}}``.
    """

    name: str = attrs.field(metadata=doc("The backend's name (edgekit plugins lists them)."))
    options: Mapping[str, Any] = attrs.field(
        factory=dict,
        metadata=doc("The backend's own options; the backend checks them when planning."),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            check_name(c, "name", self.name)
        c.done()

    def __str__(self) -> str:
        return self.name


def _choice(value: str | BackendChoice) -> BackendChoice:
    return BackendChoice(value) if isinstance(value, str) else value


_CHOICE = "A backend name, or {name: NAME, options: {...}}."


@attrs.frozen
class Backends:
    """Which backend (plugin) performs each capability, by name, with its options."""

    image_builder: BackendChoice = attrs.field(
        default=BackendChoice("oci"),
        converter=_choice,
        metadata=doc(f"Builds provider images. {_CHOICE}", schema_type=str | BackendChoice),
    )
    iso_assembler: BackendChoice = attrs.field(
        default=BackendChoice("pycdlib"),
        converter=_choice,
        metadata=doc(f"Assembles the ISOs. {_CHOICE}", schema_type=str | BackendChoice),
    )
    publisher: BackendChoice = attrs.field(
        default=BackendChoice("oras"),
        converter=_choice,
        metadata=doc(
            f"Publishes to registry.target; pulls base images. {_CHOICE}",
            schema_type=str | BackendChoice,
        ),
    )
    transport: BackendChoice = attrs.field(
        default=BackendChoice("http"),
        converter=_choice,
        metadata=doc(
            f"How hosts reach registration.endpoint (HostClient). {_CHOICE}",
            schema_type=str | BackendChoice,
        ),
    )

    def by_capability(self) -> dict[str, BackendChoice]:
        """Capability name (``image-builder``, ...) -> the choice for it."""
        return {
            "image-builder": self.image_builder,
            "iso-assembler": self.iso_assembler,
            "publisher": self.publisher,
            "transport": self.transport,
        }


class BootEntry(enum.Enum):
    """The ISO boot menu entry started by default."""

    INSTALL = "install"  # unattended install using the user-data
    MANUAL = "manual"  # live system; install by hand
    SERIAL = "serial"  # unattended install with the console on the serial port (headless)


@attrs.frozen
class IsoSpec:
    """The installer ISO: which provider image it installs and what it carries."""

    name: str = attrs.field(metadata=doc("The ISO file name, without .iso."))
    image: str = attrs.field(metadata=doc("The name of an images entry the ISO installs."))
    volume_label: str = attrs.field(
        default="COS_LIVE",
        metadata=doc("The ISO volume label: A-Z, 0-9, _ ; at most 32 characters."),
    )
    arch: Arch = attrs.field(default=Arch.AMD64, metadata=doc("The ISO's architecture."))
    user_data: str | UserData | None = attrs.field(
        default=None,
        metadata=doc(
            "A #cloud-config file path, or inline user-data (checked like a user-data file; "
            "no registration token)."
        ),
    )
    content_bundles: tuple[str, ...] = attrs.field(
        default=(), metadata=doc("Content bundle paths (.tar.zst) to include.")
    )
    kernel_path: str = attrs.field(
        default="/boot/vmlinuz", metadata=doc("The kernel inside the image.")
    )
    initrd_path: str = attrs.field(
        default="/boot/initrd", metadata=doc("The initramfs inside the image.")
    )
    default_entry: BootEntry = attrs.field(
        default=BootEntry.INSTALL,
        metadata=doc("The default boot entry: install, manual, serial."),
    )
    kernel_args: str = attrs.field(
        default="",
        metadata=doc(
            "Extra kernel command line for every boot entry (e.g. edgekit.agent.timeout=600)."
        ),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            if not _VOLUME_LABEL.fullmatch(self.volume_label):
                c.fail(
                    "volume_label",
                    f"{self.volume_label!r} must be 1-32 characters of A-Z, 0-9 and _ "
                    "(ISO 9660 d-characters)",
                )
        with c.rule():
            if any(ch in self.kernel_args for ch in "\n\r\0"):
                c.fail("kernel_args", "must be one line")
        with c.rule():
            for i, bundle in enumerate(self.content_bundles):
                check_not_blank(c, ("content_bundles", i), bundle)
        for f in ("kernel_path", "initrd_path"):
            with c.rule():
                if not getattr(self, f).startswith("/"):
                    c.fail(f, f"{getattr(self, f)!r} is not an absolute path inside the image")
        with c.rule():
            if isinstance(self.user_data, str):
                check_not_blank(c, "user_data", self.user_data)
            user_data: Any = self.user_data  # typed, but a caller may pass anything
            if isinstance(user_data, UserData):
                site = user_data.stylus.site if user_data.stylus is not None else None
                if site is not None and site.edge_host_token is not None:
                    c.fail(
                        ("user_data", "stylus", "site", "edgeHostToken"),
                        "a registration token does not belong in a forge file; put it in the "
                        "environment variable named by registration.tokenEnv",
                    )
            elif (
                user_data is not None
                and user_data is not INVALID
                and not isinstance(user_data, str)
            ):
                c.fail(
                    "user_data",
                    "must be a file path or a UserData (documents given as mappings are "
                    "structured where they are read: edgekit.config.structure(data, UserData))",
                )
        c.done()

    @property
    def inline_user_data(self) -> UserData | None:
        """The inline user-data; None when it is a path or absent."""
        return self.user_data if isinstance(self.user_data, UserData) else None


@attrs.frozen
class RegistrySpec:
    """Where artifacts are published: a local OCI layout or a remote registry."""

    target: str = attrs.field(
        default="oci:registry",
        metadata=doc(
            "oci:PATH (a local OCI layout; a relative PATH is inside the output directory) "
            "or host[:port]/repo."
        ),
    )
    plain_http: bool = attrs.field(default=False, metadata=doc("Talk http, not https."))
    ca_cert: str | None = attrs.field(default=None, metadata=doc("A CA certificate file."))

    def __attrs_post_init__(self) -> None:
        # Which targets exist is the selected publisher's to say (Publisher.target_problems,
        # checked when planning): a plugin may own a scheme of its own.
        c = Check(self)
        with c.rule():
            check_not_blank(c, "target", self.target)
        c.done()

    @property
    def is_layout(self) -> bool:
        """Whether the target is a local OCI layout."""
        return self.target.startswith("oci:")

    @property
    def layout_path(self) -> str:
        """The layout directory of an ``oci:`` target."""
        if not self.is_layout:
            raise ValueError(f"{self.target!r} is not an oci: target")
        return self.target[4:]


def registry_target_problems(
    target: str, *, plain_http: bool = False, ca_cert: object = None
) -> list[tuple[str, str]]:
    """``(field, message)`` for a target outside the built-in grammar: ``oci:PATH`` (a local
    layout) or ``host[:port]/repo``; what a publisher that claims no scheme of its own uses."""
    if target.startswith("oci:"):
        if len(target) == 4:
            return [("target", "oci: needs a path (oci:registry)")]
        if plain_http or ca_cert is not None:
            return [("plain_http", "plain_http and ca_cert apply to remote registries only")]
        return []
    if not _REMOTE.fullmatch(target):
        return [("target", f"{target!r} is neither oci:PATH nor host[:port]/repo")]
    return []


@attrs.frozen
class Registration:
    """How installed hosts register: the hub endpoint, project, and where the token comes from."""

    endpoint: str = attrs.field(metadata=doc("The hub URL hosts register with."))
    project: str = attrs.field(default="default", metadata=doc("The project hosts join."))
    token_env: str = attrs.field(
        default="EDGEKIT_REGISTRATION_TOKEN",
        metadata=doc("The NAME of the environment variable holding the token (never the token)."),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            if not self.endpoint.startswith(("http://", "https://")):
                c.fail("endpoint", f"{self.endpoint!r} is not an http(s) URL")
        with c.rule():
            if not _ENV_NAME.fullmatch(self.token_env):
                c.fail(
                    "token_env",
                    "must be the name of an environment variable (letters, digits, _), "
                    "not the token itself",
                )
        c.done()


class AmbiguousProfileError(KeyError):
    """A profile was asked for by name alone, and the forge file has several versions of it."""

    def __str__(self) -> str:
        return str(self.args[0])


class ProfileSet(Mapping[str, ClusterProfile]):
    """A forge file's profiles, looked up by ``name``, ``name@version`` or a
    :class:`ProfileRef`.

    A forge file may carry several versions of one profile (``name`` and ``version`` are
    unique together). A name alone selects a profile only while it has one version: with
    several, it is an :class:`AmbiguousProfileError` (a ``KeyError``) naming the versions.
    The keys, in file order, are the names of single-version profiles and ``name@version``
    for the others, so a single-version file reads exactly as a dict by name did.
    """

    def __init__(self, profiles: Iterable[ClusterProfile]) -> None:
        self._all = tuple(profiles)
        self._by_ref = {(p.name, p.version): p for p in self._all}
        self._versions: dict[str, list[str]] = {}
        for p in self._all:
            self._versions.setdefault(p.name, []).append(p.version)

    def versions(self, name: str) -> tuple[str, ...]:
        """The versions of profile ``name`` in the file, in file order."""
        return tuple(self._versions.get(name, ()))

    def key(self, profile: ClusterProfile) -> str:
        """The shortest unambiguous key of ``profile``: its name, or ``name@version``."""
        if len(self._versions.get(profile.name, ())) == 1:
            return profile.name
        return f"{profile.name}@{profile.version}"

    def problem(self, ref: str | ProfileRef) -> str | None:
        """Why ``ref`` selects no profile (a sentence), or None when it selects one."""
        if isinstance(ref, ProfileRef):
            name, version = ref.name, ref.version
        else:
            name, _, version = ref.partition("@")
        shown = ref if isinstance(ref, str) else f"{name}@{version}"
        versions = self._versions.get(name)
        if versions is None:
            names = sorted(self._versions)
            return f"{shown!r} is not a profile of this file" + (
                f" (profiles: {', '.join(names)})" if names else ""
            )
        if version and version not in versions:
            return (
                f"{shown!r} is not a profile of this file "
                f"({name} has version{'s' if len(versions) > 1 else ''} {', '.join(versions)})"
            )
        if not version and len(versions) > 1:
            return (
                f"profile {name!r} has several versions in this file ({', '.join(versions)}): "
                f"say which, e.g. '{name}@{versions[-1]}'"
            )
        return None

    def resolve(self, ref: str | ProfileRef) -> ClusterProfile:
        """The profile ``ref`` selects (``name``, ``name@version`` or a ProfileRef)."""
        problem = self.problem(ref)
        if problem is not None:
            if "several versions" in problem:
                raise AmbiguousProfileError(problem)
            raise KeyError(ref)
        if isinstance(ref, ProfileRef):
            return self._by_ref[(ref.name, ref.version)]
        name, _, version = ref.partition("@")
        return self._by_ref[(name, version or self._versions[name][0])]

    def __getitem__(self, key: str | ProfileRef) -> ClusterProfile:
        return self.resolve(key)

    def __iter__(self) -> Iterator[str]:
        return (self.key(p) for p in self._all)

    def __len__(self) -> int:
        return len(self._all)

    def __repr__(self) -> str:
        return f"ProfileSet({', '.join(self)})"


@attrs.frozen
class Forge:
    """A forge file: profiles, the provider-image matrix, the ISO, sites and destinations."""

    name: str = attrs.field(metadata=doc("The forge (project) name."))
    output: str = attrs.field(default="./dist", metadata=doc("The output directory."))
    backends: Backends = attrs.field(factory=Backends, metadata=doc("Backend names."))
    profiles: tuple[ClusterProfile, ...] = attrs.field(default=(), metadata=doc("Profiles."))
    images: tuple[ImageSpec, ...] = attrs.field(
        default=(), metadata=doc("The provider-image matrix.")
    )
    iso: IsoSpec | None = attrs.field(default=None, metadata=doc("The installer ISO."))
    sites: tuple[Site, ...] = attrs.field(default=(), metadata=doc("Sites, inline."))
    site_inventory: str | None = attrs.field(
        default=None, metadata=doc("A CSV site inventory file (see docs/forge-file.md).")
    )
    registry: RegistrySpec = attrs.field(factory=RegistrySpec, metadata=doc("Where to publish."))
    insecure_registries: tuple[str, ...] = attrs.field(
        default=(),
        metadata=doc(
            "Registries (host[:port]) reached over plain HTTP when pulling base images and "
            "OCI pack sources, as Docker's insecure-registries."
        ),
    )
    registration: Registration | None = attrs.field(
        default=None, metadata=doc("How installed hosts register.")
    )
    allow_external_paths: bool = attrs.field(
        default=False,
        metadata=doc(
            "Let local inputs (overlays, userData, siteInventory, pack sources, base layouts, "
            "content bundles) be outside the forge file's directory: absolute paths, ~, '..' "
            "and symlinks leading out. Off by default, so that a shared forge file cannot "
            "copy the builder's own files into artifacts."
        ),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: when the document is loaded and one field failed, the rules
        # that do not need it still report.
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            check_not_blank(c, "output", self.output)
        with c.rule():
            if self.site_inventory is not None:
                check_not_blank(c, "site_inventory", self.site_inventory)
        for field in ("images", "sites"):
            with c.rule():
                for dup in duplicates([x.name for x in getattr(self, field)]):
                    c.fail(field, f"name {dup!r} is used more than once")
        with c.rule():
            # Several versions of one profile may sit side by side; a name@version not.
            first: dict[tuple[str, str], int] = {}
            for i, p in enumerate(self.profiles):
                j = first.setdefault((p.name, p.version), i)
                if j != i:
                    c.fail(
                        ("profiles", i),
                        f"profile {p.name}@{p.version} is used more than once (also "
                        f"profiles[{j}]): a name and version must be unique together",
                    )
        with c.rule():
            profiles = self.profile_set()
            for i, img in enumerate(self.images):
                problem = profiles.problem(img.profile)
                if problem is not None:
                    c.fail(("images", i, "profile"), problem)
        with c.rule():
            expanded = [p.name for img in self.images for p in img.expand()]
            for dup in duplicates(expanded):
                c.fail("images", f"expanded image name {dup!r} is produced more than once")
        with c.rule():
            self._check_iso(c)
        c.done()

    def _check_iso(self, c: Check) -> None:
        if self.iso is None:
            return
        entries = {i.name for i in self.images}
        if self.iso.image not in entries:
            c.fail(
                ("iso", "image"),
                f"{self.iso.image!r} is not an images entry"
                + (f" (images: {', '.join(sorted(entries))})" if entries else ""),
            )
            return
        img = self.image_spec(self.iso.image)
        if self.iso.arch not in img.arch:
            c.fail(("iso", "arch"), f"image {img.name!r} is not built for {self.iso.arch.value}")

    def profile(self, name: str | ProfileRef, version: str | None = None) -> ClusterProfile:
        """The profile ``name`` (``name@version``, a ProfileRef, or ``version`` given);
        KeyError if none, :class:`AmbiguousProfileError` for a name with several versions."""
        ref = name if version is None or not isinstance(name, str) else f"{name}@{version}"
        return self.profile_set().resolve(ref)

    def profile_set(self) -> ProfileSet:
        """The profiles, looked up by name, ``name@version`` or ProfileRef."""
        return ProfileSet(self.profiles)

    def image_spec(self, name: str) -> ImageSpec:
        """The images entry called ``name``; KeyError if none."""
        for i in self.images:
            if i.name == name:
                return i
        raise KeyError(name)

    def expand_images(self) -> tuple[ProviderImage, ...]:
        """Every concrete provider image: one per images entry and Kubernetes version."""
        return tuple(p for spec in self.images for p in spec.expand())
