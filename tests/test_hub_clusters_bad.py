"""Hostile and malformed cluster changes: 400 with paths, never a 5xx, nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hub_asgi import app_with_host, call, post_json
from starlette.applications import Starlette

from edgekit import model
from edgekit.config import unstructure
from edgekit.hub.client_clusters import cluster_body
from edgekit.hub.security import new_secret
from edgekit.hub.store import HubStore

KEY = new_secret("eka_")
ADMIN = {"ApiKey": KEY}
PROFILE = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("ubuntu", "22.04"), model.Pack.k8s("k3s", "1.30.4"))
)


@pytest.fixture
def app(hub_db: str) -> Iterator[Starlette]:
    store = HubStore(hub_db)
    app = app_with_host(store, KEY)
    assert post_json(app, "/v1/clusterprofiles", unstructure(PROFILE), headers=ADMIN).status == 201
    body = cluster_body(model.Cluster.single_node("c", PROFILE.ref, "a"))
    assert post_json(app, "/v1/spectroclusters/edge-native", body, headers=ADMIN).status == 201
    yield app
    store.close()


def _patch(app: Starlette, body: Any, **headers: str) -> Any:
    return call(
        app,
        "PATCH",
        "/v1/spectroclusters/c",
        headers={**ADMIN, "Content-Type": "application/json", **headers},
        body=json.dumps(body).encode(),
    )


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"spec": []}, "$.spec"),
        ({"metadata": 5}, "$.metadata"),
        ({"metadata": {"labels": [1]}}, "$.metadata.labels"),
        ({"spec": {"machinePoolConfig": "x"}}, "$.spec.machinePoolConfig"),
        ({"spec": {"machinePoolConfig": None}}, "$.spec.machinePoolConfig"),
        ({"spec": {"machinePoolConfig": [None]}}, "$.spec.machinePoolConfig[0]"),
        ({"spec": {"values": [1]}}, "$.spec.values"),
        ({"spec": {"values": {"ubuntu": 5}}}, "$.spec.values.ubuntu"),
        ({"spec": {"values": {"nope": {}}}}, "$.spec.values.nope"),
        ({"spec": {"profile": 5}}, "$.spec.profile"),
        ({"spec": {"profile": {"name": "retail", "version": "9.0.0"}}}, "$.spec.profile"),
        ({"spec": {"cloudConfig": []}}, "$.spec.cloudConfig"),
        (
            {"spec": {"cloudConfig": {"controlPlaneEndpoint": 5}}},
            "$.spec.cloudConfig.controlPlaneEndpoint",
        ),
        ({"spec": {"providerImage": 5}}, "$.spec.providerImage"),
        ({"spec": {"providerImage": "x" * 5000}}, "$.spec.providerImage"),
        ({"spec": {"vip": "10.0.0.1"}}, "$.spec.vip"),
    ],
)
def test_bad_changes_are_refused_at_their_path(app: Starlette, body: Any, path: str) -> None:
    before = call(app, "GET", "/v1/spectroclusters/c", headers=ADMIN).json()
    answer = _patch(app, body)
    assert answer.status == 400, answer.body
    assert path in [p["path"] for p in answer.json()["problems"]], answer.body
    assert call(app, "GET", "/v1/spectroclusters/c", headers=ADMIN).json() == before


def test_bad_headers_and_queries(app: Starlette) -> None:
    assert _patch(app, {"spec": {}}, **{"If-Match": "yesterday"}).status == 400
    assert _patch(app, {"spec": {}}, **{"If-Match": '"99"'}).status == 409
    assert _patch(app, {"spec": {}}, **{"If-Match": "*"}).status == 200
    unknown = call(app, "PATCH", "/v1/spectroclusters/nope", headers=ADMIN)
    assert unknown.status == 404
    no_key = call(app, "DELETE", "/v1/spectroclusters/c")
    assert no_key.status == 401
    wrong = call(app, "GET", "/v1/spectroclusters/c/status", headers={"ApiKey": "x" * 40})
    assert wrong.status == 401
