"""edgekit: a Python SDK for edge Kubernetes fleets.

The public API is re-exported here: the domain model, the converter's load/dump, the
pipeline (:class:`Forge`), errors, and (lazily) the registration hub as ``edgekit.hub`` and
distribution (push, pull, referrers, ISO inspection) as ``edgekit.dist``.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
    # Submodules with heavier or optional dependencies load on first use: ``ek.hub``
    # (requests; its server needs the ``hub`` extra), ``ek.vm`` (QEMU) and ``ek.dist``
    # (selects publisher and ISO backends through the plugin manager).
    if name in ("hub", "vm", "demo", "dist"):
        import importlib

        return importlib.import_module(f"edgekit.{name}")
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
