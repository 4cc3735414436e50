"""Sites, the CSV inventory, hosts, MAC addresses, secrets and registration tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgekit.errors import ConfigError
from edgekit.model import (
    EdgeHost,
    HostState,
    Interface,
    InterfaceType,
    ModelValueError,
    Network,
    RegistrationToken,
    Secret,
    Site,
    TokenState,
    normalise_mac,
    parse_site_inventory,
)


@pytest.mark.parametrize("name", ["Store-1", "store_1", "-store", "store-", "a" * 64, ""])
def test_site_name_is_dns_label(name: str) -> None:
    with pytest.raises(ModelValueError, match=r"is not a DNS label: use lowercase letters"):
        Site(name)


def test_site_ok() -> None:
    s = Site("store-0042", {"city": "chicago"}, Network(interfaces={"eth0": Interface.dhcp()}))
    assert s.network.interfaces["eth0"].type is InterfaceType.DHCP


def test_static_needs_address() -> None:
    with pytest.raises(ModelValueError, match=r"Interface.ip_address: required for a static"):
        Interface(InterfaceType.STATIC)


def test_address_needs_prefix() -> None:
    with pytest.raises(ModelValueError, match=r"needs a prefix length"):
        Interface.static("10.0.0.5")


def test_gateway_inside_subnet() -> None:
    assert Interface.static("10.0.10.25/24", "10.0.10.1").gateway == "10.0.10.1"
    with pytest.raises(ModelValueError, match=r"10.0.11.1 is outside .* 10.0.10.0/24"):
        Interface.static("10.0.10.25/24", "10.0.11.1")


def test_network_values() -> None:
    with pytest.raises(ModelValueError) as e:
        Network(https_proxy="proxy:3128", dns_servers=("8.8.8.8", "dns.example"))
    assert [p for p, _ in e.value.problems] == [("https_proxy",), ("dns_servers", 1)]


INVENTORY = """\
name,tags,ntp_servers,interface,type,ip_address,gateway,nameserver
store-0042,city=chicago;building=b1,pool.ntp.org;time.example,enp0s3,static,10.0.10.25/24,10.0.10.1,10.0.10.1
store-0043,,,,,,,
"""


def test_inventory() -> None:
    a, b = parse_site_inventory(INVENTORY)
    assert a.name == "store-0042"
    assert a.tags == {"city": "chicago", "building": "b1"}
    assert a.network.ntp_servers == ("pool.ntp.org", "time.example")
    assert a.network.interfaces["enp0s3"] == Interface.static(
        "10.0.10.25/24", "10.0.10.1", "10.0.10.1"
    )
    assert b == Site("store-0043")


def test_inventory_errors_all_at_once() -> None:
    text = """\
name,tags,interface,type,ip_address,gateway,color
Store_1,city,eth0,static,10.0.0.5/24,10.1.0.1,red
ok-site,,eth0,bogus,,,
ok-site,,,,,,
ok-site,,,,,,
"""
    with pytest.raises(ConfigError) as e:
        parse_site_inventory(text, source="sites.csv")
    got = [(p.path, p.line) for p in e.value.problems]
    assert got == [
        ("sites.csv:1", 1),
        ("sites.csv:2", 2),
        ("sites.csv:2", 2),
        ("sites.csv:2", 2),
        ("sites.csv:3", 3),
        ("sites.csv:5", 5),
    ]
    msgs = [p.message for p in e.value.problems]
    assert "unknown column 'color'" in msgs[0]
    assert "tags: 'city' is not k=v" in msgs[1]
    assert "Interface.gateway: 10.1.0.1 is outside" in msgs[2]
    assert "Site.name: 'Store_1' is not a DNS label" in msgs[3]
    assert "'bogus' is not dhcp or static" in msgs[4]
    assert "site 'ok-site' already defined on line 4" in msgs[5]
    assert all(p.source == "sites.csv" for p in e.value.problems)


def test_inventory_needs_name_column() -> None:
    with pytest.raises(ConfigError, match=r"no 'name' column"):
        parse_site_inventory("site,tags\nx,\n")


@pytest.mark.parametrize(
    "mac", ["AA:BB:CC:DD:EE:FF", "aa-bb-cc-dd-ee-ff", "aabbccddeeff", " aa:bb:cc:dd:ee:ff "]
)
def test_mac_normalised(mac: str) -> None:
    assert normalise_mac(mac) == "aa:bb:cc:dd:ee:ff"
    assert EdgeHost("h1", mac=mac).mac == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize("mac", ["aa:bb:cc:dd:ee", "aa:bb-cc:dd:ee:ff", "zz:bb:cc:dd:ee:ff"])
def test_bad_mac(mac: str) -> None:
    with pytest.raises(ModelValueError, match=r"EdgeHost.mac: .* is not a MAC address"):
        EdgeHost("h1", mac=mac)


def test_host_defaults_and_states() -> None:
    h = EdgeHost("h1")
    assert h.state is HostState.REGISTERED
    assert [s.value for s in HostState if s.available] == ["registered", "ready"]


def test_host_address() -> None:
    with pytest.raises(ModelValueError, match=r"EdgeHost.address: '10.0.0' is not an IP"):
        EdgeHost("h1", address="10.0.0")


def test_secret_never_shows() -> None:
    s = Secret("hunter2")
    assert repr(s) == str(s) == "'***'"
    assert f"{s}" == "'***'"
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2")
    assert s != Secret("other")
    token = RegistrationToken("t", s, project="p", site="store-1")
    assert "hunter2" not in repr(token)
    assert "hunter2" not in str([token])


def test_secret_not_in_exceptions() -> None:
    with pytest.raises(ModelValueError) as e:
        RegistrationToken("bad name", Secret("hunter2"), max_hosts=0)
    assert "hunter2" not in str(e.value)
    assert "max_hosts: 0 must be at least 1" in str(e.value)


def test_token_validity() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    t = RegistrationToken("t", Secret("x"), expires_at=now + timedelta(days=1))
    assert t.is_valid_at(now)
    assert not t.is_valid_at(now + timedelta(days=2))
    inactive = RegistrationToken("t", Secret("x"), state=TokenState.INACTIVE)
    assert not inactive.is_valid_at(now)


def test_token_expiry_needs_timezone() -> None:
    with pytest.raises(ModelValueError, match=r"needs a time zone"):
        RegistrationToken("t", Secret("x"), expires_at=datetime(2026, 1, 1))
