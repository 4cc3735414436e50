"""Fuzz every route of the hub's OpenAPI description with schemathesis: no 5xx, ever.

Strings are drawn from all of Unicode, lone surrogates included (``codec=None``), with NUL;
the count is bounded (``max_examples`` per operation and mode) so the run stays under a
minute. The throttle is lifted: fuzzing sends many wrong secrets on purpose.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance
from starlette.routing import Route

from edgekit.hub import HubServer
from edgekit.hub.throttle import ThrottleLimits

#: Fuzzing presents wrong secrets by the thousand; the throttle has its own tests.
NO_THROTTLE = ThrottleLimits(per_source=10**9, per_target=10**9)


@pytest.fixture(scope="module")
def fuzz_hub(hub_db_module: str) -> Iterator[HubServer]:
    db = hub_db_module
    with HubServer(db, access_log=False, throttle=NO_THROTTLE) as hub:
        admin = hub.client()
        token = admin.tokens.create("fuzz", site="fuzz")
        assert token.secret is not None
        hub.host_client("fuzz-host").register(token.secret)
        yield hub


@pytest.fixture(scope="module")
def hub_schema(fuzz_hub: HubServer) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(fuzz_hub.url + "/openapi.json")
    # Any code point, lone surrogates and NUL included: the hub must refuse them with 4xx.
    schema.config.generation.update(codec=None, allow_x00=True)
    return schema


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_server_errors(
    hub_schema: schemathesis.BaseSchema, fuzz_hub: HubServer, mode: schemathesis.GenerationMode
) -> None:
    """Positive (schema-valid) and negative (schema-breaking) requests on every operation."""
    key = fuzz_hub.api_key.reveal()
    seen: list[tuple[str, int]] = []
    for result in hub_schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.generate],
        )
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            # Half the requests carry the admin key, so fuzzing reaches the validation
            # code behind authentication as well as the refusals in front of it.
            authed = zlib.crc32(repr(case.body).encode()) % 2 == 0
            if (
                case.path == "/v1/events"
                and isinstance(case.query, dict)
                and case.query.get("timeout")
            ):
                case.query["timeout"] = 0  # a long-poll's wait is tested in test_hub_events
            response = case.call(headers={"ApiKey": key} if authed else {})
            seen.append((case.operation.label, response.status_code))
            assert response.status_code < 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                assert {"code", "message"} <= response.json().keys()
            # Every answer matches the document, which is made from the same view tables
            # and request specs the hub renders and reads with.
            case.validate_response(response, checks=[response_schema_conformance])

        try:
            check()
        except Unsatisfiable:
            # An operation without parameters or body has no schema-breaking variant.
            assert mode is schemathesis.GenerationMode.NEGATIVE
    labels = {label for label, _ in seen}
    expected = len(list(hub_schema.get_all_operations()))
    # Negative mode has nothing to break in GET /healthz and GET /openapi.json-like routes.
    assert len(labels) >= (expected if mode is schemathesis.GenerationMode.POSITIVE else 10)


def test_openapi_describes_every_route(fuzz_hub: HubServer) -> None:
    import requests

    from edgekit.hub.server import create_app
    from edgekit.hub.store import HubStore

    doc = requests.get(fuzz_hub.url + "/openapi.json", timeout=10).json()
    store = HubStore(fuzz_hub.db_url)
    try:
        app = create_app(store)
        served = {
            (route.path, method.lower())
            for route in app.routes
            if isinstance(route, Route)
            for method in route.methods or ()
            if method != "HEAD"
        }
    finally:
        store.close()
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    assert served == described
    for path, method in described:
        op = doc["paths"][path][method]
        if method in ("post", "put") and path != "/healthz":
            assert "requestBody" in op, (path, method)
