"""User-data: strict parsing, lossless round trips of unmodelled keys, and for_site."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit import config
from edgekit.config import parse_user_data, render_user_data
from edgekit.errors import ConfigError
from edgekit.model import (
    Interface,
    ManagementMode,
    Network,
    Secret,
    Site,
    Stylus,
    StylusInterface,
    StylusSite,
    UserData,
)

SAMPLE = """\
#cloud-config
stylus:
  site:
    paletteEndpoint: api.spectrocloud.com
    edgeHostToken: tok-123
    projectName: edge-sites
    name: edge-store-042
    tags: {city: chicago, building: building-1}
    registrationURL: https://example.com/qr
    deviceUIDPaths:
      - name: /etc/machine-id
    network:
      httpsProxy: https://proxy.example.com
      noProxy: 10.0.0.0/8
      interfaces:
        enp0s3: {type: static, ipAddress: 10.0.10.25/24, gateway: 10.0.10.1,
                 nameserver: 10.10.128.8}
  managementMode: central
  localUI: {port: 5080}
  registryCredentials: {domain: r.example.com}
install:
  poweroff: true
  device: auto
  extra-partitions:
    - {name: data, size: 0}
  grub_options: {extra_cmdline: console=ttyS0}
  bind_mounts: [/var/data]
stages:
  initramfs:
    - name: Create user
      users:
        kairos: {groups: [sudo], passwd: kairos, shell: /bin/bash}
      hostname: edge-1
  after-install:
    - commands: [echo done]
users:
  - name: admin
    passwd: admin
    lock_passwd: false
debug: true
"""


def test_parse_models_and_extras() -> None:
    ud = parse_user_data(SAMPLE)
    assert ud.stylus is not None
    assert ud.stylus.site is not None
    site = ud.stylus.site
    assert site.edge_host_token == Secret("tok-123")
    assert site.registration_url == "https://example.com/qr"
    assert site.extra == {"deviceUIDPaths": [{"name": "/etc/machine-id"}]}
    assert site.network is not None
    assert site.network.interfaces["enp0s3"] == StylusInterface.from_interface(
        Interface.static("10.0.10.25/24", "10.0.10.1", "10.10.128.8")
    )
    assert ud.stylus.management_mode is ManagementMode.CENTRAL
    assert ud.stylus.extra == {
        "localUI": {"port": 5080},
        "registryCredentials": {"domain": "r.example.com"},
    }
    assert ud.install is not None
    assert ud.install.poweroff is True
    assert ud.install.extra_partitions == ({"name": "data", "size": 0},)
    assert ud.install.extra == {"bind_mounts": ["/var/data"]}
    stage = ud.stages["initramfs"][0]
    assert stage.users["kairos"].groups == ("sudo",)
    assert stage.users["kairos"].extra == {"shell": "/bin/bash"}
    assert stage.extra == {"hostname": "edge-1"}
    assert ud.users[0].extra == {"lock_passwd": False}
    assert ud.extra == {"debug": True}


def test_interface_extras_kept() -> None:
    ud = parse_user_data("stylus: {site: {network: {interfaces: {eth0: {type: dhcp, mtu: 9000}}}}}")
    assert ud.stylus is not None
    assert ud.stylus.site is not None
    assert ud.stylus.site.network is not None
    assert ud.stylus.site.network.interfaces["eth0"].extra == {"mtu": 9000}
    assert parse_user_data(render_user_data(ud)) == ud


def test_render_is_lossless() -> None:
    ud = parse_user_data(SAMPLE)
    text = render_user_data(ud)
    assert text.startswith("#cloud-config\n")
    assert "edgeHostToken: tok-123" in text  # the device needs the real token
    assert parse_user_data(text) == ud
    assert "tok-123" not in repr(ud)
    assert "tok-123" not in config.dump(ud)  # ordinary dumps redact


def test_strict_modelled_keys() -> None:
    bad = """\
#cloud-config
stylus:
  site:
    paletteEndpoint: 3
    disableAutoRegister: "yes"
    network:
      interfaces:
        eth0: {type: manual}
  managementMode: remote
install:
  reboot: true
  poweroff: true
stages:
  boot:
    - commands: echo hi
"""
    with pytest.raises(ConfigError) as e:
        parse_user_data(bad, source="user-data")
    got = [(p.path, p.line) for p in e.value.problems]
    assert got == [
        ("$.stylus.site.paletteEndpoint", 4),
        ("$.stylus.site.disableAutoRegister", 5),
        ("$.stylus.site.network.interfaces.eth0.type", 8),
        ("$.stylus.managementMode", 9),
        ("$.install.reboot", 11),
        ("$.stages.boot[0].commands", 15),
    ]
    msgs = [p.message for p in e.value.problems]
    assert "quote it" in msgs[0]
    assert "expected true or false" in msgs[1]
    assert "not one of: dhcp, static" in msgs[2]
    assert "expected a list" in msgs[5]


def test_for_site() -> None:
    site = Site(
        "store-0042",
        {"city": "chicago"},
        Network(
            https_proxy="http://proxy:3128",
            ntp_servers=("pool.ntp.org",),
            interfaces={"enp0s3": Interface.dhcp()},
        ),
    )
    base = parse_user_data(
        "#cloud-config\ninstall: {poweroff: true}\nstylus: {site: {prefix: x}}\n"
    )
    ud = UserData.for_site(site, "http://10.0.2.2:8080", "tok", "edge", base=base)
    assert ud.install == base.install
    assert ud.stylus is not None
    assert ud.stylus.site is not None
    s = ud.stylus.site
    assert (s.palette_endpoint, s.project_name, s.name, s.prefix) == (
        "http://10.0.2.2:8080",
        "edge",
        "store-0042",
        "x",
    )
    assert s.edge_host_token == Secret("tok")
    assert s.ntp_servers == ("pool.ntp.org",)
    assert s.network is not None
    assert s.network.https_proxy == "http://proxy:3128"
    assert parse_user_data(render_user_data(ud)) == ud


def test_for_site_generic() -> None:
    ud = UserData.for_site(None, None, None, None)
    assert ud == UserData()
    ud = UserData.for_site(None, "https://hub", None, "p")
    assert ud.stylus == Stylus(site=StylusSite(palette_endpoint="https://hub", project_name="p"))


# --- property: parse(render(x)) == x for documents full of unmodelled keys -----------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20),
)
# Text as edgekit accepts it: no lone surrogates, no control characters (docs/bad-input.md).
_text = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
_keys = st.from_regex(r"\Ax[a-z_-]{0,8}\Z")  # 'x' prefix: never a modelled key
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_extras = st.dictionaries(_keys, _values, max_size=3)


@st.composite
def user_data(draw: st.DrawFn) -> str:
    """A user-data document as plain data, with unmodelled keys at every level."""
    user = {
        "passwd": draw(st.text(_text, max_size=5)),
        "groups": draw(st.lists(st.text(_text, max_size=5), max_size=2)),
    }
    user.update(draw(_extras))
    stage = {"name": "s", "users": {"u": user}, "commands": ["echo"], **draw(_extras)}
    site = {
        "paletteEndpoint": "https://x",
        "edgeHostToken": draw(st.text(_text, min_size=1, max_size=8)),
    }
    site.update(draw(_extras))
    doc = {
        "stylus": {"site": site, **draw(_extras)},
        "install": {"device": "auto", **draw(_extras)},
        "stages": {"boot": [stage]},
        **draw(_extras),
    }
    return "#cloud-config\n" + config.dump(doc, "json")


@settings(max_examples=60, deadline=None)
@given(user_data())
def test_render_parse_roundtrip(text: str) -> None:
    ud = parse_user_data(text)
    again = parse_user_data(render_user_data(ud))
    assert again == ud
    assert render_user_data(parse_user_data(render_user_data(again))) == render_user_data(ud)
