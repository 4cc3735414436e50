"""edgekit's plugin system: hook specifications, backend interfaces and the plugin manager.

Every backend method is ``method(request, ctx) -> result``; the requests and results are
exported here (see :mod:`edgekit.plugins.interfaces` and :mod:`edgekit.plugins.records`).
"""

from edgekit.errors import BackendError, BackendResultError
from edgekit.plugins.hookspecs import hookimpl, hookspec
from edgekit.plugins.interfaces import (
    CAPABILITIES,
    Artifact,
    Backend,
    BuildContext,
    ImageBuilder,
    ImageBuildRequest,
    InstallerIsoRequest,
    IsoAssembler,
    Progress,
    Publisher,
    SelectedBackend,
    SiteIsoRequest,
    Transport,
)
from edgekit.plugins.manager import PluginManager, get_plugin_manager
from edgekit.plugins.records import (
    InspectIsoRequest,
    IsoBootEntry,
    IsoFileEntry,
    IsoInspection,
    PullRequest,
    PullResult,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    PushSiteIsosRequest,
    Received,
    ReceiveRequest,
    ReferrersRequest,
    ReferrersResult,
    RegistrationReceipt,
    RegistrationRequest,
    RegistryOptions,
    SiteIsosPushed,
)
from edgekit.plugins.report import BackendConflict, BackendInfo, BrokenPlugin, PluginReport

__all__ = [
    "CAPABILITIES",
    "Artifact",
    "Backend",
    "BackendConflict",
    "BackendError",
    "BackendInfo",
    "BackendResultError",
    "BrokenPlugin",
    "BuildContext",
    "ImageBuildRequest",
    "ImageBuilder",
    "InspectIsoRequest",
    "InstallerIsoRequest",
    "IsoAssembler",
    "IsoBootEntry",
    "IsoFileEntry",
    "IsoInspection",
    "PluginManager",
    "PluginReport",
    "Progress",
    "Publisher",
    "PullRequest",
    "PullResult",
    "PushArtifactRequest",
    "PushImageRequest",
    "PushResult",
    "PushSiteIsosRequest",
    "ReceiveRequest",
    "Received",
    "ReferrersRequest",
    "ReferrersResult",
    "RegistrationReceipt",
    "RegistrationRequest",
    "RegistryOptions",
    "SelectedBackend",
    "SiteIsoRequest",
    "SiteIsosPushed",
    "Transport",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
]
