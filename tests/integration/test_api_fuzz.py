"""The API against its own OpenAPI document, fuzzed by schemathesis over real HTTP.

The API handler runs behind the local stack's API Gateway adapter on moto, exactly as
``make run`` serves it. Every generated request (valid and invalid) must get an answer that
is never a 5xx, uses a status code the document declares, and matches the declared schema
and content type. Derandomized: the same cases every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions.api_app import build_app
from functions.handlers import api
from infra.local.api_gateway import ApiGatewayServer
from tests.integration.conftest import KEY_A, LambdaContext, Stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("api_fuzz")]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Per operation; about 30 operations. Bounded so the module stays well under a minute.
MAX_EXAMPLES = 12
# As functions.api_app.openapi() builds the served document.
TITLE, VERSION = "lambdagraph", "0.1.0"


@pytest.fixture(scope="module")
def api_url(moto_endpoint: str) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
        stack = Stack(moto_endpoint)
        # A thread with a finished run, so ids the fuzzer finds in examples can exist.
        stack.api("POST", "/threads", {"thread_id": "fuzz-thread", "metadata": {"k": "v"}})

        def invoke(event: dict[str, Any]) -> Any:
            return api.handler(event, LambdaContext(), services=stack.services)

        server = ApiGatewayServer(invoke)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def _document() -> dict[str, Any]:
    return dict(json.loads(build_app().get_openapi_json_schema(title=TITLE, version=VERSION)))


# Built at import, not from a fixture: schemathesis' lazy fixture loader does not support
# pytest 9. test_the_served_document_is_the_fuzzed_one keeps the two the same.
schema = schemathesis.openapi.from_dict(_document())


def test_the_served_document_is_the_fuzzed_one(api_url: str) -> None:
    # WHEN the document is read over HTTP
    served = requests.get(f"{api_url}/openapi.json", timeout=10).json()
    # THEN it is the one the fuzzer works from, and it declares our error responses
    assert served == _document()
    responses = served["paths"]["/threads/{thread_id}"]["get"]["responses"]
    assert {"200", "401", "404", "422", "503"} <= set(responses)


# One pytest item per operation, named by it: schemathesis' own parametrize gives them all
# the same node id under pytest 9, which pytest-xdist then miscounts.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_api_answers_as_its_openapi_document_says(api_url: str, operation: Any) -> None:
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        # GIVEN a generated request (valid or not) for this operation
        # WHEN it is sent with a valid key
        # THEN no 5xx, and status, content type and body are the declared ones
        case.call_and_validate(
            base_url=api_url, headers={"x-api-key": KEY_A}, checks=CHECKS, timeout=30
        )

    check()


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "PROPFIND"])
def test_methods_no_route_serves_are_404_not_501(api_url: str, method: str) -> None:
    # WHEN a method the API has no route for is sent over HTTP (http.server answered 501)
    reply = requests.request(method, f"{api_url}/threads", headers={"x-api-key": KEY_A}, timeout=10)
    # THEN the API answers it: 404 with a detail
    assert reply.status_code == 404
    assert reply.json()["detail"]
