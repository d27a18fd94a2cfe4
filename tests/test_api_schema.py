"""Property-based tests of the API with schemathesis, generated from its own OpenAPI schema.

(schemathesis' pytest plugin does not run under pytest 9 yet, so each operation's hypothesis
strategy is driven directly: the same generated cases and the same checks.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api_server import api_server

OPERATIONS = 26  # every route of the API; each one is driven below


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with api_server(tmp_path_factory.mktemp("schema"), CREWDASH_DEMO_LATENCY="0.05") as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_schema_covers_every_endpoint(api_schema: Any) -> None:
    labels = {op.label for op in operations(api_schema)}
    assert "POST /research" in labels and "GET /batches/{batch_id}/events" in labels
    assert "GET /blueprints" in labels and "GET /spend" in labels
    assert "DELETE /batches/{batch_id}" in labels and "POST /batches/sheet" in labels
    assert "GET /batches/{batch_id}/crews/{run_id}/files/{path}" in labels
    assert {"POST /experiments", "GET /experiments/{experiment_id}"} <= labels
    assert len(labels) == OPERATIONS


@pytest.mark.parametrize("index", range(OPERATIONS))
def test_every_operation_answers_within_its_contract(api_schema: Any, index: int) -> None:
    operation = operations(api_schema)[index]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: Any) -> None:
        # A schema-valid batch can still name an input its blueprint lacks (`fan_out`), and a
        # schema-valid experiment can name two identical variants or no topic: each is a 400 or
        # 422 with a message, documented in the schema, not a rejected valid request.
        # A schema-valid sheet upload can be any bytes, or name a blueprint that is not there:
        # a 400 or 422 that says which.
        semantic = {"POST /batches", "POST /experiments", "POST /batches/sheet"}
        excluded = [positive_data_acceptance] if operation.label in semantic else []
        response = case.call_and_validate(timeout=60, excluded_checks=excluded)
        if response.status_code == 400:
            detail = response.json()["detail"]
            assert isinstance(detail, str) and detail and "\n" not in detail

    check()
