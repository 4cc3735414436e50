"""The plugin manager: finding, choosing and refusing backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from plugin_sources import PIGEON

from edgekit.errors import BackendConflictError, BackendNotFoundError, PluginError
from edgekit.plugins import (
    BuildContext,
    ImageBuilder,
    PluginManager,
    Transport,
    hookimpl,
)
from edgekit.plugins.interfaces import (
    Artifact,
    ImageBuildRequest,
    RegistrationReceipt,
    RegistrationRequest,
)


class FastBuilder(ImageBuilder):
    name = "fast"

    def build_image(self, request: ImageBuildRequest, ctx: BuildContext) -> Artifact:
        raise NotImplementedError


class OtherFastBuilder(FastBuilder):
    name = "fast"


class EchoTransport(Transport):
    name = "echo"

    def register(self, request: RegistrationRequest, ctx: BuildContext) -> RegistrationReceipt:
        return RegistrationReceipt(str(request.host["hostUid"]), "echoed")


class BuilderPlugin:
    @hookimpl
    def edgekit_image_builders(self) -> list[type[ImageBuilder]]:
        return [FastBuilder]


class ConflictingPlugin:
    @hookimpl
    def edgekit_image_builders(self) -> list[type[ImageBuilder]]:
        return [OtherFastBuilder]


def test_registered_backend_is_found_by_name(edgekit_plugins, register_plugin):
    register_plugin(BuilderPlugin(), name="builder")
    builder = edgekit_plugins.backend("image-builder", "fast")
    assert isinstance(builder, FastBuilder)
    [info] = edgekit_plugins.backends("image-builder")
    assert (info.name, info.plugin, info.distribution) == ("fast", "builder", "<local>")


def test_unknown_name_lists_available_backends(edgekit_plugins, register_plugin):
    register_plugin(BuilderPlugin(), name="builder")
    with pytest.raises(BackendNotFoundError) as exc:
        edgekit_plugins.backend("image-builder", "slow")
    assert str(exc.value) == "no image-builder backend named 'slow'; available: fast (<local>)"
    assert exc.value.exit_code == 2


def test_unknown_capability_is_an_error(edgekit_plugins):
    with pytest.raises(PluginError, match="unknown capability 'compiler'"):
        edgekit_plugins.backend_info("compiler", "x")


def test_two_backends_with_one_name_name_both(edgekit_plugins, register_plugin):
    register_plugin(BuilderPlugin(), name="first")
    register_plugin(ConflictingPlugin(), name="second")
    # Listing never fails on a conflict (issue 15): both are listed, selecting one fails.
    assert [i.plugin for i in edgekit_plugins.backends()] == ["first", "second"]
    with pytest.raises(BackendConflictError) as exc:
        edgekit_plugins.backend("image-builder", "fast")
    message = str(exc.value)
    assert "two image-builder backends are named 'fast'" in message
    assert "test_plugins.FastBuilder from <local> (plugin 'first')" in message
    assert "test_plugins.OtherFastBuilder from <local> (plugin 'second')" in message


def test_a_non_backend_class_is_refused(edgekit_plugins, register_plugin):
    class Bad:
        @hookimpl
        def edgekit_image_builders(self) -> list[type]:
            return [EchoTransport]

    register_plugin(Bad(), name="bad")
    with pytest.raises(PluginError, match=r"not a subclass of edgekit\.plugins\.ImageBuilder"):
        edgekit_plugins.backends()


def test_unknown_hook_is_refused_and_nothing_registered(edgekit_plugins):
    class Typo:
        @hookimpl
        def edgekit_image_bulders(self) -> list[type]:
            return []

    with pytest.raises(PluginError, match="edgekit_image_bulders"):
        edgekit_plugins.register(Typo(), name="typo")
    assert not edgekit_plugins.hook_manager.has_plugin("typo")


def test_wrong_hook_signature_is_refused(edgekit_plugins):
    class WrongArgs:
        @hookimpl
        def edgekit_step_started(self, step_id: str, colour: str) -> None:
            return None

    with pytest.raises(PluginError, match="invalid edgekit plugin"):
        edgekit_plugins.register(WrongArgs(), name="wrong")


def test_unavailable_backend_says_why(edgekit_plugins, register_plugin):
    class NeedsTool(FastBuilder):
        name = "needs-tool"

        @classmethod
        def unavailable_reason(cls) -> str | None:
            return "the 'frobnicate' program is not installed (apt-get install frob)"

    class P:
        @hookimpl
        def edgekit_image_builders(self) -> list[type[ImageBuilder]]:
            return [NeedsTool]

    register_plugin(P(), name="p")
    with pytest.raises(PluginError, match="cannot run here: the 'frobnicate' program"):
        edgekit_plugins.backend("image-builder", "needs-tool")


def test_merged_files_refuses_two_owners(edgekit_plugins, register_plugin):
    class A:
        @hookimpl
        def edgekit_image_extra_files(self, image_name: str) -> dict[str, str]:
            return {"/usr/bin/agent": "/tmp/a"}

    class B:
        @hookimpl
        def edgekit_image_extra_files(self, image_name: str, arch: str) -> dict[str, str]:
            return {"/usr/bin/agent": f"/tmp/b-{arch}"}

    register_plugin(A(), name="a")
    assert edgekit_plugins.merged_files(
        "edgekit_image_extra_files", image_name="x", arch="amd64"
    ) == {"/usr/bin/agent": "/tmp/a"}
    register_plugin(B(), name="b")
    with pytest.raises(PluginError, match="plugins 'a' and 'b' both add '/usr/bin/agent'"):
        edgekit_plugins.merged_files("edgekit_image_extra_files", image_name="x", arch="amd64")


def test_merged_files_names_a_failing_or_wrong_plugin(edgekit_plugins, register_plugin):
    class Raises:
        @hookimpl
        def edgekit_image_extra_files(self, image_name: str) -> dict[str, str]:
            return {"/etc/x": Path("/tmp/not-a-str")}  # type: ignore[dict-item]

    register_plugin(Raises(), name="paths")
    with pytest.raises(PluginError) as exc:
        edgekit_plugins.merged_files("edgekit_image_extra_files", image_name="x", arch="amd64")
    assert str(exc.value) == (
        "plugin 'paths' (<local>) returned dict whose value at '/etc/x' is PosixPath from "
        "edgekit_image_extra_files(), expected a mapping of path in the image to host path "
        "(str to str), or None"
    )
    edgekit_plugins.unregister("paths")

    class Fails:
        @hookimpl
        def edgekit_image_extra_files(self, image_name: str) -> dict[str, str]:
            return {"/etc/x": {"a": "b"}[image_name]}

    register_plugin(Fails(), name="fails")
    with pytest.raises(PluginError, match=r"^plugin 'fails' \(<local>\) failed in "):
        edgekit_plugins.merged_files("edgekit_image_extra_files", image_name="x", arch="amd64")


def test_an_observer_hook_failing_is_named(edgekit_plugins, register_plugin):
    class Observer:
        @hookimpl
        def edgekit_step_started(self, step_id: str) -> None:
            raise ValueError(f"cannot log {step_id}")

    register_plugin(Observer(), name="observer")
    with pytest.raises(PluginError) as exc:
        edgekit_plugins.hook.edgekit_step_started(step_id="image/x", kind="image", backend="oci")
    assert str(exc.value).startswith(
        "plugin 'observer' (<local>) failed in edgekit_step_started(): "
        f"ValueError: cannot log image/x (at {__file__}:"
    )
    assert isinstance(exc.value.__cause__, ValueError)


def test_hook_recorder_sees_calls(edgekit_plugins, register_plugin, hook_recorder):
    seen: list[str] = []

    class Observer:
        @hookimpl
        def edgekit_step_started(self, step_id: str) -> None:
            seen.append(step_id)

    register_plugin(Observer(), name="observer")
    edgekit_plugins.hook.edgekit_step_started(step_id="image/x", kind="image", backend="oci")
    [call] = hook_recorder.named("edgekit_step_started")
    assert call.kwargs == {"step_id": "image/x", "kind": "image", "backend": "oci"}
    assert call.plugins == ("observer",)
    assert seen == ["image/x"]


# --- entry points: real distributions on sys.path ------------------------------------------


#: What ``edgekit.testing.install_plugin`` returns: install(distribution, source, **kw).
Install = Callable[..., Path]


def test_third_party_entry_point_is_found_with_its_distribution(install_plugin: Install):
    install_plugin("edgekit-pigeon", PIGEON, module="edgekit_pigeon_ep", version="1.2.3")
    pm = PluginManager(disabled="")
    info = pm.backend_info("transport", "pigeon")
    assert info.distribution == "edgekit-pigeon 1.2.3"
    assert not info.builtin
    with pytest.raises(BackendNotFoundError, match=r"pigeon \(edgekit-pigeon 1\.2\.3\)"):
        pm.backend_info("transport", "carrier")


def test_broken_third_party_plugin_is_reported_and_skipped(install_plugin: Install, caplog):
    install_plugin("edgekit-pigeon", PIGEON, module="edgekit_pigeon_ok", version="1.2.3")
    install_plugin(
        "edgekit-broken", "import no_such_module\n", module="edgekit_broken_ep", version="1.2.3"
    )
    pm = PluginManager(disabled="")
    assert pm.backend_info("transport", "pigeon").name == "pigeon"
    [broken] = [b for b in pm.broken if b.plugin.startswith("edgekit_")]
    assert broken.plugin == "edgekit_broken_ep"
    assert broken.distribution == "edgekit-broken 1.2.3"
    assert "ModuleNotFoundError" in broken.error
    assert "skipping broken edgekit plugin 'edgekit_broken_ep'" in caplog.text


def test_disable_plugins_blocks_third_party(
    install_plugin: Install, monkeypatch: pytest.MonkeyPatch
):
    install_plugin("edgekit-pigeon", PIGEON, module="edgekit_pigeon_off", version="1.2.3")
    monkeypatch.setenv("EDGEKIT_DISABLE_PLUGINS", "1")
    pm = PluginManager()
    with pytest.raises(BackendNotFoundError):
        pm.backend_info("transport", "pigeon")
    assert "edgekit_pigeon_off" not in dict(pm.plugins())


def test_disable_plugins_by_name(install_plugin: Install):
    install_plugin("edgekit-pigeon", PIGEON, module="edgekit_pigeon_named", version="1.2.3")
    pm = PluginManager(disabled="edgekit-pigeon")
    assert all(i.name != "pigeon" for i in pm.backends("transport"))


def test_third_party_is_not_imported_when_a_builtin_has_the_name(install_plugin: Install):
    install_plugin(
        "edgekit-noisy",
        "raise RuntimeError('imported!')\n",
        module="edgekit_noisy_ep",
        version="1.2.3",
    )
    pm = PluginManager(disabled="")
    pm.register(BuilderPlugin(), name="builder")  # stands in for a built-in
    assert pm.backend_info("image-builder", "fast").name == "fast"
    assert "edgekit_noisy_ep" not in {b.plugin for b in pm.broken}  # never imported
    pm.backends()  # listing everything imports it, and it is reported, not fatal
    assert "edgekit_noisy_ep" in {b.plugin for b in pm.broken}
