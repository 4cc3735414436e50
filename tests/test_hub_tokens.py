"""Per-site tokens: a token bound to a set of sites (a forge's inventory), and one token per
site minted in one transaction. Through the domain layer, the airgap import, a real hub
over HTTP and the CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import edgekit

from edgekit import model
from edgekit.hub import HubRequestError, HubServer
from edgekit.hub.airgap import import_registrations, write_bundle
from edgekit.hub.domain import MAX_TOKEN_SITES, Hub
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.migrations import MIGRATIONS
from edgekit.hub.sql_clusters import statements
from edgekit.hub.store import SCHEMA_VERSION, HostFields, HubStore

API_KEY = "eka_tokens-test-admin-key-0123456789abcdef"
HOUR = 3600.0


@pytest.fixture
def store(hub_db: str) -> Iterator[HubStore]:
    s = HubStore(hub_db)
    yield s
    s.close()


def _host(uid: str, site: str | None) -> HostFields:
    return HostFields(uid=uid, address="10.0.0.9", arch="amd64", site=site)


def _token_site_rows(store: HubStore) -> int:
    return int(store._db.execute("SELECT count(*) FROM token_sites").fetchone()[0])


# -- the domain -------------------------------------------------------------------------------
def test_a_token_bound_to_sites_refuses_any_other_site(store: HubStore) -> None:
    hub = Hub(store)
    token, secret = hub.create_token(
        "fleet", expiry=time.time() + HOUR, sites=["store-0043", "store-0042"]
    )
    assert token.sites == ("store-0042", "store-0043")  # sorted, as stored
    assert token.site is None

    host, _ = hub.register(_host("h-1", "store-0042"), token_secret=secret)
    assert host.site == "store-0042"

    with pytest.raises(HubError) as refused:
        hub.register(_host("h-2", "store-9999"), token_secret=secret)
    assert refused.value.kind is Refusal.FORBIDDEN
    assert refused.value.code == "SiteNotAllowed"
    assert "'store-9999' is not one of them" in refused.value.message
    assert "bound to 2 site(s)" in refused.value.message
    assert "store-0043" not in refused.value.message  # the fleet's sites are not listed
    assert [p.path for p in refused.value.problems] == ["$.site"]

    with pytest.raises(HubError) as nameless:
        hub.register(_host("h-3", None), token_secret=secret)
    assert nameless.value.code == "SiteNotAllowed"
    assert "names no site" in nameless.value.message

    # Nothing of the refused registrations was stored; the token counts one host.
    assert store.count_hosts() == (1, 1)
    assert store.get_token(token.uid).host_count == 1  # type: ignore[union-attr]


def test_a_token_without_sites_still_accepts_any_site(store: HubStore) -> None:
    hub = Hub(store)
    token, secret = hub.create_token("any", expiry=time.time() + HOUR)
    assert token.sites == ()
    host, _ = hub.register(_host("h-1", "wherever"), token_secret=secret)
    assert host.site == "wherever"


def test_bad_site_sets_are_refused_with_every_problem(store: HubStore) -> None:
    hub = Hub(store)
    with pytest.raises(HubError) as bad:
        hub.create_token(
            "fleet",
            expiry=time.time() + HOUR,
            site="store-1",
            sites=["store-1", "Not_A_Label", "store-1"],
        )
    assert bad.value.kind is Refusal.INVALID
    assert [(p.path, p.message) for p in bad.value.problems] == [
        ("$.spec.sites[1]", "'Not_A_Label' is not a site name (a DNS label)"),
        ("$.spec.sites[2]", "site 'store-1' is also $.spec.sites[0]"),
        ("$.spec.sites", "give either site (one) or sites (a set), not both"),
    ]
    with pytest.raises(HubError, match="invalid") as empty:
        hub.create_token("fleet", expiry=time.time() + HOUR, sites=[])
    assert "at least one site" in empty.value.problems[0].message
    with pytest.raises(HubError) as many:
        hub.create_token(
            "fleet", expiry=time.time() + HOUR, sites=[f"s-{i}" for i in range(MAX_TOKEN_SITES + 1)]
        )
    assert f"at most {MAX_TOKEN_SITES} sites" in many.value.problems[0].message
    assert store.list_tokens() == []
    assert _token_site_rows(store) == 0


def test_one_token_per_site_all_or_none(store: HubStore) -> None:
    hub = Hub(store)
    made = hub.create_site_tokens(
        ["store-0042", "store-0043"], expiry=time.time() + HOUR, name_prefix="t-", max_hosts=3
    )
    assert [(t.name, t.site, t.max_hosts) for t, _ in made] == [
        ("t-store-0042", "store-0042", 3),
        ("t-store-0043", "store-0043", 3),
    ]
    secrets = [s for _, s in made]
    assert len(set(secrets)) == 2
    # Each token registers into its own site only: another is 403 SiteNotAllowed, as with
    # a token bound to a set of sites, and the token's own site is not revealed.
    host, _ = hub.register(_host("h-1", None), token_secret=secrets[1])
    assert host.site == "store-0043"
    with pytest.raises(HubError, match="'store-0042' is not one of them") as refused:
        hub.register(_host("h-2", "store-0042"), token_secret=secrets[1])
    assert (refused.value.kind, refused.value.code) == (Refusal.FORBIDDEN, "SiteNotAllowed")
    said = str(refused.value) + repr(refused.value.problems)
    assert "store-0043" not in said.replace("'t-store-0043'", "")  # but in the token's name
    assert store.get_host("h-2") is None

    # A batch with any bad site creates nothing, and names each bad site at once.
    with pytest.raises(HubError) as bad:
        hub.create_site_tokens(
            ["store-0044", "BAD SITE", "store-0044"], expiry=time.time() + HOUR, name_prefix="t-"
        )
    paths = [p.path for p in bad.value.problems]
    assert paths == ["$.spec.sites[1]", "$.spec.sites[2]"]
    with pytest.raises(HubError) as long_name:
        hub.create_site_tokens(["a" * 60], expiry=time.time() + HOUR, name_prefix="x" * 80)
    assert long_name.value.problems[0].path == "$.spec.sites[0]"
    assert long_name.value.problems[0].message.startswith("token name: ")
    with pytest.raises(HubError, match="invalid"):
        hub.create_site_tokens(["store-0045"], expiry=time.time() - 1)
    assert len(store.list_tokens()) == 2


def test_deleting_a_token_deletes_its_sites(store: HubStore) -> None:
    hub = Hub(store)
    token, _ = hub.create_token("fleet", expiry=time.time() + HOUR, sites=["a", "b", "c"])
    assert _token_site_rows(store) == 3
    hub.delete_token(token.uid)
    assert _token_site_rows(store) == 0


def test_a_version_3_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    for version in range(3):
        for statement in statements(MIGRATIONS[version]):
            db.execute(statement)
    db.execute("PRAGMA user_version=3")
    db.execute(
        "INSERT INTO tokens (uid, name, site, secret_hash, expiry, created)"
        " VALUES ('u1', 'old', 'store-1', 'x', ?, 0)",
        (time.time() + HOUR,),
    )
    db.close()
    store = HubStore(path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        [token] = store.list_tokens()
        assert (token.name, token.site, token.sites) == ("old", "store-1", ())
    finally:
        store.close()


def test_the_airgap_import_applies_the_same_rule(store: HubStore, tmp_path: Path) -> None:
    _, secret = Hub(store).create_token("fleet", expiry=time.time() + HOUR, sites=["store-0042"])
    host = {"hostUid": "edge-1", "hostAddress": "10.0.10.25", "arch": "amd64"}
    inside = write_bundle(tmp_path, secret, {**host, "site": "store-0042"})
    outside = write_bundle(tmp_path, secret, {**host, "hostUid": "edge-2", "site": "x-1"})
    ok, refused = import_registrations(store, [inside, outside])
    assert ok.ok
    assert ok.site == "store-0042"
    assert not refused.ok
    assert "'x-1' is not one of them" in (refused.error or "")
    assert store.get_host("edge-2") is None


# -- HTTP -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(hub_db_module: str) -> Iterator[HubServer]:
    with HubServer(hub_db_module, api_key=API_KEY) as server:
        yield server


def test_http_bound_token_and_create_many(hub: HubServer) -> None:
    admin = hub.client()
    fleet = admin.tokens.create("fleet", sites=["store-0042", "store-0043"])
    assert fleet.sites == ("store-0042", "store-0043")
    assert admin.tokens.get(fleet.uid).sites == ("store-0042", "store-0043")
    assert fleet.secret is not None
    with hub.host_client("http-1") as agent:
        reg = agent.register(fleet.secret, address="10.0.0.5", site="store-0043")
        assert reg.host.site == "store-0043"
    with hub.host_client("http-2") as agent, pytest.raises(HubRequestError) as refused:
        agent.register(fleet.secret, address="10.0.0.6", site="store-0099")
    assert (refused.value.status, refused.value.code) == (403, "SiteNotAllowed")
    assert "store-0099" in str(refused.value)
    assert [p.path for p in refused.value.problems] == ["$.site"]

    # A forge's sites (model Sites) bind a token as their names do.
    inventory = admin.tokens.create("inventory", sites=[model.Site("store-0050")])
    assert inventory.sites == ("store-0050",)

    before = {t.uid for t in admin.tokens.list()}
    per_site = admin.tokens.create_many(["store-0044", "store-0045"], name_prefix="site-")
    assert [(t.name, t.site) for t in per_site] == [
        ("site-store-0044", "store-0044"),
        ("site-store-0045", "store-0045"),
    ]
    assert all(t.secret is not None for t in per_site)
    assert "ekt_" not in repr(per_site)
    with pytest.raises(HubRequestError) as bad:
        admin.tokens.create_many(["store-0046", "No Site", "store-0046"])
    assert bad.value.status == 400
    assert [p.path for p in bad.value.problems] == ["$.spec.sites[1]", "$.spec.sites[2]"]
    after = {t.uid for t in admin.tokens.list()}
    assert after - before == {t.uid for t in per_site}  # the refused batch made none


# -- CLI --------------------------------------------------------------------------------------
def _edgekit(hub: HubServer, *args: str) -> subprocess.CompletedProcess[str]:
    return edgekit(*args, env={"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": API_KEY})


def test_cli_tokens_from_an_inventory(hub: HubServer, tmp_path: Path) -> None:
    inventory = tmp_path / "sites.csv"
    inventory.write_text("name,tags\ncli-0001,city=chicago\ncli-0002,\n")
    forge = tmp_path / "edgeforge.yaml"
    forge.write_text("name: demo\nsites:\n  - name: cli-0000\nsiteInventory: sites.csv\n")
    made = _edgekit(hub, "token", "create-many", "--inventory", str(forge), "--json")
    assert made.returncode == 0, made.stderr
    rows = json.loads(made.stdout)
    assert [r["site"] for r in rows] == ["cli-0000", "cli-0001", "cli-0002"]
    assert all(r["token"].startswith("ekt_") for r in rows)

    text = _edgekit(hub, "token", "create-many", "--site", "cli-0003", "--name-prefix", "p-")
    assert text.returncode == 0, text.stderr
    site, secret = text.stdout.split()
    assert site == "cli-0003"
    assert secret.startswith("ekt_")

    bound = _edgekit(hub, "token", "create", "fleet", "--inventory", str(inventory), "--json")
    assert bound.returncode == 0, bound.stderr
    assert json.loads(bound.stdout)["sites"] == ["cli-0001", "cli-0002"]

    bad = _edgekit(hub, "token", "create-many", "--site", "Bad_Site", "--site", "cli-0004")
    assert bad.returncode == 1
    assert "$.spec.sites[0]" in bad.stderr
    assert "Traceback" not in bad.stderr
    listed = json.loads(_edgekit(hub, "token", "list", "--json").stdout)
    assert not [r for r in listed if r["site"] == "cli-0004"]

    missing = _edgekit(hub, "token", "create-many", "--inventory", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2
    assert "nope.csv" in missing.stderr
    assert "Traceback" not in missing.stderr
    none = _edgekit(hub, "token", "create-many")
    assert none.returncode == 2
    assert "give at least one site" in none.stderr
