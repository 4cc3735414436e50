"""Rendered YAML reads back as the same strings under YAML 1.1 rules too (PyYAML's
``safe_load``), not only under ruamel's YAML 1.2: registry mirror keys are always quoted,
and so is any other string a 1.1 or 1.2 parser would take for a number, a bool, a null or a
date. Everything else renders as ruamel writes it by itself."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from test_device_repave import sh

from edgekit import config
from edgekit.config import parse_user_data, render_user_data
from edgekit.config._scalars import read_as_non_string
from edgekit.model import Stylus, StylusSite, UserData

# Mirror keys a YAML 1.1 parser reads as numbers when plain (5000:30 is base-60 300030,
# 1:20 is 80), and the usual spellings.
HOSTS = ("5000:30", "1:20", "127.0.0.1:5000", "localhost:5000", "registry.example.com")


def _mirrored() -> UserData:
    ud = UserData(stylus=Stylus(site=StylusSite(name="store-1")))
    for i, host in enumerate(HOSTS):
        ud = ud.with_mirror(host, f"http://10.0.2.{i + 1}:5000", insecure=True)
    return ud


def test_mirror_keys_load_as_the_exact_strings_under_yaml_1_1() -> None:
    text = render_user_data(_mirrored())
    doc = yaml.safe_load(text)
    mirrors = doc["stylus"]["registry"]["mirrors"]
    assert list(mirrors) == list(HOSTS)
    assert all(type(k) is str for k in mirrors)
    assert mirrors["5000:30"] == {"endpoint": "http://10.0.2.1:5000", "insecure": True}
    # Every key double-quoted, as docs/agent.md writes them; nothing else changed.
    mirrors_text = "".join(
        f'      "{host}":\n        endpoint: http://10.0.2.{i + 1}:5000\n        insecure: true\n'
        for i, host in enumerate(HOSTS)
    )
    assert text == (
        "#cloud-config\nstylus:\n  site:\n    name: store-1\n  registry:\n    mirrors:\n"
        + mirrors_text
    )
    assert parse_user_data(text) == _mirrored()


def test_the_agent_reads_the_quoted_keys(tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_text(render_user_data(_mirrored()))
    for i, host in enumerate(HOSTS):
        out = sh(
            f'registry_base "{host}" "{path}" || {{ echo "E: $REG_ERROR"; exit 3; }}\n'
            'echo "$REG_BASE"',
            tmp_path,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout == f"http://10.0.2.{i + 1}:5000\n"


def test_other_strings_a_yaml_1_1_parser_would_misread_are_quoted() -> None:
    tags = {"yes": "on", "Off": "y", "n": "NO", "1:20": "190:20:30.15", "plain": "store"}
    ud = UserData(stylus=Stylus(site=StylusSite(name="no", tags=tags)))
    text = render_user_data(ud)
    assert yaml.safe_load(text)["stylus"]["site"] == {"name": "no", "tags": tags}
    assert "    name: 'no'\n" in text
    assert "      'yes': 'on'\n" in text
    assert "      plain: store\n" in text
    assert parse_user_data(text) == ud


def _ruamel_alone(data: Any) -> str:
    # What the dumper wrote before it quoted for YAML 1.1: ruamel's own choices.
    out = io.StringIO()
    y = YAML(typ="rt")
    y.default_flow_style = False
    y.width = 4096
    y.dump(data, out)
    return out.getvalue()


_scalar = st.text(alphabet="0123456789:._-+eExXbBoOyYnN~=<inf aslT", min_size=0, max_size=10)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_scalar, _scalar | st.lists(_scalar, max_size=2), min_size=1, max_size=3))
def test_quoting_only_changes_what_would_be_misread(data: dict[str, Any]) -> None:
    text = config.dump(data)
    assert yaml.safe_load(text) == data  # YAML 1.1
    assert YAML(typ="safe").load(text) == data  # YAML 1.2
    strings = [*data, *(s for v in data.values() for s in (v if isinstance(v, list) else [v]))]
    if not any(read_as_non_string(s) for s in strings):
        assert text == _ruamel_alone(data)
