"""The forge file's JSON Schema: valid draft 2020-12, accepts good files, rejects bad ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from edgekit.model import Cluster
from edgekit.schema import forge_json_schema, json_schema

ROOT = Path(__file__).resolve().parent.parent
FORGES = [
    ROOT / "examples" / "quickstart" / "edgeforge.yaml",
    ROOT / "examples" / "forge-matrix.yaml",
]


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = forge_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_header() -> None:
    s = forge_json_schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["type"] == "object"
    assert s["additionalProperties"] is False
    assert s["required"] == ["name"]
    assert s["properties"]["kind"] == {"const": "Forge", "description": "The document kind."}


@pytest.mark.parametrize("path", FORGES, ids=lambda p: p.name)
def test_good_files_validate(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    validator.validate(load(path))


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["images"][0].update(custom_tag="x"), "custom_tag"),
        (lambda d: d["profiles"][0]["packs"][0].update(layer="oss"), "oss"),
        (lambda d: d["profiles"][0]["packs"][0].update(version=12), "12"),
        (lambda d: d["images"][0].update(base={"docker": "x"}), "docker"),
        (lambda d: d["registry"].update(plainHttp="yes"), "yes"),
        (lambda d: d.update(colour="blue"), "colour"),
    ],
)
def test_bad_files_rejected(
    validator: jsonschema.Draft202012Validator, mutate: Any, where: str
) -> None:
    data = load(FORGES[0])
    mutate(data)
    errors = list(validator.iter_errors(data))
    assert errors
    assert any(where in e.message or where in str(e.instance) for e in errors)


def _walk(node: Any, path: str = "$") -> list[tuple[str, Any]]:
    found = [(path, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _walk(v, f"{path}[{i}]")
    return found


def test_every_property_is_described() -> None:
    s = forge_json_schema()
    for path, node in _walk(s):
        if path.endswith(".properties") and isinstance(node, dict):
            for key, prop in node.items():
                assert prop.get("description"), f"{path}.{key} has no description"


def test_closed_except_user_data_extras() -> None:
    defs = forge_json_schema()["$defs"]
    open_ = sorted(name for name, d in defs.items() if d["additionalProperties"] is not False)
    assert open_ == [
        "Install",
        "RegistryMirror",
        "Stage",
        "Stylus",
        "StylusInterface",
        "StylusNetwork",
        "StylusRegistry",
        "StylusSite",
        "User",
        "UserData",
    ]
    assert "customTag" in defs["ImageSpec"]["properties"]
    assert defs["IsoSpec"]["properties"]["volumeLabel"]["type"] == "string"


def test_other_documents() -> None:
    s = json_schema(Cluster)
    jsonschema.Draft202012Validator.check_schema(s)
    jsonschema.Draft202012Validator(s).validate(load(ROOT / "examples" / "cluster-store.yaml"))


def test_forge_file_doc_mentions_every_key() -> None:
    doc = (ROOT / "docs" / "forge-file.md").read_text()
    s = forge_json_schema()
    keys = set(s["properties"])
    for d in s["$defs"].values():
        keys |= set(d["properties"])
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/forge-file.md does not document {missing}"
