"""The agent's shell functions, run by the host's busybox sh (the device's shell).

The script is sourced with ``EDGEKIT_AGENT_LIB=1`` so that only its functions are defined.
User-data comes from :meth:`UserData.render`, as the device receives it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from edgekit_agent import AGENT_VERSION, agent_files, agent_parts_dir, agent_script
from edgekit_agent import plugin as agent_plugin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.config import render_user_data
from edgekit.hub.airgap import import_registrations
from edgekit.hub.store import HubStore
from edgekit.model import Site
from edgekit.model.sites import Network
from edgekit.model.userdata import UserData
from edgekit.plugins.manager import PluginManager

AGENT = agent_files()["usr/bin/edgekit-agent"]


def sh(script: str, **env: str) -> str:
    """Run ``script`` in busybox sh with the agent's functions defined; its stdout."""
    if shutil.which("busybox") is None:
        pytest.fail("busybox is required (apt-get install busybox-static)")
    out = subprocess.run(
        ["busybox", "sh", "-c", f'EDGEKIT_AGENT_LIB=1 . "{AGENT}"\n{script}'],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "EDGEKIT_AGENT_PARTS": str(agent_parts_dir()), **env},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def fields(text: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "user-data"
    path.write_text(text)
    lines = sh(f'site_fields "{path}"').splitlines()
    return dict(line.split("\t", 1) for line in lines)


def test_version_matches_the_package() -> None:
    assert f"AGENT_VERSION={AGENT_VERSION}\n" in agent_script()


def test_plugin_contributes_both_files_to_images_and_installers() -> None:
    manager = PluginManager(entry_points=False, disabled="")
    manager.register(agent_plugin, "agent")
    expected = {path: str(host) for path, host in agent_files().items()}
    image = manager.merged_files("edgekit_image_extra_files", image_name="os", arch="amd64")
    payload = manager.merged_files("edgekit_installer_payload_files", iso_name="installer")
    assert image == expected
    assert payload == expected
    parts = {f"usr/lib/edgekit/agent/{p.name}" for p in agent_parts_dir().glob("*.sh")}
    assert {"usr/lib/edgekit/agent/main.sh", "usr/lib/edgekit/agent/registry.sh"} <= parts
    assert set(expected) == {
        "usr/bin/edgekit-agent",
        "etc/edgekit/boot.d/60-edgekit-agent",
        *parts,
    }


def test_rendered_user_data(tmp_path: Path) -> None:
    site = Site(
        name="store-042",
        tags={"city": "chicago", "building": "b 1", "quote": 'it\'s "x"', "num": "007"},
    )
    text = render_user_data(
        UserData.for_site(site, "https://hub.example.com:8443", "ekt_A-b_c", "edge")
    )
    assert fields(text, tmp_path) == {
        "paletteEndpoint": "https://hub.example.com:8443",
        "edgeHostToken": "ekt_A-b_c",
        "projectName": "edge",
        "name": "store-042",
        "tags.city": "chicago",
        "tags.building": "b 1",
        "tags.quote": 'it\'s "x"',
        "tags.num": "007",
    }


def test_hand_written_user_data(tmp_path: Path) -> None:
    text = """#cloud-config
install:
  device: /dev/sda
  name: not-the-site   # same key, other section
stylus:
    # four-space indents, comments, quotes and a flow map
    site:
        paletteEndpoint: "api.example.com"  # no scheme
        edgeHostToken: 'tok''en'
        name: edge-store-7 # trailing comment
        network:
            httpsProxy: http://proxy:3128
            name: not-the-site
        tags: {city: "new york", floor: 3}
    registryCredentials: {}
stages:
  initramfs:
    - name: not-the-site
"""
    assert fields(text, tmp_path) == {
        "paletteEndpoint": "api.example.com",
        "edgeHostToken": "tok'en",
        "name": "edge-store-7",
        "network.httpsProxy": "http://proxy:3128",
        "network.name": "not-the-site",
        "tags.city": "new york",
        "tags.floor": "3",
    }


def test_no_stylus_site(tmp_path: Path) -> None:
    assert fields("#cloud-config\ninstall:\n  device: /dev/sda\n", tmp_path) == {}


_tag_text = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc", "Zl", "Zp"),
        exclude_characters="\u0085\ufeff",
    ),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() == s)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tags=st.dictionaries(st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True), _tag_text))
def test_tags_json_round_trips_any_rendered_tags(tmp_path: Path, tags: dict[str, str]) -> None:
    """Whatever tag values the renderer writes, the agent sends them back as equal JSON."""
    text = render_user_data(UserData.for_site(Site(name="s1", tags=tags), "http://h", "t", None))
    path = tmp_path / "ud"
    path.write_text(text)
    assert json.loads(sh(f'tags_json "{path}"')) == tags


@pytest.mark.parametrize(
    "value", ["plain", 'q"uote', "back\\slash", "tab\there", "two\nlines", "ünïcode ✓", ""]
)
def test_json_str(value: str) -> None:
    assert json.loads(sh('json_str "$V"', V=value)) == value


def test_host_uid_order(tmp_path: Path) -> None:
    dmi, mid = tmp_path / "product_uuid", tmp_path / "machine-id"
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0\n")
    env = {
        "EDGEKIT_AGENT_DMI_UUID": str(dmi),
        "EDGEKIT_AGENT_MACHINE_ID": str(mid),
        "EDGEKIT_AGENT_CMDLINE": str(cmdline),
    }
    dmi.write_text("5E1F0C9A-7B2D-4C61-9A0E-1D2C3B4A5F60\n")
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    assert sh("host_uid", **env).strip() == "5e1f0c9a-7b2d-4c61-9a0e-1d2c3b4a5f60"
    # Firmware placeholders are skipped: the machine id comes next.
    for placeholder in (
        "00000000-0000-0000-0000-000000000000",
        "03000200-0400-0500-0006-000700080009",
    ):
        dmi.write_text(placeholder + "\n")
        assert sh("host_uid", **env).strip() == "0123456789abcdef0123456789abcdef"
    dmi.unlink()
    mid.unlink()
    # Then the first NIC's MAC, digits only (this host's first non-lo interface).
    nic = sh("first_nic", **env).strip()
    if nic:
        mac = Path(f"/sys/class/net/{nic}/address").read_text().strip().replace(":", "")
        assert sh("host_uid", **env).strip() == mac
    # An explicit uid on the kernel command line wins over everything.
    cmdline.write_text("console=ttyS0 edgekit.agent.uid=edge-0007\n")
    assert sh("host_uid", **env).strip() == "edge-0007"


def test_cmdline_parameters(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("quiet edgekit.agent.timeout=30 edgekit.agent.poll=abc\n")
    env = {"EDGEKIT_AGENT_CMDLINE": str(cmdline)}
    out = sh(
        "cmdline_int edgekit.agent.timeout 120; cmdline_int edgekit.agent.poll 5;"
        " cmdline_int edgekit.agent.missing 9",
        **env,
    )
    assert out.split() == ["30", "5", "9"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.binary(min_size=1, max_size=64), message=st.binary(max_size=300))
def test_sh_hmac_matches_python(tmp_path: Path, key: bytes, message: bytes) -> None:
    path = tmp_path / "msg"
    path.write_bytes(message)
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    assert sh(f'hmac_sha256 {key.hex()} "{path}"').strip() == expected


def test_sh_bundle_imports_into_a_hub_store(tmp_path: Path) -> None:
    """The device's POSIX-sh bundle writer and the hub's importer agree."""
    store = HubStore(tmp_path / "hub.db")
    try:
        _, token = store.create_token("t", expiry=time.time() + 600, site="store-042")
        media = tmp_path / "media"
        media.mkdir()
        run = tmp_path / "run"
        run.mkdir()
        host = json.dumps(
            {"hostUid": "edge-0001", "site": "store-042", "tags": {"city": "chicago"}},
            separators=(",", ":"),
        )
        out = sh(
            f'make_bundle "$TOKEN" \'{host}\' "{media}" edge-0001',
            TOKEN=token,
            EDGEKIT_AGENT_RUN_DIR=str(run),
        )
        bundle = Path(out.strip())
        assert bundle == media / "edgekit-registration-edge-0001.json"
        assert token not in bundle.read_text()
        (result,) = import_registrations(store, [bundle])
        assert result.ok, result.error
        record = store.get_host("edge-0001")
        assert record is not None
        assert record.tags == {"city": "chicago"}
        # A bundle made with another token does not verify as this one's.
        other = sh(
            f'make_bundle "ekt_other" \'{host}\' "{media}" edge-0001',
            EDGEKIT_AGENT_RUN_DIR=str(run),
        )
        (refused,) = import_registrations(store, [Path(other.strip())])
        assert not refused.ok
        assert "token the hub does not know" in (refused.error or "")
    finally:
        store.close()


def test_site_network_proxies(tmp_path: Path) -> None:
    site = Site(
        name="s1",
        network=Network(
            http_proxy="http://user:pw@10.0.2.2:3128",
            https_proxy="http://10.0.2.2:3129",
            no_proxy="10.0.0.0/8,.internal,hub.local",
        ),
    )
    text = render_user_data(UserData.for_site(site, "http://hub.example.com:8080", "t", None))
    path = tmp_path / "ud"
    path.write_text(text)
    got = fields(text, tmp_path)
    assert got["network.httpProxy"] == "http://user:pw@10.0.2.2:3128"
    assert got["network.noProxy"] == "10.0.0.0/8,.internal,hub.local"
    assert "name" in got  # the site's own name is still read after the network section

    def proxy(endpoint: str) -> str:
        return sh(f'proxy_for "{endpoint}" "{path}"').strip()

    assert proxy("http://hub.example.com:8080") == "http://user:pw@10.0.2.2:3128"
    assert proxy("http://a.b.internal/x") == ""  # .internal suffix
    assert proxy("http://hub.local:80") == ""  # exact name
    # busybox wget has no CONNECT: an https endpoint goes direct.
    assert proxy("https://hub.example.com") == ""
