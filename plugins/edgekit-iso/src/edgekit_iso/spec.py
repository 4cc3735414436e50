"""The typed inputs and outputs of the installer ISO engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from edgekit.errors import BuildError
from edgekit.model.forge import _VOLUME_LABEL

__all__ = [
    "DEFAULT_VOLUME_LABEL",
    "BootMenu",
    "BootloaderPaths",
    "EfiImageOptions",
    "InstallerIsoSpec",
    "IsoResult",
]

#: Kairos' and Palette's label for installer media; the installer finds its ISO by it.
DEFAULT_VOLUME_LABEL = "COS_LIVE"
#: Where provider image trees keep their kernel and initrd, in the order they are tried.
KERNEL_CANDIDATES = ("boot/vmlinuz", "vmlinuz", "boot/kernel")
INITRD_CANDIDATES = ("boot/initrd", "boot/initrd.img", "initrd.img", "boot/initramfs.img")

# One rule for installer labels: the forge model's (ISO 9660 d-characters), so a label this
# engine accepts is one a forge file accepts too.
_LABEL_RE = _VOLUME_LABEL


def _frozen_map(value: Mapping[str, Path]) -> Mapping[str, Path]:
    return {str(k): Path(v) for k, v in value.items()}


def _paths(value: Sequence[Path]) -> tuple[Path, ...]:
    return tuple(Path(p) for p in value)


@attrs.frozen
class BootMenu:
    """Entries of the ISOLINUX and GRUB menus (automatic install, manual, serial console)."""

    #: Entry booted when the timeout expires.
    default: Literal["auto", "manual", "serial"] = "auto"
    #: Seconds the menu waits; 0 boots the default at once.
    timeout_s: int = attrs.field(default=3)
    #: Appended to every entry's kernel command line.
    extra_cmdline: str = ""
    #: Serial console the menus and kernel use (``console=`` syntax).
    serial: str = "ttyS0,115200"

    @timeout_s.validator
    def _check_timeout(self, _a: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value <= 3600:
            raise BuildError(f"BootMenu.timeout_s must be 0..3600 seconds, not {value}")


@attrs.frozen
class EfiImageOptions:
    """The FAT image holding ``EFI/BOOT/BOOTX64.EFI``."""

    #: Size of the FAT image in MiB; None sizes it to fit its files.
    size_mib: int | None = None
    #: Extra files for the ESP: path inside the FAT image -> host file.
    extra_files: Mapping[str, Path] = attrs.field(factory=dict, converter=_frozen_map)
    #: A prebuilt ``BOOTX64.EFI``; None builds one with ``grub-mkimage``.
    grub_efi: Path | None = None


@attrs.frozen
class BootloaderPaths:
    """Where the bootloader files come from (Debian package locations by default)."""

    isolinux_bin: Path = Path("/usr/lib/ISOLINUX/isolinux.bin")
    isohdpfx: Path = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
    syslinux_modules: Path = Path("/usr/lib/syslinux/modules/bios")
    grub_efi_modules: Path = Path("/usr/lib/grub/x86_64-efi")
    #: GRUB's BIOS modules and boot.img, for the installed disk (grub-pc-bin).
    grub_pc_modules: Path = Path("/usr/lib/grub/i386-pc")


@attrs.frozen
class InstallerIsoSpec:
    """Everything an installer ISO is made from.

    ``files`` maps ISO paths (``/extras/readme.txt``) to host files or directories;
    ``installer_files`` adds files to the appended initrd archive (``/etc/edgekit/boot.d/
    60-edgekit-agent`` is the seam for the registration agent).
    """

    kernel: Path = attrs.field(converter=Path)
    initrd: Path = attrs.field(converter=Path)
    user_data_text: str
    volume_label: str = DEFAULT_VOLUME_LABEL
    files: Mapping[str, Path] = attrs.field(factory=dict, converter=_frozen_map)
    #: An OCI image layout directory, embedded at ``/edgekit/image`` for offline installs.
    oci_layout_dir: Path | None = None
    #: The image reference the install plan names; None reads it from the layout's index.
    image_ref: str | None = None
    #: Content bundles (``.tar.zst``), copied under ``/opt/spectrocloud/content/``.
    content_bundles: Sequence[Path] = attrs.field(factory=tuple, converter=_paths)
    installer_files: Mapping[str, Path] = attrs.field(factory=dict, converter=_frozen_map)
    boot_menu: BootMenu = attrs.field(factory=BootMenu)
    efi: EfiImageOptions = attrs.field(factory=EfiImageOptions)
    bootloaders: BootloaderPaths = attrs.field(factory=BootloaderPaths)
    #: Timestamp for every date in the ISO; None reads ``$SOURCE_DATE_EPOCH`` (else 0).
    source_date_epoch: int | None = None

    def check_label(self) -> None:
        """Raise :class:`BuildError` unless the volume label is valid."""
        if not _LABEL_RE.match(self.volume_label):
            raise BuildError(
                f"volume label {self.volume_label!r} is invalid: it must be 1 to 32 characters "
                "from A-Z, 0-9 and '_' (ISO 9660 d-characters)"
                + (" (it is too long)" if len(self.volume_label) > 32 else "")
            )

    @classmethod
    def from_image_tree(
        cls,
        tree: Path,
        user_data_text: str,
        *,
        kernel: str | None = None,
        initrd: str | None = None,
        **kwargs: object,
    ) -> InstallerIsoSpec:
        """A spec whose kernel and initrd come from a provider image's root filesystem.

        ``kernel``/``initrd`` are paths relative to ``tree``; by default the usual
        locations are tried in order, and a :class:`BuildError` lists every path tried.
        """
        tree = Path(tree)
        found_kernel = _find_in_tree(tree, (kernel,) if kernel else KERNEL_CANDIDATES, "kernel")
        found_initrd = _find_in_tree(tree, (initrd,) if initrd else INITRD_CANDIDATES, "initrd")
        return cls(found_kernel, found_initrd, user_data_text, **kwargs)  # type: ignore[arg-type]


def _find_in_tree(tree: Path, candidates: Sequence[str], what: str) -> Path:
    tried = [tree / c.lstrip("/") for c in candidates]
    for path in tried:
        if path.is_file():
            return path
    raise BuildError(
        f"no {what} found in the image tree {tree}; tried: " + ", ".join(str(p) for p in tried)
    )


@attrs.frozen
class IsoResult:
    """A finished ISO: its path, SHA-256 (hex) and size in bytes."""

    path: Path
    sha256: str
    size: int
    #: The ``<iso>.sha256`` file written beside the ISO.
    checksum_path: Path
