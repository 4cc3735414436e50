"""The edgekit plugin: ``pycdlib`` and ``xorriso`` ISO assemblers.

Both write the same hybrid BIOS/UEFI installer ISO from the pipeline's request (they differ
in how the EFI system partition is carried: an El Torito image, limited to ~32 MiB, for
pycdlib; an appended GPT partition for xorriso) and the same ``cidata`` site ISOs.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import ClassVar, Literal

from edgekit.oci_types import ISO_IMAGE
from edgekit.plugins import BuildContext, InspectIsoRequest, IsoAssembler, IsoInspection, hookimpl
from edgekit.plugins.interfaces import Artifact, InstallerIsoRequest, SiteIsoRequest

from .build import build_installer_iso
from .siteiso import SiteIsoItem, write_site_isos
from .spec import BootMenu, InstallerIsoSpec

__all__ = ["PycdlibAssembler", "XorrisoAssembler"]

ISO_MEDIA_TYPE = ISO_IMAGE  # the core vocabulary's name for a bootable ISO file
#: The model's default boot entry -> the engine's menu entry.
_MENU_DEFAULT: dict[str, Literal["auto", "manual", "serial"]] = {
    "install": "auto",
    "manual": "manual",
    "serial": "serial",
}


class _Assembler(IsoAssembler):
    engine: ClassVar[Literal["pycdlib", "xorriso"]]

    def build_installer(self, request: InstallerIsoRequest, ctx: BuildContext) -> Artifact:
        iso = request.spec
        spec = InstallerIsoSpec(
            kernel=request.kernel,
            initrd=request.initrd,
            user_data_text=request.user_data,
            volume_label=iso.volume_label,
            oci_layout_dir=request.image_layout,
            image_ref=request.image_reference,
            content_bundles=tuple(request.content_bundles),
            installer_files=dict(request.payload_files),
            boot_menu=BootMenu(
                default=_MENU_DEFAULT.get(iso.default_entry.value, "auto"),
                extra_cmdline=iso.kernel_args,
            ),
            source_date_epoch=ctx.source_date_epoch,
        )
        request.dest.parent.mkdir(parents=True, exist_ok=True)
        result = build_installer_iso(
            spec,
            request.dest,
            backend=self.engine,
            progress=lambda done, total: ctx.report(done, total),
        )
        return Artifact(
            name=f"installer-iso/{iso.name}",
            kind="installer-iso",
            path=result.path,
            digest=f"sha256:{result.sha256}",
            size=result.size,
            media_type=ISO_MEDIA_TYPE,
            annotations={"org.opencontainers.image.title": result.path.name},
        )

    def build_site_isos(
        self, requests: Sequence[SiteIsoRequest], ctx: BuildContext
    ) -> list[Artifact]:
        for r in requests:
            r.dest.parent.mkdir(parents=True, exist_ok=True)
        results = write_site_isos(
            [SiteIsoItem(r.dest, r.user_data, r.meta_data) for r in requests],
            epoch=ctx.source_date_epoch,
            executor=ctx.executor,
            progress=lambda done, total: ctx.report(done, total, unit="items", message="site ISOs"),
        )
        return [
            Artifact(
                name=f"site-iso/{r.site}",
                kind="site-iso",
                path=res.path,
                digest=f"sha256:{res.sha256}",
                size=res.size,
                media_type=ISO_MEDIA_TYPE,
                annotations={"dev.edgekit.site": r.site},
            )
            for r, res in zip(requests, results, strict=True)
        ]

    def inspect_iso(self, request: InspectIsoRequest, ctx: BuildContext) -> IsoInspection:
        from .inspect import inspect_iso

        return IsoInspection.from_details(request.path, inspect_iso(request.path).to_dict())


class PycdlibAssembler(_Assembler):
    """Pure Python (pycdlib); the EFI image rides as a second El Torito entry (<~32 MiB)."""

    name = "pycdlib"
    description = "pure-Python hybrid BIOS/UEFI ISOs (EFI image up to ~32 MiB)"
    engine = "pycdlib"


class XorrisoAssembler(_Assembler):
    """xorriso; the EFI system partition is appended as a GPT partition (any size)."""

    name = "xorriso"
    description = "xorriso hybrid ISOs with the ESP appended as a GPT partition"
    engine = "xorriso"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if shutil.which("xorriso") is None:
            return "the 'xorriso' program is not installed (apt-get install xorriso)"
        return None


@hookimpl
def edgekit_iso_assemblers() -> list[type[IsoAssembler]]:
    return [PycdlibAssembler, XorrisoAssembler]
