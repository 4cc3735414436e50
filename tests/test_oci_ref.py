"""The strict reference parser: valid forms parse, invalid ones name their fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.errors import ConfigError
from edgekit.oci_ref import LayoutRef, Reference, parse_reference, parse_target

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/edge/os:v1", Reference("127.0.0.1:5000", "edge/os", "v1")),
        ("registry.example.com/os", Reference("registry.example.com", "os")),
        ("localhost/a/b/c:1.2_x-y", Reference("localhost", "a/b/c", "1.2_x-y")),
        (f"reg.io:443/os@{D}", Reference("reg.io:443", "os", None, D)),
        (f"reg.io/os:v1@{D}", Reference("reg.io", "os", "v1", D)),
        ("reg.io/my__repo/x.y-z", Reference("reg.io", "my__repo/x.y-z")),
    ],
)
def test_valid_references(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected
    assert str(parse_reference(text)) == text


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("", "empty"),
        ("ubuntu:22.04", "expected host"),
        ("library/ubuntu", "not a registry host"),
        ("reg.io/Upper/case", "lowercase"),
        ("reg.io/os@sha256:abc", "digest must be sha256"),
        ("https://reg.io/os", "URL scheme"),
        ("reg.io/os:bad tag", "whitespace"),
        ("reg.io/os:" + "t" * 129, "invalid characters"),
        ("reg.io/-os", "invalid characters"),
        ("re_g.io/os", "not a valid registry host"),
    ],
)
def test_invalid_references_raise_config_error(text: str, fault: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_reference(text)
    assert fault in str(info.value)
    assert info.value.problems[0].path == "reference"


def test_layout_targets() -> None:
    assert parse_target("oci:/srv/store") == LayoutRef(Path("/srv/store"))
    assert parse_target("oci:./store:v1") == LayoutRef(Path("store"), "v1")
    assert parse_target(f"oci:/a:b/store@{D}") == LayoutRef(Path("/a:b/store"), None, D)
    with pytest.raises(ConfigError, match="needs a directory"):
        parse_target("oci:")
    with pytest.raises(ConfigError, match="not a valid tag"):
        parse_target("oci:/x:bad!tag")
