"""Installed plugins are checked as strictly as register() checks them, and fail in isolation.

Every plugin here is a real distribution (module + ``*.dist-info`` with an ``edgekit`` entry
point) on a temporary ``sys.path`` entry, found by ``importlib.metadata`` as pip-installed
plugins are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from plugin_sources import PIGEON, S3DIR

from edgekit.errors import BackendConflictError, BackendNotFoundError, PluginError
from edgekit.plugins import BrokenPlugin, PluginManager, Publisher, hookimpl

Install = Callable[..., Path]


def problems_of(pm: PluginManager, plugin: str) -> list[str]:
    return [p.error for p in pm.problems() if p.plugin == plugin]


def only_problem(plugin: str) -> BrokenPlugin:
    [problem] = [p for p in PluginManager(disabled="").problems() if p.plugin == plugin]
    return problem


def line_of(path: Path, text: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


# --- hooks --------------------------------------------------------------------------------


def test_misspelled_hook_is_a_problem_with_did_you_mean_and_place(install_plugin: Install):
    root = install_plugin(
        "edgekit-typo",
        """
        from edgekit.plugins import hookimpl

        @hookimpl
        def edgekit_publisher():
            return []
        """,
        module="edgekit_typo_ck",
    )
    pm = PluginManager(disabled="")
    [problem] = [p for p in pm.problems() if p.plugin == "edgekit_typo_ck"]
    source = root / "edgekit_typo_ck.py"
    where = f"{source}:{line_of(source, '@hookimpl')}"  # where Python starts the function
    assert problem.kind == "hooks"
    assert problem.distribution == "edgekit-typo 0.1.0"
    assert problem.location == where
    assert problem.error == (
        "unknown hook edgekit_publisher (did you mean 'edgekit_publishers'?); "
        f"docs/hooks.md lists the hooks that exist (at {where})"
    )
    assert "edgekit_typo_ck" not in dict(pm.plugins())  # skipped, not half-registered


def test_hook_without_hookimpl_is_a_problem_not_silence(install_plugin: Install):
    install_plugin(
        "edgekit-unmarked",
        """
        from edgekit.plugins import Transport

        class Crow(Transport):
            name = "crow"
            def register(self, request, ctx):
                return {}

        def edgekit_transports():
            return [Crow]
        """,
        module="edgekit_unmarked_ck",
    )
    pm = PluginManager(disabled="")
    [error] = problems_of(pm, "edgekit_unmarked_ck")
    assert error.startswith(
        "edgekit_transports is not marked @hookimpl, so edgekit would never call it; "
        "decorate it with @edgekit.plugins.hookimpl (at "
    )
    with pytest.raises(BackendNotFoundError, match="no transport backend named 'crow'"):
        pm.backend_info("transport", "crow")


def test_hook_taking_an_argument_the_hook_does_not_pass(install_plugin: Install):
    install_plugin(
        "edgekit-args",
        """
        from edgekit.plugins import hookimpl

        @hookimpl
        def edgekit_step_started(step_id, colour):
            pass
        """,
        module="edgekit_args_ck",
    )
    [error] = problems_of(PluginManager(disabled=""), "edgekit_args_ck")
    assert error.startswith(
        "edgekit_step_started takes colour, which the hook does not pass; "
        "it passes step_id, kind, backend (any of them, by name) (at "
    )


def test_every_problem_of_a_plugin_is_listed_at_once(install_plugin: Install):
    install_plugin(
        "edgekit-many",
        """
        from edgekit.plugins import hookimpl

        @hookimpl
        def edgekit_transport():
            return []

        def edgekit_manifest_written(path, artifacts):
            pass
        """,
        module="edgekit_many_ck",
    )
    errors = problems_of(PluginManager(disabled=""), "edgekit_many_ck")
    assert len(errors) == 2
    assert errors[0].startswith("edgekit_manifest_written is not marked @hookimpl")
    assert errors[1].startswith(
        "unknown hook edgekit_transport (did you mean 'edgekit_transports'?)"
    )


def test_an_object_as_plugin_passes_with_its_methods(install_plugin: Install):
    install_plugin(
        "edgekit-object",
        """
        from edgekit.plugins import hookimpl

        class Observer:
            def __init__(self):
                self.seen = []

            @hookimpl
            def edgekit_step_started(self, step_id):
                self.seen.append(step_id)

        observer = Observer()
        """,
        module="edgekit_object_ck",
        entry_point="edgekit_object_ck:observer",
    )
    pm = PluginManager(disabled="")
    assert problems_of(pm, "edgekit_object_ck") == []
    pm.hook.edgekit_step_started(step_id="image/x", kind="image", backend="oci")
    assert pm.hook_manager.get_plugin("edgekit_object_ck").seen == ["image/x"]


def test_register_refuses_the_same_mistakes(edgekit_plugins: PluginManager):
    class Unmarked:
        def edgekit_publishers(self) -> list[type[Publisher]]:
            return []

        @hookimpl
        def edgekit_image_bulders(self) -> list[type]:
            return []

    with pytest.raises(PluginError) as exc:
        edgekit_plugins.register(Unmarked(), name="unmarked")
    message = str(exc.value)
    assert message.startswith("invalid edgekit plugin 'unmarked': 2 problems:\n  ")
    assert "edgekit_publishers is not marked @hookimpl" in message
    assert "unknown hook edgekit_image_bulders (did you mean 'edgekit_image_builders'?)" in message
    assert f"{__file__}:" in message  # each names the line to fix
    assert not edgekit_plugins.hook_manager.has_plugin("unmarked")


# --- backend classes ----------------------------------------------------------------------


def test_abstract_backend_class_skips_the_whole_plugin(install_plugin: Install):
    root = install_plugin(
        "edgekit-half",
        """
        from edgekit.plugins import hookimpl, Publisher, Transport

        class Dove(Transport):
            name = "dove"
            def register(self, request, ctx):
                return {}

        class HalfDone(Publisher):
            name = "half"
            def push_image(self, request, ctx):
                raise NotImplementedError

        @hookimpl
        def edgekit_transports():
            return [Dove]

        @hookimpl
        def edgekit_publishers():
            return [HalfDone]

        @hookimpl
        def edgekit_step_started(step_id):
            pass
        """,
        module="edgekit_half_ck",
    )
    pm = PluginManager(disabled="")
    [problem] = [p for p in pm.problems() if p.plugin == "edgekit_half_ck"]
    source = root / "edgekit_half_ck.py"
    assert problem.kind == "backends"
    assert problem.error == (
        "publisher backend 'half' (edgekit_half_ck.HalfDone) is abstract: it does not "
        f"implement pull, push_artifact (at {source}:{line_of(source, 'class HalfDone')})"
    )
    names = {(i.capability, i.name) for i in pm.backends()}
    assert ("transport", "dove") not in names  # nothing of a broken plugin is half-used
    assert "edgekit_half_ck" not in dict(pm.plugins())  # nor its observer hook


def test_registration_hook_returning_one_class_not_a_list(install_plugin: Install):
    install_plugin(
        "edgekit-single",
        PIGEON.replace("return [Pigeon]", "return Pigeon"),
        module="edgekit_single_ck",
    )
    [error] = problems_of(PluginManager(disabled=""), "edgekit_single_ck")
    assert error == (
        "edgekit_transports() returned the class Pigeon instead of a list (return [Pigeon])"
    )


def test_registration_hook_that_raises_names_its_line(install_plugin: Install):
    root = install_plugin(
        "edgekit-raises",
        """
        from edgekit.plugins import hookimpl

        @hookimpl
        def edgekit_transports():
            settings = {}
            return [settings["transport"]]
        """,
        module="edgekit_raises_ck",
    )
    [error] = problems_of(PluginManager(disabled=""), "edgekit_raises_ck")
    source = root / "edgekit_raises_ck.py"
    where = f"{source}:{line_of(source, 'settings[')}"
    assert error == f"edgekit_transports() raised KeyError: 'transport' (at {where})"


# --- import failures: file and line ---------------------------------------------------------


def test_import_failure_names_the_plugin_line(install_plugin: Install):
    root = install_plugin(
        "edgekit-missing", "import json\nimport no_such_module\n", module="edgekit_missing_ck"
    )
    problem = only_problem("edgekit_missing_ck")
    where = f"{root / 'edgekit_missing_ck.py'}:2"
    assert problem.kind == "import"
    assert problem.location == where
    assert problem.error == f"ModuleNotFoundError: No module named 'no_such_module' (at {where})"
    assert "Traceback (most recent call last)" in (problem.traceback or "")


def test_import_failure_deep_in_a_package_names_the_last_plugin_frame(install_plugin: Install):
    root = install_plugin(
        "edgekit-pkg",
        {
            "edgekit_pkg_ck/__init__.py": "from . import settings\n",
            "edgekit_pkg_ck/settings.py": "import json\n\nCONFIG = json.loads('{oops')\n",
        },
        module="edgekit_pkg_ck",
    )
    problem = only_problem("edgekit_pkg_ck")
    # json's own frames come later in the traceback; the plugin's line is what to fix.
    assert problem.location == f"{root / 'edgekit_pkg_ck' / 'settings.py'}:3"
    assert problem.error.startswith("JSONDecodeError: Expecting property name")


def test_syntax_error_names_file_and_line(install_plugin: Install):
    root = install_plugin("edgekit-syntax", "x = 1\ndef broken(:\n", module="edgekit_syntax_ck")
    problem = only_problem("edgekit_syntax_ck")
    assert problem.location == f"{root / 'edgekit_syntax_ck.py'}:2"
    assert problem.error.startswith("SyntaxError: ")


# --- duplicate names: an error only for whoever selects them -------------------------------


def test_duplicate_name_is_a_conflict_only_when_selected(install_plugin: Install):
    install_plugin("edgekit-s3dir", S3DIR, module="edgekit_s3dir_one")
    install_plugin("edgekit-s3dir-fork", S3DIR, module="edgekit_s3dir_two", version="2.0")
    install_plugin("edgekit-pigeon", PIGEON, module="edgekit_pigeon_ck")
    pm = PluginManager(disabled="")

    assert pm.backend_info("transport", "pigeon").distribution == "edgekit-pigeon 0.1.0"
    listed = [(i.name, i.distribution) for i in pm.backends("publisher") if i.name == "s3dir"]
    assert listed == [("s3dir", "edgekit-s3dir 0.1.0"), ("s3dir", "edgekit-s3dir-fork 2.0")]
    [conflict] = pm.conflicts()
    assert (conflict.capability, conflict.name) == ("publisher", "s3dir")

    with pytest.raises(BackendConflictError) as exc:
        pm.backend("publisher", "s3dir")
    assert str(exc.value) == (
        "two publisher backends are named 's3dir': edgekit_s3dir_one.S3Dir from "
        "edgekit-s3dir 0.1.0 (plugin 'edgekit_s3dir_one') and edgekit_s3dir_two.S3Dir from "
        "edgekit-s3dir-fork 2.0 (plugin 'edgekit_s3dir_two'); uninstall one, or block one "
        "with EDGEKIT_DISABLE_PLUGINS=edgekit_s3dir_one"
    )
    blocked = PluginManager(disabled="edgekit_s3dir_one")
    assert blocked.backend_info("publisher", "s3dir").distribution == "edgekit-s3dir-fork 2.0"


def test_report_lists_conflicts_and_problems_as_data(install_plugin: Install):
    install_plugin("edgekit-s3dir", S3DIR, module="edgekit_s3dir_r1")
    install_plugin("edgekit-s3dir-fork", S3DIR, module="edgekit_s3dir_r2")
    install_plugin("edgekit-missing", "import no_such_module\n", module="edgekit_missing_r")
    report = PluginManager(disabled="").report()
    doc = report.to_json()
    assert not report.ok
    [conflict] = doc["conflicts"]
    assert conflict["name"] == "s3dir"
    assert [c["distribution"] for c in conflict["candidates"]] == [
        "edgekit-s3dir 0.1.0",
        "edgekit-s3dir-fork 0.1.0",
    ]
    statuses = {(b["name"], b["plugin"]): b["status"] for b in doc["backends"]}
    assert statuses[("s3dir", "edgekit_s3dir_r1")] == "conflict"
    assert statuses[("oras", "oras")] == "ok"
    [broken] = [b for b in doc["broken"] if b["plugin"] == "edgekit_missing_r"]
    assert broken["kind"] == "import"
    assert broken["location"].endswith("edgekit_missing_r.py:1")
    json.dumps(doc)  # plain JSON


# --- unknown names: did you mean -----------------------------------------------------------


def test_unknown_backend_name_suggests_the_closest(install_plugin: Install):
    install_plugin("edgekit-pigeon", PIGEON, module="edgekit_pigeon_dym")
    pm = PluginManager(disabled="")
    with pytest.raises(BackendNotFoundError) as exc:
        pm.backend("transport", "pigeno")
    assert str(exc.value).startswith(
        "no transport backend named 'pigeno' (did you mean 'pigeon'?); available: "
    )
    with pytest.raises(BackendNotFoundError, match=r"\('pigeon' is a transport backend\)"):
        pm.backend("publisher", "pigeon")


def test_selection_problems_are_path_addressed_and_all_at_once(install_plugin: Install):
    install_plugin("edgekit-pigeon", PIGEON, module="edgekit_pigeon_sel")
    pm = PluginManager(disabled="")
    problems = pm.selection_problems(
        {"image-builder": "oic", "publisher": "oras", "transport": "pigeon", "iso-assembler": "x"}
    )
    assert [p.path for p in problems] == ["$.backends.imageBuilder", "$.backends.isoAssembler"]
    assert "(did you mean 'oci'?)" in problems[0].message


def test_builtin_plugins_pass_every_check():
    pm = PluginManager(disabled="1")
    assert pm.problems() == []
    assert pm.conflicts() == []


def test_a_backend_with_the_old_positional_api_is_refused_when_checked(install_plugin: Install):
    """edgekit 0.1's push_image(layout, tag, target, ctx, options): a problem naming the
    method and its line, at check time, not a TypeError in the middle of a run (issue 15)."""
    root = install_plugin(
        "edgekit-old",
        """
        from edgekit.plugins import hookimpl, Publisher, PushResult

        class Old(Publisher):
            name = "old"
            def push_image(self, layout, tag, target, ctx, options):
                return PushResult(target, "sha256:" + "0" * 64, "x", 1)
            def push_artifact(self, request, ctx):
                raise NotImplementedError
            def pull(self, request, ctx):
                raise NotImplementedError

        @hookimpl
        def edgekit_publishers():
            return [Old]
        """,
        module="edgekit_old_ck",
    )
    pm = PluginManager(disabled="")
    [problem] = [p for p in pm.problems() if p.plugin == "edgekit_old_ck"]
    source = root / "edgekit_old_ck.py"
    assert problem.location == f"{source}:{line_of(source, 'def push_image')}"
    assert problem.error.startswith(
        "publisher backend 'old': push_image(layout, tag, target, ctx, options) does not "
        "match the interface push_image(request, ctx); every backend method takes a request "
        "record and the context (see docs/writing-plugins.md)"
    )
    with pytest.raises(BackendNotFoundError, match="broken plugins were skipped: edgekit_old_ck"):
        pm.publisher("old")
