"""The wire models: one shape per JSON, the same in the API, its schema, the export and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from crewdash.model.batch import Batch, BatchSnapshot, CrewState, TaskResult, TokenUsage
from crewdash.present.exports import export
from crewdash.schemas import batches, blueprints, health
from crewdash.schemas.events import ChunkEvent, CrewEvent, DoneEvent
from crewdash.store.history import Store
from tests.api_server import SharedAPI

JSON = "application/json"


@pytest.fixture(scope="module")
def api(shared_api: SharedAPI) -> Iterator[httpx.Client]:
    """The API with the test projects (and broken ones) on its search path: the session's."""
    with httpx.Client(base_url=shared_api.url, timeout=60) as client:
        yield client


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = spec["components"]["schemas"][name]
    return schema


def model_name(schema: dict[str, Any]) -> str:
    if schema.get("type") == "array":
        schema = schema["items"]
    return str(schema["$ref"]).removeprefix("#/components/schemas/")


def validator(spec: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A JSON Schema validator for one component of the OpenAPI document."""
    document = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(document)


def test_every_json_response_of_every_route_has_a_schema_with_properties(
    api: httpx.Client,
) -> None:
    """A client generated from /openapi.json sees every field: no bare objects or dicts."""
    spec = api.get("/openapi.json").json()
    checked = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status in ("200", "201", "202"):
                content = operation["responses"].get(status, {}).get("content", {})
                if JSON not in content:
                    continue
                label = f"{method.upper()} {path} {status}"
                top = content[JSON].get("schema", {})
                schema = resolve(spec, top)
                if schema.get("type") == "array":
                    schema = resolve(spec, schema.get("items", {}))
                assert schema.get("properties"), f"{label}: no properties in {top}"
                assert schema.get("additionalProperties") in (None, False), label
                checked.append(label)
    # every route but the event stream, the file, the experiment's (CSV/Markdown) export and
    # DELETE /tokens/{id} (204, no body)
    assert len(checked) == 21, checked
    events = spec["paths"]["/batches/{batch_id}/events"]["get"]["responses"]["200"]
    kinds = events["content"]["text/event-stream"]["itemSchema"]["oneOf"]
    payloads = {k["properties"]["event"]["const"]: k["properties"]["data"] for k in kinds}
    assert set(payloads) == {"crew", "chunk", "done"}
    for name, data in payloads.items():
        schema = resolve(spec, data["contentSchema"])
        assert schema["properties"], name


def read_events(api: httpx.Client, batch_id: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    with api.stream("GET", f"/batches/{batch_id}/events") as stream:
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "done":
                    break
    return events


def test_a_real_batchs_json_validates_against_its_schema_with_no_extra_fields(
    api: httpx.Client,
) -> None:
    accepted = api.post(
        "/batches",
        json={
            "topics": ["wire A", "wire B"],
            "blueprint": "analyst_crew",
            "inputs": {"audience": "CTOs"},
        },
    )
    assert accepted.status_code == 202, accepted.text
    batch_id = accepted.json()["batch_id"]
    events = read_events(api, batch_id)
    deadline = time.time() + 120
    while not (body := api.get(f"/batches/{batch_id}").json())["done"]:
        assert time.time() < deadline, "the batch did not finish"
        time.sleep(0.1)
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]

    def schema_of(path: str) -> str:
        return model_name(paths[path]["get"]["responses"]["200"]["content"][JSON]["schema"])

    detail = schema_of("/batches/{batch_id}")
    assert detail == "BatchDetail"
    assert all(c["tasks"] and c["files"] and c["spans"] for c in body["crews"])  # every part
    validator(spec, detail).validate(body)  # additionalProperties: false
    parsed = getattr(batches, detail).model_validate(body)  # extra="forbid"
    assert parsed.model_dump(mode="json") == body
    exported = api.get(f"/batches/{batch_id}/export", params={"format": "json"}).json()
    assert set(exported) == set(body)
    validator(spec, detail).validate(exported)

    listed = api.get("/batches", params={"search": batch_id}).json()
    item = schema_of("/batches")
    validator(spec, item).validate(listed[0])
    getattr(batches, item).model_validate(listed[0])
    for blueprint in api.get("/blueprints").json():
        getattr(blueprints, schema_of("/blueprints")).model_validate(blueprint)
    health.Health.model_validate(api.get("/healthz").json())

    assert events and events[-1][0] == "done"
    for name, data in events:
        model = {"crew": CrewEvent, "chunk": ChunkEvent, "done": DoneEvent}[name]
        validator(spec, model.__name__).validate(data)
        model.model_validate(data)


def finished_snapshot() -> BatchSnapshot:
    batch = Batch(
        "feed00000001",
        "analyst_crew",
        ["rust", "go", "zig", "odin"],
        model_label="gpt-4o (openai)",
        max_concurrency=2,
        model="gpt-4o",
        inputs=[{"topic": t, "audience": "CTOs"} for t in ("rust", "go", "zig", "odin")],
        kind="crew",
    )
    first, second, third, fourth = batch.run_ids
    batch.mark_running(first)
    batch.record_span(
        first,
        "call-1",
        lambda s: replace(
            s, name="gpt-4o", started_at=1.0, finished_at=2.0, tokens=TokenUsage(3, 0, 3)
        ),
    )
    batch.end(
        batch.ending(
            first,
            CrewState.SUCCEEDED,
            result="done",
            tasks=[TaskResult("t1", "gather", "facts", "Scout")],
            files=["report.md"],
        )
    )
    batch.mark_running(second)
    batch.mark_failed(second, "boom")
    batch.mark_running(third)
    batch.mark_succeeded(third, "ok", TokenUsage(1, 1, 2))
    batch.mark_running(fourth)
    batch.mark_succeeded(fourth, "ok", None)
    return batch.snapshot()


def test_the_export_the_api_and_the_cli_share_one_crew_shape() -> None:
    from crewdash.cli.main import summary

    snap = finished_snapshot()
    detail = batches.BatchDetail.from_snapshot(snap).model_dump(mode="json")
    assert json.loads(export(snap, "json")) == detail
    assert detail["state"] == "partial" and detail["tokens"]["total"] == 5  # 3 of 4 succeeded
    crew = detail["crews"][0]
    assert crew["state"] == "succeeded" and crew["cost_usd"] is not None
    assert crew["spans"][0]["tokens"] == {"prompt": 3, "completion": 0, "total": 3}
    report = summary(snap)
    assert report["crews"] == 4 and report["succeeded"] == 3 and report["failed"] == 1
    cli_crew = report["crews_detail"][0]
    for key in ("run_id", "topic", "state", "error", "inputs", "result"):
        assert cli_crew[key] == crew[key], key
    assert cli_crew["tasks"] == [{"name": "gather", "agent": "Scout", "output": "facts"}]
    assert cli_crew["files"][0].endswith(f"{snap.batch_id}/{crew['run_id']}/report.md")


def test_a_history_line_has_the_same_fields_with_or_without_a_database(tmp_path: Path) -> None:
    """`GET /batches` of a server without history gave 7 of the 14 fields, and the
    database's lines lacked `done` and `sum_crew_s`: both now give all 16."""
    snap = finished_snapshot()
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        store.create_batch(snap, "cli")
        store.finish_batch(snap)
        (row,) = store.list_batches()
    finally:
        store.close()
    stored = batches.BatchSummary.from_row(row).model_dump(mode="json")
    live = batches.BatchSummary.from_snapshot(snap).model_dump(mode="json")
    assert set(stored) == set(live) == set(batches.BatchSummary.model_fields)
    for key in ("batch_id", "state", "done", "blueprint", "kind", "model", "crews", "counts"):
        assert stored[key] == live[key], key
    assert stored["topics"] == live["topics"] == "rust, go, zig…"
    assert stored["sum_crew_s"] == pytest.approx(live["sum_crew_s"])
    assert stored["done"] is True and stored["state"] == "partial"
