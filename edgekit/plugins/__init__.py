"""edgekit's plugin system: hook specifications, backend interfaces and the plugin manager."""

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
from edgekit.plugins.manager import BackendInfo, PluginManager, get_plugin_manager

__all__ = [
    "CAPABILITIES",
    "Backend",
    "BackendInfo",
    "BuildContext",
    "ImageBuilder",
    "IsoAssembler",
    "PluginManager",
    "Publisher",
    "Transport",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
]
