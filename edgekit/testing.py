"""A pytest plugin for people who write edgekit plugins (and for edgekit's own tests).

Installed with edgekit and activated automatically. It gives you a plugin manager that sees
only what you register, so a test exercises your plugin against the real host::

    def test_my_builder_is_found(edgekit_plugins, register_plugin):
        register_plugin(my_plugin_module)
        builder = edgekit_plugins.backend("image-builder", "mine", ImageBuilder)
        ...

Fixtures:

``edgekit_plugins``
    A fresh :class:`~edgekit.plugins.PluginManager` that loads no entry points.
``register_plugin``
    ``register_plugin(plugin, name=None) -> name``: registers into ``edgekit_plugins`` and
    unregisters when the test ends.
``hook_recorder``
    A :class:`HookRecorder` attached to ``edgekit_plugins``: every hook call is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import pytest

from edgekit.plugins.manager import PluginManager

__all__ = ["HookCall", "HookRecorder"]


@attrs.frozen
class HookCall:
    """One recorded hook call: its name, keyword arguments and the plugins it reached."""

    name: str
    kwargs: Mapping[str, Any]
    plugins: tuple[str, ...]


class HookRecorder:
    """Records every hook call made through a plugin manager until :meth:`close`."""

    def __init__(self, manager: PluginManager) -> None:
        self.calls: list[HookCall] = []
        pm = manager.hook_manager

        def before(hook_name: str, hook_impls: Any, kwargs: Mapping[str, Any]) -> None:
            names = tuple(pm.get_name(i.plugin) or repr(i.plugin) for i in hook_impls)
            self.calls.append(HookCall(hook_name, dict(kwargs), names))

        def after(outcome: Any, hook_name: str, hook_impls: Any, kwargs: Any) -> None:
            return None

        self._undo: Callable[[], None] = pm.add_hookcall_monitoring(before, after)

    def named(self, name: str) -> list[HookCall]:
        """The recorded calls of one hook, in order."""
        return [c for c in self.calls if c.name == name]

    def names(self) -> list[str]:
        """The names of every recorded call, in order."""
        return [c.name for c in self.calls]

    def close(self) -> None:
        """Stop recording."""
        self._undo()


@pytest.fixture
def edgekit_plugins() -> PluginManager:
    """A plugin manager that sees only the plugins a test registers."""
    return PluginManager(entry_points=False, disabled="")


@pytest.fixture
def register_plugin(edgekit_plugins: PluginManager) -> Iterator[Callable[..., str]]:
    """Register plugins into ``edgekit_plugins`` for the duration of one test."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        registered = edgekit_plugins.register(plugin, name=name)
        names.append(registered)
        return registered

    yield register
    for name in reversed(names):
        if edgekit_plugins.hook_manager.has_plugin(name):
            edgekit_plugins.unregister(name)


@pytest.fixture
def hook_recorder(edgekit_plugins: PluginManager) -> Iterator[HookRecorder]:
    """Record every hook call made through ``edgekit_plugins``."""
    recorder = HookRecorder(edgekit_plugins)
    yield recorder
    recorder.close()
