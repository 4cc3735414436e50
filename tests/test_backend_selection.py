"""Backends own their configuration and their targets; every selection is checked at plan
time (issue 15): options validated by the backend with the forge file's paths and part of
the cache keys of the steps that use it; a publisher claiming its own target scheme; an
unknown backend name (a transport too) refused with a did-you-mean before anything runs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.errors import ConfigError, Problem
from edgekit.forge import Forge
from edgekit.plugins import (
    BuildContext,
    PluginManager,
    Publisher,
    PullRequest,
    PullResult,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    RegistryOptions,
    hookimpl,
)

PUSHED: list[tuple[str, Mapping[str, Any]]] = []


class Bucket(Publisher):
    """A publisher of ``s3://BUCKET/PREFIX`` targets with a ``region`` option."""

    name = "bucket"

    @classmethod
    def target_problems(cls, target: str, registry: RegistryOptions) -> list[Problem]:
        if not target.startswith("s3://") or len(target) == 5:
            return [Problem("target", f"{target!r} is not s3://BUCKET[/PREFIX]")]
        return []

    @classmethod
    def options_problems(cls, options: Mapping[str, Any]) -> list[Problem]:
        problems = []
        if not isinstance(options.get("region"), str):
            problems.append(Problem("region", "is required: the bucket's region"))
        for key in sorted(set(options) - {"region", "storageClass"}):
            problems.append(Problem(key, "unknown option (region, storageClass)"))
        return problems

    def push_image(self, request: PushImageRequest, ctx: BuildContext) -> PushResult:
        raise NotImplementedError

    def push_artifact(self, request: PushArtifactRequest, ctx: BuildContext) -> PushResult:
        PUSHED.append((request.target, dict(self.options(ctx))))
        digest = "sha256:" + hashlib.sha256(request.path.read_bytes()).hexdigest()
        return PushResult(request.target, digest, request.artifact_type, 1)

    def pull(self, request: PullRequest, ctx: BuildContext) -> PullResult:
        raise NotImplementedError


class BucketPlugin:
    @hookimpl
    def edgekit_publishers(self) -> list[type[Publisher]]:
        return [Bucket]


FORGE = """
name: opts
backends:
  publisher: {name: bucket, options: {region: eu-west-1}}
sites:
  - {name: store-1}
  - {name: store-2}
registry: {target: "s3://fleet/edge"}
"""


@pytest.fixture
def plugins() -> PluginManager:
    manager = PluginManager(disabled="1")  # the built-ins, and the bucket publisher
    manager.register(BucketPlugin(), name="bucket")
    PUSHED.clear()
    return manager


def load(tmp_path: Path, text: str, plugins: PluginManager) -> Forge:
    (tmp_path / "edgeforge.yaml").write_text(text)
    return Forge.load(tmp_path / "edgeforge.yaml", output_dir=tmp_path / "dist", plugins=plugins)


def test_a_publisher_owns_its_target_scheme_and_gets_its_options(
    tmp_path: Path, plugins: PluginManager
) -> None:
    result = load(tmp_path, FORGE, plugins).run()
    assert sorted(PUSHED) == [
        ("s3://fleet/edge/sites:store-1", {"region": "eu-west-1"}),
        ("s3://fleet/edge/sites:store-2", {"region": "eu-west-1"}),
    ]
    assert result.artifacts["published-site-iso/store-1"].reference == (
        "s3://fleet/edge/sites:store-1"
    )


def test_changing_an_option_reruns_only_the_steps_of_that_backend(
    tmp_path: Path, plugins: PluginManager
) -> None:
    load(tmp_path, FORGE, plugins).run()
    changed = FORGE.replace("region: eu-west-1", "region: eu-west-1, storageClass: COLD")
    plan = load(tmp_path, changed, plugins).plan()
    status = {s.id: s.explained for s in plan.steps}
    assert status == {
        "site-iso/store-1": "cached",
        "site-iso/store-2": "cached",
        "publish/site-iso/store-1": "will run (changed input)",
        "publish/site-iso/store-2": "will run (changed input)",
    }
    # The short form and {name: ...} without options are one selection: nothing reruns.
    load(tmp_path, changed, plugins).run()
    same = changed.replace(
        "publisher: {name: bucket, options: {region: eu-west-1, storageClass: COLD}}",
        "publisher: {name: bucket, options: {storageClass: COLD, region: eu-west-1}}",
    )
    assert all(s.fresh for s in load(tmp_path, same, plugins).plan().steps)


def test_bad_options_are_the_backends_problems_with_the_forge_files_paths(
    tmp_path: Path, plugins: PluginManager
) -> None:
    forge = load(tmp_path, FORGE.replace("region: eu-west-1", "bucket: b, acl: x"), plugins)
    with pytest.raises(ConfigError) as info:
        forge.plan()
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("$.backends.publisher.options.region", "is required: the bucket's region"),
        ("$.backends.publisher.options.acl", "unknown option (region, storageClass)"),
        ("$.backends.publisher.options.bucket", "unknown option (region, storageClass)"),
    ]
    assert not (tmp_path / "dist" / "sites").exists()  # nothing ran


def test_a_backend_taking_no_options_refuses_them(tmp_path: Path, plugins: PluginManager) -> None:
    text = FORGE.replace(
        "backends:\n", "backends:\n  isoAssembler: {name: pycdlib, options: {speed: 11}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, plugins).plan()
    [problem] = info.value.problems
    assert problem.path == "$.backends.isoAssembler.options.speed"
    assert "the 'pycdlib' backend takes no options" in problem.message
    # A backend whose options are required is asked even when the file gives none.
    short = FORGE.replace("{name: bucket, options: {region: eu-west-1}}", "bucket")
    with pytest.raises(ConfigError, match=r"options\.region: is required"):
        load(tmp_path, short, plugins).plan()


def test_the_built_in_publisher_keeps_its_grammar_and_errors(
    tmp_path: Path, plugins: PluginManager
) -> None:
    text = FORGE.replace(
        "publisher: {name: bucket, options: {region: eu-west-1}}", "publisher: oras"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, plugins).plan()
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("$.registry.target", "'s3://fleet/edge' is neither oci:PATH nor host[:port]/repo")
    ]
    layout = text.replace("s3://fleet/edge", "oci:")
    with pytest.raises(ConfigError, match=r"\$\.registry\.target: oci: needs a path"):
        load(tmp_path, layout, plugins).plan()
    # And the claiming publisher refuses what it does not claim, at the same path.
    bad = FORGE.replace("s3://fleet/edge", "oci:./reg")
    with pytest.raises(ConfigError, match=r"\$\.registry\.target: 'oci:./reg' is not s3://"):
        load(tmp_path, bad, plugins).plan()


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("mqtt", "no transport backend named 'mqtt'; available: file "),
        ("htp", "did you mean 'http'"),
    ],
)
def test_an_unknown_transport_fails_at_plan_and_validate_time(
    tmp_path: Path, plugins: PluginManager, name: str, hint: str
) -> None:
    text = FORGE.replace("backends:\n", f"backends:\n  transport: {name}\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, plugins).plan()
    [problem] = info.value.problems
    assert problem.path == "$.backends.transport"
    assert hint in problem.message
    # edgekit validate: the same problem, exit 2, no traceback.
    plain = text.replace("  publisher: {name: bucket, options: {region: eu-west-1}}\n", "")
    plain = plain.replace('registry: {target: "s3://fleet/edge"}', "")
    (tmp_path / "edgeforge.yaml").write_text(plain)
    out = CliRunner().invoke(cli, ["validate", str(tmp_path / "edgeforge.yaml")])
    assert out.exit_code == 2, out.output
    assert "$.backends.transport" in out.output
    assert hint in out.output
    assert "Traceback" not in out.output


def test_the_long_form_round_trips_and_the_short_form_stays_short() -> None:
    from edgekit import config
    from edgekit.model import BackendChoice, Backends

    backends = config.structure(
        {"publisher": {"name": "s3dir", "options": {"bucket": "b"}}, "transport": "file"},
        Backends,
    )
    assert backends.publisher == BackendChoice("s3dir", {"bucket": "b"})
    assert backends.transport == BackendChoice("file")
    assert config.unstructure(backends) == {
        "publisher": {"name": "s3dir", "options": {"bucket": "b"}},
        "transport": "file",
    }
    with pytest.raises(ConfigError, match=r"\$\.publisher\.options"):
        config.structure({"publisher": {"name": "s3dir", "options": ["b"]}}, Backends)


def test_a_wrong_options_check_names_the_backend(tmp_path: Path) -> None:
    from edgekit.errors import BackendResultError

    class Careless(Bucket):
        name = "careless"

        @classmethod
        def options_problems(cls, options: Mapping[str, Any]) -> list[Problem]:
            return ["region is required"]  # type: ignore[list-item]  # the bug: not Problems

    class Plugin:
        @hookimpl
        def edgekit_publishers(self) -> list[type[Publisher]]:
            return [Careless]

    manager = PluginManager(disabled="1")
    manager.register(Plugin(), name="careless")
    text = FORGE.replace("name: bucket", "name: careless")
    with pytest.raises(
        BackendResultError, match=r"^publisher 'careless' \(<local>\) returned list"
    ):
        load(tmp_path, text, manager).plan()
