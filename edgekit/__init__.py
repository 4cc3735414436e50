"""edgekit: a Python SDK for edge Kubernetes fleets.

The public API is re-exported here: the domain model, the converter's load/dump, the
pipeline (:class:`Forge`), errors, and (lazily) the registration hub as ``edgekit.hub`` and
distribution (push, pull, referrers, ISO inspection) as ``edgekit.dist``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekit.config import dump, dump_file, load, loads
    from edgekit.errors import (
        BuildError,
        ConfigError,
        EdgekitError,
        Problem,
        PublishError,
        RegistrationError,
        SourceError,
    )
    from edgekit.forge import Forge, ForgeResult, Plan, Step
    from edgekit.model import (
        Cluster,
        ClusterProfile,
        EdgeHost,
        GateCheck,
        HealthGate,
        IsoSpec,
        Pack,
        PackSource,
        PackValues,
        Pool,
        PoolHost,
        ProfileRef,
        ProviderImage,
        RegistrationToken,
        Rollout,
        Secret,
        Site,
        UserData,
        Wave,
        Window,
    )
    from edgekit.model import Forge as ForgeSpec
    from edgekit.model.selectors import Selector

# Where each public name lives. They load on first use (PEP 562), so that ``import
# edgekit.errors`` from a plugin, a worker or the CLI does not pay for the converter (ruamel,
# cattrs) and the pipeline (pluggy) it may never touch.
_EXPORTS: dict[str, tuple[str, str]] = {
    **{n: ("edgekit.config", n) for n in ("dump", "dump_file", "load", "loads")},
    **{
        n: ("edgekit.errors", n)
        for n in (
            "BuildError",
            "ConfigError",
            "EdgekitError",
            "Problem",
            "PublishError",
            "RegistrationError",
            "SourceError",
        )
    },
    **{n: ("edgekit.forge", n) for n in ("Forge", "ForgeResult", "Plan", "Step")},
    **{
        n: ("edgekit.model", n)
        for n in (
            "Cluster",
            "ClusterProfile",
            "EdgeHost",
            "GateCheck",
            "HealthGate",
            "IsoSpec",
            "Pack",
            "PackSource",
            "PackValues",
            "Pool",
            "PoolHost",
            "ProfileRef",
            "ProviderImage",
            "RegistrationToken",
            "Rollout",
            "Secret",
            "Site",
            "UserData",
            "Wave",
            "Window",
        )
    },
    "ForgeSpec": ("edgekit.model", "Forge"),
    "Selector": ("edgekit.model.selectors", "Selector"),
}

__all__ = [
    "BuildError",
    "Cluster",
    "ClusterProfile",
    "ConfigError",
    "EdgeHost",
    "EdgekitError",
    "Forge",
    "ForgeResult",
    "ForgeSpec",
    "GateCheck",
    "HealthGate",
    "IsoSpec",
    "Pack",
    "PackSource",
    "PackValues",
    "Plan",
    "Pool",
    "PoolHost",
    "Problem",
    "ProfileRef",
    "ProviderImage",
    "PublishError",
    "RegistrationError",
    "RegistrationToken",
    "Rollout",
    "Secret",
    "Selector",
    "Site",
    "SourceError",
    "Step",
    "UserData",
    "Wave",
    "Window",
    "__version__",
    "dump",
    "dump_file",
    "load",
    "loads",
]


def __getattr__(name: str) -> object:
    import importlib

    where = _EXPORTS.get(name)
    if where is not None:
        value = getattr(importlib.import_module(where[0]), where[1])
        globals()[name] = value  # later lookups skip this function
        return value
    # Submodules load on first use too: ``ek.hub`` (requests; its server needs the ``hub``
    # extra), ``ek.vm`` (QEMU), ``ek.dist`` (the plugin manager), ``ek.config``...
    if name in ("hub", "vm", "demo", "dist", "config", "model", "forge", "errors", "simulator"):
        return importlib.import_module(f"edgekit.{name}")
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
