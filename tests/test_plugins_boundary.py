"""A backend's results are checked at the boundary, and its failures name it.

The backends are installed as real distributions (``edgekit.testing.install_plugin``), so
messages carry the distribution and version a user would report the bug to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgekit.debug import debug_enabled, format_error
from edgekit.errors import BuildError, EdgekitError
from edgekit.forge import Forge
from edgekit.plugins import (
    CAPABILITIES,
    BackendError,
    BackendResultError,
    BuildContext,
    PluginManager,
    Publisher,
)
from edgekit.plugins.boundary import contract, mismatch
from edgekit.plugins.interfaces import (
    Artifact,
    IsoAssembler,
    PullRequest,
    PushImageRequest,
    PushResult,
    ReferrersRequest,
    Transport,
)

Install = Callable[..., Path]

S3DIR = """
    from pathlib import Path
    from edgekit.errors import PublishError
    from edgekit.plugins import hookimpl, Publisher
    from edgekit.plugins.interfaces import PushResult

    PUSHED = []

    class S3Dir(Publisher):
        name = "s3dir"

        @classmethod
        def target_problems(cls, target, registry):
            return []  # any target: this publisher does not get as far as using it

        def push_image(self, request, ctx):
            return {"reference": request.target}  # the bug under test: a dict, not a PushResult

        def push_artifact(self, request, ctx):
            PUSHED.append(request.target)
            return {"reference": request.target}

        def pull(self, request, ctx):
            settings = {}
            return settings["bucket"]  # a bug of another kind: an exception

        def referrers(self, request, ctx):
            if request.reference == "refuse":
                raise PublishError("the bucket refused the listing")
            return [{"digest": "sha256:" + "0" * 64}, "not a descriptor"]

    @hookimpl
    def edgekit_publishers():
        return [S3Dir]
"""


@pytest.fixture
def s3dir(install_plugin: Install) -> tuple[Publisher, Path]:
    root = install_plugin("edgekit-s3dir", S3DIR, module="edgekit_s3dir_b")
    pm = PluginManager(disabled="")
    return pm.publisher("s3dir"), root / "edgekit_s3dir_b.py"


def ctx(tmp_path: Path) -> BuildContext:
    return BuildContext(base_dir=tmp_path, output_dir=tmp_path, cache_dir=tmp_path / "cache")


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_wrong_result_type_names_backend_and_distribution(s3dir, tmp_path: Path):
    publisher, source = s3dir
    with pytest.raises(BackendResultError) as exc:
        publisher.push_image(PushImageRequest(tmp_path, "v1", "oci:/x:v1"), ctx(tmp_path))
    message = str(exc.value)
    assert message.startswith(
        "publisher 's3dir' (edgekit-s3dir 0.1.0) returned dict, expected PushResult "
        f"(from push_image() at {source}:{line_of(source, 'def push_image')}); "
    )
    assert (exc.value.capability, exc.value.backend, exc.value.method) == (
        "publisher",
        "s3dir",
        "push_image",
    )
    assert exc.value.distribution == "edgekit-s3dir 0.1.0"
    assert exc.value.exit_code == 2


def test_a_list_where_a_result_record_is_due_is_named(s3dir, tmp_path: Path):
    publisher, _ = s3dir
    with pytest.raises(BackendResultError) as exc:
        publisher.referrers(ReferrersRequest("ref"), ctx(tmp_path))
    assert str(exc.value).startswith(
        "publisher 's3dir' (edgekit-s3dir 0.1.0) returned list, "
        "expected ReferrersResult (from referrers() at "
    )


def test_foreign_exception_is_wrapped_with_the_backend_and_its_line(s3dir, tmp_path: Path):
    publisher, source = s3dir
    with pytest.raises(BackendError) as exc:
        publisher.pull(PullRequest("ref", tmp_path / "d"), ctx(tmp_path))
    assert str(exc.value) == (
        "publisher 's3dir' (edgekit-s3dir 0.1.0) failed in pull(): KeyError: 'bucket' "
        f"(at {source}:{line_of(source, 'settings[')})"
    )
    assert isinstance(exc.value.__cause__, KeyError)  # kept for EDGEKIT_DEBUG=1
    assert exc.value.exit_code == 1


def test_edgekit_errors_of_a_backend_pass_unchanged(s3dir, tmp_path: Path):
    from edgekit.errors import PublishError

    publisher, _ = s3dir
    with pytest.raises(PublishError, match=r"^the bucket refused the listing$"):
        publisher.referrers(ReferrersRequest("refuse"), ctx(tmp_path))


def test_guarded_instance_keeps_its_class(s3dir):
    publisher, _ = s3dir
    assert type(publisher).__name__ == "S3Dir"
    assert isinstance(publisher, Publisher)


def test_a_failing_constructor_names_the_backend(edgekit_plugins, register_plugin):
    from edgekit.plugins import hookimpl

    class NeedsConfig(IsoAssembler):
        name = "needs-config"

        def __init__(self) -> None:
            raise FileNotFoundError(2, "No such file or directory", "/etc/needs.conf")

        def build_installer(self, request: object, ctx: BuildContext) -> Artifact:
            raise NotImplementedError

        def build_site_isos(self, requests: object, ctx: BuildContext) -> list[Artifact]:
            raise NotImplementedError

    class P:
        @hookimpl
        def edgekit_iso_assemblers(self) -> list[type[IsoAssembler]]:
            return [NeedsConfig]

    register_plugin(P(), name="p")
    with pytest.raises(BackendError, match=r"^iso-assembler 'needs-config' \(<local>\) failed to"):
        edgekit_plugins.iso_assembler("needs-config")


def test_contracts_come_from_the_interfaces():
    terms = {t.method: t.annotation for t in contract(Publisher)}
    assert terms == {
        "pull": "PullResult",
        "push_artifact": "PushResult",
        "push_image": "PushResult",
        "push_site_isos": "SiteIsosPushed",
        "referrers": "ReferrersResult",
    }
    assert {t.method: t.annotation for t in contract(IsoAssembler)}["inspect_iso"] == (
        "IsoInspection"
    )
    assert {t.method: t.annotation for t in contract(Transport)} == {
        "receive": "Received",
        "register": "RegistrationReceipt",
    }


@pytest.mark.parametrize("capability", sorted(CAPABILITIES))
def test_every_interface_method_has_a_checkable_return_type(capability: str):
    terms = contract(CAPABILITIES[capability])
    assert terms, capability
    unchecked = [t.method for t in terms if t.expected is None]
    assert unchecked == [], f"{capability}: return types only known to type checkers"


@pytest.mark.parametrize(
    ("value", "expected", "wrong"),
    [
        (PushResult("r", "d", "m", 1), PushResult, None),
        (None, PushResult, "None"),
        ([], list[Artifact], None),
        ({"a": 1}, dict[str, int] | None, None),
        ({"a": 1}, dict[str, str] | None, "dict whose value at 'a' is int"),
        (3, dict[str, str] | None, "int"),
        ({"a": "1"}, dict[str, int], "dict whose value at 'a' is str"),
        ({1: 1}, dict[str, int], "dict with a key 1 of type int"),
        ((1, "x"), tuple[int, str], None),
        ((1,), tuple[int, str], "tuple of 1 items"),
        ("abc", list[str], "str"),
    ],
)
def test_mismatch_describes_what_is_wrong(value: object, expected: object, wrong: str | None):
    assert mismatch(value, expected) == wrong


# --- a real forge run ----------------------------------------------------------------------

FORGE = """
name: boundary
backends: {isoAssembler: pycdlib, publisher: s3dir}
profiles: []
sites:
  - {name: store-1}
  - {name: store-2}
registry: {target: "oci:./published"}
"""


def test_forge_run_stops_at_a_wrong_publisher_result_naming_it(
    install_plugin: Install, tmp_path: Path
):
    install_plugin("edgekit-s3dir", S3DIR, module="edgekit_s3dir_forge")
    (tmp_path / "edgeforge.yaml").write_text(FORGE)
    forge = Forge.load(tmp_path / "edgeforge.yaml", plugins=PluginManager(disabled=""))
    with pytest.raises(BackendResultError) as exc:
        forge.run()
    assert str(exc.value).startswith(
        "publisher 's3dir' (edgekit-s3dir 0.1.0) returned dict, expected PushResult "
        "(from push_artifact() at "
    )
    import edgekit_s3dir_forge  # the installed plugin module, as the run imported it

    assert len(edgekit_s3dir_forge.PUSHED) == 1  # the run stopped at the first bad result


def test_unknown_backend_in_a_forge_file_gets_a_did_you_mean(tmp_path: Path):
    (tmp_path / "edgeforge.yaml").write_text(FORGE.replace("publisher: s3dir", "publisher: ora"))
    forge = Forge.load(tmp_path / "edgeforge.yaml", plugins=PluginManager(disabled="1"))
    with pytest.raises(EdgekitError, match=r"named 'ora' \(did you mean 'oras'\?\)"):
        forge.run()


# --- EDGEKIT_DEBUG -------------------------------------------------------------------------


def test_debug_switch_and_rendering(s3dir, tmp_path: Path):
    assert debug_enabled({"EDGEKIT_DEBUG": "1"})
    assert debug_enabled({"EDGEKIT_DEBUG": " Yes "})
    assert not debug_enabled({"EDGEKIT_DEBUG": "0"})
    assert not debug_enabled({"EDGEKIT_DEBUG": "off"})
    assert not debug_enabled({})
    publisher, source = s3dir
    with pytest.raises(BackendError) as exc:
        publisher.pull(PullRequest("ref", tmp_path / "d"), ctx(tmp_path))
    short = format_error(exc.value, debug=False)
    assert short == str(exc.value)
    full = format_error(exc.value, debug=True)
    assert full.startswith("Traceback (most recent call last):")
    assert "KeyError: 'bucket'" in full  # the cause, with the plugin's frame
    assert f'File "{source}", line {line_of(source, "settings[")}' in full
    assert full.endswith("\n\n" + short)
    # The CLI's own last line replaces the message; the traceback stays the same.
    assert format_error(exc.value, debug=False, summary="error: it broke") == "error: it broke"
    loud = format_error(exc.value, debug=True, summary="error: it broke")
    assert loud == full.removesuffix(short) + "error: it broke"


def test_build_error_is_not_wrapped(tmp_path: Path, edgekit_plugins, register_plugin):
    from edgekit.plugins import hookimpl

    class Refuses(IsoAssembler):
        name = "refuses"

        def build_installer(self, request: object, ctx: BuildContext) -> Artifact:
            raise BuildError("no space left in /tmp")

        def build_site_isos(self, requests: object, ctx: BuildContext) -> list[Artifact]:
            return []

    class P:
        @hookimpl
        def edgekit_iso_assemblers(self) -> list[type[IsoAssembler]]:
            return [Refuses]

    register_plugin(P(), name="p")
    assembler = edgekit_plugins.iso_assembler("refuses")
    assert assembler.build_site_isos([], ctx(tmp_path)) == []
    with pytest.raises(BuildError, match=r"^no space left in /tmp$"):
        assembler.build_installer(object(), ctx(tmp_path))  # type: ignore[arg-type]
