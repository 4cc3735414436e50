"""The sample OS: a small bootable Linux tree assembled offline from Debian packages.

It stands in for a Kairos base image on machines without a registry route, for the quick
start and for every boot test. It is not a production OS. See docs/sample-os.md.
"""

from __future__ import annotations

from ._assemble import (
    BOOT_HOOK_DIR,
    DEFAULT_MODULES,
    OPTIONAL_MODULES,
    SampleOsInfo,
    assemble_sample_os,
)

__all__ = [
    "BOOT_HOOK_DIR",
    "DEFAULT_MODULES",
    "OPTIONAL_MODULES",
    "SampleOsInfo",
    "assemble_sample_os",
]
