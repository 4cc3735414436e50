"""edgekit's plugin system: hook specifications, backend interfaces and the plugin manager."""

from edgekit.plugins.boundary import BackendError, BackendResultError
from edgekit.plugins.hookspecs import hookimpl, hookspec
from edgekit.plugins.interfaces import (
    CAPABILITIES,
    Backend,
    BuildContext,
    ImageBuilder,
    IsoAssembler,
    Publisher,
    Transport,
)
from edgekit.plugins.manager import PluginManager, get_plugin_manager
from edgekit.plugins.report import BackendConflict, BackendInfo, BrokenPlugin, PluginReport

__all__ = [
    "CAPABILITIES",
    "Backend",
    "BackendConflict",
    "BackendError",
    "BackendInfo",
    "BackendResultError",
    "BrokenPlugin",
    "BuildContext",
    "ImageBuilder",
    "IsoAssembler",
    "PluginManager",
    "PluginReport",
    "Publisher",
    "Transport",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
]
