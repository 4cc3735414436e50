"""The transport capability is real (issue 15): the host client registers through the
selected transport backend and ``edgekit hub import`` collects through one, so a
third-party transport (MQTT, a gateway) plugs in the same way as ``http`` and ``file``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgekit_http import FileTransport, HttpTransport

from edgekit.errors import ConfigError, PluginError, RegistrationError
from edgekit.hub import HostClient, HubServer
from edgekit.hub.airgap import import_registrations, receive_bundles
from edgekit.plugins import (
    BuildContext,
    PluginManager,
    Received,
    ReceiveRequest,
    RegistrationReceipt,
    RegistrationRequest,
    Transport,
    hookimpl,
)

SEEN: list[RegistrationRequest] = []


class Gateway(Transport):
    """A store-and-forward gateway: hands registrations to the hub's HTTP API itself (here
    by way of the http transport) and, on the hub's side, drains a spool directory."""

    name = "gateway"

    def register(self, request: RegistrationRequest, ctx: BuildContext) -> RegistrationReceipt:
        SEEN.append(request)
        return HttpTransport().register(request, ctx)

    def receive(self, request: ReceiveRequest, ctx: BuildContext) -> Received:
        spool = Path(request.source.removeprefix("gateway:"))
        return Received(tuple(sorted(spool.glob("*.json"))))


class GatewayPlugin:
    @hookimpl
    def edgekit_transports(self) -> list[type[Transport]]:
        return [Gateway]


@pytest.fixture
def plugins() -> PluginManager:
    manager = PluginManager(disabled="1")
    manager.register(GatewayPlugin(), name="gateway")
    SEEN.clear()
    return manager


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(access_log=False) as server:
        yield server


def test_the_host_client_registers_through_the_selected_transport(
    hub: HubServer, plugins: PluginManager
) -> None:
    token = hub.client().tokens.create("s1", site="s1").secret
    assert token is not None
    agent = HostClient(hub.url, "gw-1", transport="gateway", plugins=plugins, retry_for=5)
    registration = agent.register(token, arch="amd64", site="s1")
    assert registration.host.uid == "gw-1"
    [request] = SEEN
    assert (request.endpoint, request.host["hostUid"], request.retry_for) == (hub.url, "gw-1", 5)
    assert token.reveal() not in repr(request)
    # The credential the transport brought back is the client's for its later calls.
    assert agent.heartbeat().uid == "gw-1"


def test_a_store_and_forward_transport_is_not_a_registration_yet(
    hub: HubServer, plugins: PluginManager, tmp_path: Path
) -> None:
    token = hub.client().tokens.create("s2", site="s2").secret
    assert token is not None
    agent = HostClient(tmp_path.as_uri(), "usb-1", transport="file", plugins=plugins)
    with pytest.raises(RegistrationError, match="'file' transport carried the registration"):
        agent.register(token, site="s2")
    assert list(tmp_path.glob("edgekit-registration-*.json"))


def test_hub_import_collects_through_the_transport(
    hub: HubServer, plugins: PluginManager, tmp_path: Path
) -> None:
    token = hub.client().tokens.create("s3", site="s3").secret
    assert token is not None
    media = tmp_path / "usb"
    media.mkdir()
    ctx = BuildContext(base_dir=tmp_path, output_dir=tmp_path, cache_dir=tmp_path)
    FileTransport().register(
        RegistrationRequest(media.as_uri(), token, {"hostUid": "usb-2", "site": "s3"}), ctx
    )
    assert receive_bundles([media], plugins=plugins) == sorted(media.glob("*.json"))
    spool = tmp_path / "spool"
    shutil.copytree(media, spool)
    bundles = receive_bundles([f"gateway:{spool}"], transport="gateway", plugins=plugins)
    [result] = import_registrations(hub.db_path, bundles)
    assert result.ok, result.error
    assert hub.client().hosts.get("usb-2").site == "s3"
    with pytest.raises(PluginError, match="delivers to the hub directly"):
        receive_bundles([media], transport="http", plugins=plugins)


def test_a_forge_registers_hosts_through_its_transport_and_its_options(
    hub: HubServer, plugins: PluginManager, tmp_path: Path
) -> None:
    from edgekit.forge import Forge

    token = hub.client().tokens.create("s4", site="s4").secret
    assert token is not None
    (tmp_path / "edgeforge.yaml").write_text(
        "name: reg\n"
        "backends: {transport: {name: http, options: {attempts: 1}}}\n"
        f"registration: {{endpoint: '{hub.url}'}}\n"
    )
    forge = Forge.load(tmp_path / "edgeforge.yaml", output_dir=tmp_path / "dist", plugins=plugins)
    assert forge.host_client("f-1").register(token, site="s4").host.site == "s4"
    hub.stop()
    # attempts: 1 (the transport's own option): one try, however long retry_for is.
    with pytest.raises(RegistrationError, match="after 1 attempts"):
        forge.host_client("f-2", retry_for=30).register(token, site="s4")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: reg\nbackends: {transport: {name: http, options: {attempts: 0, via: x}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        Forge.load(bad, output_dir=tmp_path / "dist", plugins=plugins).plan()
    assert [p.path for p in info.value.problems] == [
        "$.backends.transport.options.attempts",
        "$.backends.transport.options.via",
    ]
