"""``stylus.registry.mirrors`` in the user-data model: parsing, rules that match what the
device agent (edgekit-agent's ``registry.sh``) accepts, lossless round trips, the CLI's
refusal, and a mirror in the base user-data file reaching every site ISO, where the agent's
own YAML reader finds it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import cli_runner
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_device_repave import sh

from edgekit import config
from edgekit.config import parse_user_data, render_user_data
from edgekit.errors import ConfigError
from edgekit.model import (
    ModelValueError,
    RegistryMirror,
    Stylus,
    StylusRegistry,
    StylusSite,
    UserData,
)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"
INSTALLER = ROOT / "plugins/edgekit-iso/src/edgekit_iso/data/50-edgekit-installer"

MIRRORS = """\
#cloud-config
stylus:
  site: {name: store-1}
  registry:
    mirrors:
      "127.0.0.1:5000":                 # the registry part of providerImage, quoted
        endpoint: http://10.0.2.2:5000
        insecure: true                  # plain http is refused without it
      registry.example.com:
        endpoint: https://mirror.example.com/v/
        capabilities: [pull, resolve]
    configPath: /etc/mirrors
  registryCredentials: {domain: registry.example.com, username: u, password: p}
"""


def edgekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"EDGEKIT_REGISTRATION_TOKEN": "ekt_mirror-test-token"}
    return cli_runner.edgekit(*args, env=env, cwd=cwd, timeout=300)


# --- the model ---------------------------------------------------------------------------


def test_mirrors_are_modelled_and_other_keys_kept() -> None:
    ud = parse_user_data(MIRRORS)
    assert ud.stylus is not None
    reg = ud.stylus.registry
    assert reg is not None
    assert reg.mirrors == {
        "127.0.0.1:5000": RegistryMirror("http://10.0.2.2:5000", insecure=True),
        "registry.example.com": RegistryMirror(
            "https://mirror.example.com/v/", extra={"capabilities": ["pull", "resolve"]}
        ),
    }
    assert reg.extra == {"configPath": "/etc/mirrors"}
    # Palette's credentials are not modelled (the agent pulls anonymously): kept as written.
    assert ud.stylus.extra == {
        "registryCredentials": {"domain": "registry.example.com", "username": "u", "password": "p"}
    }
    again = parse_user_data(render_user_data(ud))
    assert again == ud
    assert render_user_data(again) == render_user_data(ud)


def test_with_mirror_adds_or_replaces_one_and_keeps_the_rest() -> None:
    base = parse_user_data(MIRRORS)
    ud = base.with_mirror("localhost:5000", "https://10.0.2.2:5443")
    assert ud.stylus is not None
    assert base.stylus is not None
    assert ud.stylus.site == base.stylus.site
    assert ud.stylus.extra == base.stylus.extra
    assert ud.stylus.registry is not None
    assert base.stylus.registry is not None
    assert ud.stylus.registry.mirrors == {
        **base.stylus.registry.mirrors,
        "localhost:5000": RegistryMirror("https://10.0.2.2:5443"),
    }
    # Replacing a mirror keeps its unmodelled keys.
    again = ud.with_mirror("registry.example.com", "http://10.0.0.9", insecure=True)
    assert again.stylus is not None
    assert again.stylus.registry is not None
    assert again.stylus.registry.mirrors["registry.example.com"] == RegistryMirror(
        "http://10.0.0.9", True, {"capabilities": ["pull", "resolve"]}
    )
    assert UserData().with_mirror("r.example:1", "https://m").stylus == Stylus(
        registry=StylusRegistry({"r.example:1": RegistryMirror("https://m")})
    )


def test_a_plain_http_mirror_needs_insecure_in_python_too() -> None:
    with pytest.raises(ModelValueError) as e:
        UserData().with_mirror("127.0.0.1:5000", "http://10.0.2.2:5000/")
    assert e.value.problems == (
        (
            ("mirrors", "127.0.0.1:5000", "endpoint"),
            "StylusRegistry.mirrors['127.0.0.1:5000']['endpoint']: the mirror "
            "http://10.0.2.2:5000 for 127.0.0.1:5000 is plain http; set "
            'stylus.registry.mirrors."127.0.0.1:5000".insecure: true to allow it',
        ),
    )


@pytest.mark.parametrize(
    "host",
    ["registry.example.com", "registry.example.com:443", "10.0.0.5:5000", "localhost",
     "localhost:5000", "registry:5000", "a-b.c-d.io"],
)  # fmt: skip
def test_registry_hosts_accepted(host: str) -> None:
    assert StylusRegistry({host: RegistryMirror("https://m.example")}).mirrors[host]


@pytest.mark.parametrize(
    "endpoint",
    ["https://m.example", "https://m.example/", "http://10.0.2.2:5000", "https://[::1]:5443/",
     "https://m.example:8443/mirror/v-1/", "https://m.example/%7Eme", "http://registry_mirror:5000"],
)  # fmt: skip
def test_endpoints_accepted(endpoint: str) -> None:
    assert StylusRegistry({"r.example": RegistryMirror(endpoint, insecure=True)})


BAD = """\
#cloud-config
stylus:
  site: {projectName: a, projectUid: b}
  registry:
    mirrors:
      "127.0.0.1:5000":
        endpoint: http://10.0.2.2:5000/
      registry: {endpoint: "https://m.example"}
      "a.example:99999": {endpoint: "ftp://m.example"}
      "b.example": {endpoint: "https://user:hunter22@m.example"}
      "c.example": {endpoint: "https://m.example/v2?x=1"}
      "d.example": {endpoint: "https://m.example#top"}
      "e.example": {endpoint: "https://:5000"}
      "f.example": {endpoint: "https://m.example:0"}
      "g.example": {endpoint: "https://m.example/a b"}
      "h.example": {endpoint: "https://m.example/'a"}
      "[::1]:5000": {endpoint: "https://m.example"}
      "i.example": {endpoint: "HTTPS://m.example"}
      "j.example": {insecure: true}
      "k.example": {endpoint: "ftp://user:hunter22 x@m.example"}
"""


def test_every_mirror_problem_at_once_with_its_path_and_line() -> None:
    with pytest.raises(ConfigError) as e:
        parse_user_data(BAD, source="user-data")
    got = [(p.path, p.line) for p in e.value.problems]
    m = "$.stylus.registry.mirrors"
    assert got == [
        ("$.stylus.site.projectUid", 3),
        (f'{m}["127.0.0.1:5000"].endpoint', 7),
        (f"{m}.registry", 8),
        (f'{m}["a.example:99999"]', 9),
        (f'{m}["a.example:99999"].endpoint', 9),
        (f'{m}["b.example"].endpoint', 10),
        (f'{m}["c.example"].endpoint', 11),
        (f'{m}["d.example"].endpoint', 12),
        (f'{m}["e.example"].endpoint', 13),
        (f'{m}["f.example"].endpoint', 14),
        (f'{m}["g.example"].endpoint', 15),
        (f'{m}["h.example"].endpoint', 16),
        (f'{m}["[::1]:5000"]', 17),
        (f'{m}["i.example"].endpoint', 18),
        (f'{m}["j.example"].endpoint', 19),
        (f'{m}["k.example"].endpoint', 20),
    ]
    msgs = [p.message for p in e.value.problems]
    # The agent's advice, word for word (tests/test_device_repave.py pins the agent's).
    assert msgs[1].endswith(
        "the mirror http://10.0.2.2:5000 for 127.0.0.1:5000 is plain http; set "
        'stylus.registry.mirrors."127.0.0.1:5000".insecure: true to allow it'
    )
    assert "only with a '.' or a ':' or as 'localhost'" in msgs[2]
    assert "is not a registry host[:port]" in msgs[3]
    assert msgs[4].endswith(
        "the mirror endpoint 'ftp://m.example' for a.example:99999 is not an http:// or "
        "https:// URL"
    )
    assert "holds credentials" in msgs[5]
    assert "pulls anonymously" in msgs[5]
    assert all("hunter22" not in msg for msg in msgs)  # a password is never echoed
    assert "query (?) or fragment (#)" in msgs[6]
    assert "query (?) or fragment (#)" in msgs[7]
    assert "no valid host" in msgs[8]
    assert "invalid port (1-65535)" in msgs[9]
    assert "must not contain spaces" in msgs[10]
    assert "a path with characters other than" in msgs[11]
    assert "bracketed IPv6" in msgs[12]
    assert "not an http:// or https:// URL" in msgs[13]  # the agent's test is case-sensitive
    assert msgs[14] == "required key is missing"
    assert "holds credentials" in msgs[15]  # before the scheme or spaces would quote it


def test_mirror_values_of_the_wrong_type_are_refused() -> None:
    text = (
        "#cloud-config\nstylus:\n  registry:\n    mirrors:\n"
        '      "r.example": {endpoint: 5000, insecure: "yes"}\n'
        "      s.example: [https://m.example]\n"
    )
    with pytest.raises(ConfigError) as e:
        parse_user_data(text)
    got = {p.path: p.message for p in e.value.problems}
    assert got == {
        '$.stylus.registry.mirrors["r.example"].endpoint': (
            'expected a string, got the number 5000; quote it ("5000")'
        ),
        '$.stylus.registry.mirrors["r.example"].insecure': (
            "expected true or false, got the string 'yes'"
        ),
        '$.stylus.registry.mirrors["s.example"]': "expected a mapping, got a list",
    }


# --- the command line ---------------------------------------------------------------------


def test_validate_refuses_a_bad_mirror_file_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "user-data.yaml"
    bad.write_text(BAD)
    proc = edgekit("validate", str(bad), "--kind", "user-data")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "error: 16 problems found:"
    assert lines[2] == (
        '  $.stylus.registry.mirrors["127.0.0.1:5000"].endpoint: '
        "StylusRegistry.mirrors['127.0.0.1:5000']['endpoint']: the mirror http://10.0.2.2:5000 "
        'for 127.0.0.1:5000 is plain http; set stylus.registry.mirrors."127.0.0.1:5000".insecure:'
        f" true to allow it ({bad}:7)"
    )
    assert "hunter22" not in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text(MIRRORS)
    assert edgekit("validate", str(good)).returncode == 0


def _quickstart(tmp_path: Path, user_data: str) -> Path:
    """The quick start with its inline userData replaced by a user-data file."""
    work = tmp_path / "qs"
    shutil.copytree(QUICKSTART, work)
    forge = work / "edgeforge.yaml"
    text = forge.read_text()
    start, end = text.index("  userData:\n"), text.index("\nsites:")
    forge.write_text(text[:start] + "  userData: ./user-data.yaml\n" + text[end:])
    (work / "user-data.yaml").write_text(user_data)
    return forge


def test_a_build_refuses_a_plain_http_mirror_before_writing_anything(tmp_path: Path) -> None:
    forge = _quickstart(tmp_path, MIRRORS.replace("insecure: true ", "insecure: false"))
    out = tmp_path / "dist"
    proc = edgekit("build", "site-isos", str(forge), "-o", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert '$.stylus.registry.mirrors["127.0.0.1:5000"].endpoint: ' in proc.stderr
    assert (
        'set stylus.registry.mirrors."127.0.0.1:5000".insecure: true to allow it ('
        f"{forge.parent / 'user-data.yaml'}:7)"
    ) in proc.stderr
    assert not out.exists()


def test_an_inline_mirror_problem_points_into_the_forge_file(tmp_path: Path) -> None:
    forge = tmp_path / "edgeforge.yaml"
    shutil.copytree(QUICKSTART / "k3s-placeholder", tmp_path / "k3s-placeholder")
    text = (QUICKSTART / "edgeforge.yaml").read_text()
    text = text.replace(
        "  userData:\n",
        "  userData:\n    stylus:\n      registry:\n        mirrors:\n"
        '          "localhost:5000": {endpoint: "http://10.0.2.2:5000"}\n',
    )
    forge.write_text(text)
    proc = edgekit("validate", str(forge))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert '$.iso.userData.stylus.registry.mirrors["localhost:5000"].endpoint: ' in proc.stderr
    assert 'set stylus.registry.mirrors."localhost:5000".insecure: true' in proc.stderr


# --- site ISOs and the agent ------------------------------------------------------------------


def _agent_base(user_data: Path, host: str, tmp_path: Path) -> str:
    """What the device agent's registry_base makes of ``host`` under ``user_data``."""
    out = sh(
        f'registry_base "{host}" "{user_data}" || {{ echo "E: $REG_ERROR"; exit 3; }}\n'
        'echo "$REG_BASE|$REG_VIA"',
        tmp_path,
    )
    assert out.returncode in (0, 3), out.stdout + out.stderr
    return out.stdout.strip()


def test_the_mirror_in_the_base_file_reaches_every_site_iso(tmp_path: Path) -> None:
    forge = _quickstart(tmp_path, MIRRORS.replace("  site: {name: store-1}\n", ""))
    out = tmp_path / "dist"
    proc = edgekit("build", "site-isos", str(forge), "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    isos = sorted((out / "sites").glob("*.iso"))
    assert [p.stem for p in isos] == ["store-0042", "store-0043"]
    base = parse_user_data((forge.parent / "user-data.yaml").read_text())
    assert base.stylus is not None
    for iso in isos:
        got = tmp_path / f"{iso.stem}.user-data"
        subprocess.run(
            ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/user-data", str(got)],
            capture_output=True,
            check=True,
        )
        ud = parse_user_data(got.read_text())
        assert ud.stylus is not None
        assert ud.stylus.site is not None
        assert ud.stylus.site.name == iso.stem
        assert ud.stylus.registry == base.stylus.registry
        assert ud.stylus.extra == base.stylus.extra
        # The agent reads the site's file with its own YAML reader to the same mirrors.
        assert _agent_base(got, "127.0.0.1:5000", tmp_path) == (
            "http://10.0.2.2:5000|mirror http://10.0.2.2:5000"
        )
        assert _agent_base(got, "registry.example.com", tmp_path) == (
            "https://mirror.example.com/v|mirror https://mirror.example.com/v"
        )
        assert _agent_base(got, "ghcr.io", tmp_path) == "https://ghcr.io|https://ghcr.io"


# --- property: what the model accepts renders to what the agent reads -----------------------

_label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?\Z")
_hosts = st.builds(
    lambda labels, port: ".".join(labels) + (f":{port}" if port else ""),
    st.lists(_label, min_size=2, max_size=3),
    st.none() | st.integers(1, 65535),
)
_endpoints = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{f':{port}' if port else ''}{path}",
    st.sampled_from(["http", "https"]),
    st.builds(".".join, st.lists(_label, min_size=1, max_size=3)),
    st.none() | st.integers(1, 65535),
    st.from_regex(r"\A(/[a-z0-9._~-]{0,6}){0,2}\Z"),
)
_extra_keys = st.from_regex(r"\Ax[a-z]{0,6}\Z")
_extras = st.dictionaries(_extra_keys, st.none() | st.booleans() | st.integers(0, 9), max_size=2)


@st.composite
def _registries(draw: st.DrawFn) -> StylusRegistry:
    mirrors = {}
    for host in draw(st.lists(_hosts, max_size=3, unique=True)):
        endpoint = draw(_endpoints)
        insecure = endpoint.startswith("http://") or draw(st.booleans())
        mirrors[host] = RegistryMirror(endpoint, insecure, draw(_extras))
    return StylusRegistry(mirrors, draw(_extras))


@settings(max_examples=80, deadline=None)
@given(_registries(), st.none() | st.just(StylusSite(name="s")))
def test_render_parse_roundtrip_of_mirrors(
    registry: StylusRegistry, site: StylusSite | None
) -> None:
    ud = UserData(stylus=Stylus(site=site, registry=registry))
    text = render_user_data(ud)
    assert parse_user_data(text) == ud
    assert config.structure(config.unstructure(ud, reveal_secrets=True), UserData) == ud


@settings(max_examples=25, deadline=None)
@given(_registries())
def test_the_agent_reads_every_rendered_mirror_as_the_model_has_it(
    registry: StylusRegistry,
) -> None:
    ud = UserData(stylus=Stylus(registry=registry))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "user-data"
        path.write_text(render_user_data(ud))
        script = "".join(
            f'registry_base "{host}" "{path}" || echo "E: $REG_ERROR"\necho "$REG_BASE"\n'
            for host in registry.mirrors
        )
        out = sh(script + 'registry_base "other.example" "' + str(path) + '"\necho "$REG_BASE"\n',
                 Path(tmp))  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    expected = [m.endpoint.removesuffix("/") for m in registry.mirrors.values()]
    assert out.stdout.splitlines() == [*expected, "https://other.example"]


def test_the_qemu_hosts_user_data_reads_as_the_hand_written_text_did(tmp_path: Path) -> None:
    """tests/qemu_hosts.py now renders its user-data from the model: the agent and the
    installer (both read it with line-based shell readers) must get what they got before."""
    import qemu_hosts

    args = "edgekit.agent.poll=1 edgekit.agent.watch=forever edgekit.agent.confirm_within=300"
    text = qemu_hosts.site_user_data(
        hub_port=41234, token="ekt_AbC-12_x", site="store-up", registry="127.0.0.1:45678",
        kernel_args=args,
    )  # fmt: skip
    path = tmp_path / "user-data"
    path.write_text(text)
    out = sh(
        f'for k in paletteEndpoint edgeHostToken name; do site_field "{path}" $k; done\n'
        f'registry_base 127.0.0.1:45678 "{path}" && echo "$REG_BASE"\n',
        tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "http://10.0.2.2:41234",
        "ekt_AbC-12_x",
        "store-up",
        "http://10.0.2.2:45678",
    ]
    installer = subprocess.run(
        ["busybox", "sh", "-c", f'EDGEKIT_INSTALLER_LIB=1 . "{INSTALLER}"\n'
         f'yaml_get "{path}" install grub_options extra_cmdline\n'
         f'yaml_get "{path}" install poweroff\nyaml_get "{path}" stylus site name\n'],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )  # fmt: skip
    assert installer.returncode == 0, installer.stdout + installer.stderr
    assert installer.stdout.splitlines() == [args, "true", "store-up"]
