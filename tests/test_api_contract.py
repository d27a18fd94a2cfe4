"""The API's contract holds at its edges (issue 20, items 9, 19, 20): one batch per
Idempotency-Key, one rule for stored text on both databases, strict numbers, a schema that says
the server's limits, OPTIONS and 405 naming every method, plain resume errors, a token with a
line end, downloads that can be downloaded."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from crewdash.base.run_context import crew_file, list_files
from crewdash.model.batch import Batch, CrewState, TokenUsage
from crewdash.store.history import Store
from tests.api_server import api_server
from tests.test_api import in_process_api, wait_done
from tests.test_store import postgres_url  # noqa: F401 - a schema of its own in PostgreSQL

VARIANTS = [{"name": "fast", "model": "demo-fast"}, {"name": "base"}]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("contract")
    with (
        api_server(workdir, CREWDASH_DEMO_LATENCY="0.3") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client
    assert "Traceback" not in (workdir / "api.log").read_text()


# --- item 9: one submission, one batch ---------------------------------------------------------


def test_a_repeated_idempotency_key_answers_the_same_batch(api: httpx.Client) -> None:
    before = len(api.get("/batches").json())
    body = {"topics": ["once only", "and this"]}
    key = {"Idempotency-Key": "retry-1f2e3d"}
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=60) as own:
            answers.append(own.post("/batches", json=body, headers=key))

    threads = [threading.Thread(target=send) for _ in range(4)]  # at once, as a double click
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    answers.append(api.post("/batches", json=body, headers=key))  # a later retry
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    assert len({a.json()["batch_id"] for a in answers}) == 1
    assert len(api.get("/batches").json()) == before + 1
    other = api.post("/batches", json={"topics": ["something else"]}, headers=key)
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    fresh = api.post("/batches", json=body, headers={"Idempotency-Key": "retry-2"})
    assert fresh.status_code == 202 and fresh.json()["batch_id"] != answers[0].json()["batch_id"]
    bad = api.post("/batches", json=body, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 422
    wait_done(api, fresh.json()["batch_id"])


def test_a_repeated_idempotency_key_answers_the_same_experiment(api: httpx.Client) -> None:
    body = {"topics": ["grid once"], "variants": VARIANTS}
    key = {"Idempotency-Key": "exp-7a"}
    first = api.post("/experiments", json=body, headers=key)
    again = api.post("/experiments", json=body, headers=key)
    assert first.status_code == again.status_code == 202, again.text
    assert first.json()["experiment_id"] == again.json()["experiment_id"]
    ids = [e["experiment_id"] for e in api.get("/experiments").json()]
    assert ids.count(first.json()["experiment_id"]) == 1


# --- item 19: one rule for stored text, on both databases ----------------------------------------


def check_stored_text(client: httpx.Client) -> None:
    body = {"topics": ["nul check"], "variants": VARIANTS}
    started = client.post("/experiments", json=body)
    assert started.status_code == 202, started.text
    experiment_id = started.json()["experiment_id"]
    deadline = time.time() + 60
    while not client.get(f"/experiments/{experiment_id}").json()["done"]:
        assert time.time() < deadline
        time.sleep(0.1)
    mark = f"/experiments/{experiment_id}/cells/0/mark"
    refused = client.post(mark, json={"mark": "good", "note": "a\x00b"})
    assert refused.status_code == 422, refused.text
    assert "note" in refused.json()["detail"] and "NUL" in refused.json()["detail"]
    assert client.post(mark, json={"mark": "good", "note": "fine"}).status_code == 200
    nul = "x\x00y"
    for bad in (
        {"topics": ["t"], "variants": VARIANTS, "rubric": nul},
        {"topics": ["t"], "variants": [{"name": "a", "model": nul}, {"name": "b"}]},
        {"topics": ["t"], "variants": [{"name": "a", "inputs": {"topic": nul}}, {"name": "b"}]},
        {"topics": ["t"], "variants": [{"name": nul}, {"name": "b"}]},
    ):
        answer = client.post("/experiments", json=bad)
        assert answer.status_code == 422 and "NUL" in answer.json()["detail"], (bad, answer.text)
    answer = client.post("/batches", json={"topics": ["t"], "inputs": {"topic": nul}})
    assert answer.status_code == 422 and "NUL" in answer.json()["detail"], answer.text
    surrogate = b'{"topics": ["lone \\ud800 surrogate"]}'
    for path in ("/batches", "/research"):
        answer = client.post(path, content=surrogate, headers={"content-type": "application/json"})
        assert answer.status_code == 422 and "surrogate" in answer.json()["detail"], answer.text
    note = b'{"mark": "bad", "note": "\\udfff"}'
    answer = client.post(mark, content=note, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    # a topic's control characters are cleaned (documented): stored safely on both
    cleaned = client.post("/batches", json={"topics": ["nul\x00topic"]})
    assert cleaned.status_code == 202, cleaned.text
    detail = wait_done(client, cleaned.json()["batch_id"])
    assert detail["crews"][0]["topic"] == "nul topic"


def test_stored_text_follows_one_rule_on_sqlite(api: httpx.Client) -> None:
    check_stored_text(api)


def test_stored_text_follows_one_rule_on_postgresql(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    database = request.getfixturevalue("postgres_url")
    with (
        api_server(tmp_path, DATABASE_URL=database, CREWDASH_DEMO_LATENCY="0.1") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert client.get("/healthz").json()["database"] == "postgresql"
        check_stored_text(client)
    assert "Traceback" not in (tmp_path / "api.log").read_text()


# --- item 20: the smaller ones ---------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_concurrency", True),
        ("budget_tokens", True),
        ("budget_usd", True),
        ("crew_timeout_s", True),
        ("max_concurrency", "4"),
        ("cache", 1),
        ("stream", "yes"),
    ],
)
def test_booleans_and_strings_are_not_numbers(api: httpx.Client, field: str, value: Any) -> None:
    answer = api.post("/batches", json={"topics": ["strict"], field: value})
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"]


def test_experiment_numbers_are_strict_too(api: httpx.Client) -> None:
    for extra in ({"max_concurrency": True}, {"crew_timeout_s": False}, {"cache": "true"}):
        answer = api.post("/experiments", json={"topics": ["t"], "variants": VARIANTS, **extra})
        assert answer.status_code == 422, (extra, answer.text)
    hot = [{"name": "a", "temperature": True}, {"name": "b"}]
    assert api.post("/experiments", json={"topics": ["t"], "variants": hot}).status_code == 422


def test_the_schema_says_the_servers_limits(api: httpx.Client) -> None:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    experiment = schemas["ExperimentRequest"]["properties"]
    assert (experiment["variants"]["minItems"], experiment["variants"]["maxItems"]) == (2, 6)
    assert experiment["topics"]["minItems"] == 1 and "pattern" in experiment["topics"]["items"]
    topics, _none = schemas["BatchRequest"]["properties"]["topics"]["anyOf"]  # topics or rows
    assert topics["minItems"] == 1
    rows, _none = schemas["BatchRequest"]["properties"]["rows"]["anyOf"]
    assert rows["maxItems"] == 10_000
    variant = schemas["VariantChoice"]["properties"]
    (inputs,) = variant["inputs"]["patternProperties"].values()
    assert inputs["maxLength"] == 2000
    assert set(variant["provider"]["enum"]) >= {"demo", "openai", "openai_compatible"}
    temperature = variant["temperature"]["anyOf"][0]
    assert (temperature["minimum"], temperature["maximum"]) == (0, 2)
    assert schemas["CellMark"]["properties"]["note"]["anyOf"][0]["pattern"] == "^[^\\u0000]*$"
    # and the server agrees: what the schema refuses is refused
    seven = [{"name": f"v{i}", "temperature": i / 10} for i in range(7)]
    for variants in (seven, VARIANTS[:1]):
        answer = api.post("/experiments", json={"topics": ["t"], "variants": variants})
        assert answer.status_code == 422 and "variants" in answer.json()["detail"]
    for topics in ([], [""], ["  "]):
        answer = api.post("/experiments", json={"topics": topics, "variants": VARIANTS})
        assert answer.status_code in (400, 422), answer.text


def test_variant_inputs_are_capped_like_batch_inputs(api: httpx.Client) -> None:
    long = "x" * 2001
    variants = [{"name": "a", "inputs": {"topic": long}}, {"name": "b"}]
    answer = api.post("/experiments", json={"topics": ["t"], "variants": variants})
    assert answer.status_code == 422 and "2000" in answer.json()["detail"], answer.text
    batch = api.post("/batches", json={"topics": ["t"], "inputs": {"topic": long}})
    assert batch.status_code == 422 and "2000" in batch.json()["detail"]


def test_options_and_405_name_every_method_of_a_path(api: httpx.Client) -> None:
    options = api.options("/batches")
    assert options.status_code == 204
    assert {m.strip() for m in options.headers["allow"].split(",")} == {
        "GET",
        "HEAD",
        "OPTIONS",
        "POST",
    }
    put = api.put("/batches", json={})
    assert put.status_code == 405
    assert {"GET", "POST"} <= {m.strip() for m in put.headers["allow"].split(",")}
    one = api.options("/batches/0123456789ab/cancel")
    assert one.status_code == 204 and "POST" in one.headers["allow"]
    assert api.options("/no-such-path").status_code == 404


def test_resume_names_a_wrong_crew_plainly(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    batch = Batch(
        "0123456789ab", "timing", ["kept", "stopped"], model_label="demo", max_concurrency=2
    )
    store.create_batch(batch.snapshot())
    done, stopped = batch.run_ids
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
    batch.mark_succeeded(done, "kept done", TokenUsage(1, 1, 2))
    batch.mark_failed(stopped, "server stopped", CrewState.INTERRUPTED)
    for run_id in batch.run_ids:
        store.save_crew(batch.batch_id, batch.crew(run_id))
    store.finish_batch(batch.snapshot())
    try:
        with in_process_api(store) as url, httpx.Client(base_url=url, timeout=60) as client:
            path = f"/batches/{batch.batch_id}/resume"
            answer = client.post(path, json={"from_start": ["nope"]})
            assert answer.status_code == 422, answer.text
            assert "from_start: 'nope' is not a crew id" in answer.json()["detail"]
            answer = client.post(path, json={"from_start": [done]})
            assert answer.status_code == 400, answer.text
            assert f"crew {done} is succeeded, not interrupted" in answer.json()["detail"]
            other = "ba0ba0ba0ba0-3"
            answer = client.post(path, json={"from_start": [other]})
            assert answer.status_code == 400
            assert f"has no crew {other!r}" in answer.json()["detail"]
            answer = client.post(path, json={"run_ids": [f"{batch.batch_id}-7"]})
            assert answer.status_code == 400 and "has no crew" in answer.json()["detail"]
    finally:
        store.close()


def test_an_api_token_with_a_line_end_is_stripped(tmp_path: Path) -> None:
    with (
        api_server(tmp_path, CREWDASH_API_TOKEN="tok-with-newline\n") as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        ok = client.get("/batches", headers={"authorization": "Bearer tok-with-newline"})
        assert ok.status_code == 200, ok.text
        assert client.get("/batches").status_code == 401


def test_only_files_that_can_be_downloaded_are_listed(tmp_path: Path) -> None:
    folder = tmp_path / "crew"
    (folder / "sub").mkdir(parents=True)
    (folder / "report.md").write_text("# report")
    (folder / "sub" / "notes.txt").write_text("notes")
    outside = tmp_path / "secret.txt"
    outside.write_text("not the crew's")
    os.symlink(outside, folder / "leak.txt")
    os.symlink(tmp_path / "missing", folder / "dangling.txt")
    os.symlink(tmp_path, folder / "sub" / "up")  # a folder link: not walked into
    os.symlink(folder / "report.md", folder / "alias.md")  # inside: it can be downloaded
    listed = list_files(folder)
    assert listed == ("alias.md", "report.md", "sub/notes.txt")
    for name in listed:
        assert crew_file(folder, name).is_file()


def test_idempotency_keys_survive_a_burst_of_threads() -> None:
    """The core's promise without HTTP: 16 threads, one key, `start` runs once."""
    from crewdash.engine.idempotency import IdempotencyKeys

    keys = IdempotencyKeys()
    calls: list[int] = []
    gate = threading.Barrier(16)

    def start() -> str:
        calls.append(1)
        time.sleep(0.05)  # the others arrive while this one starts
        return "batch-1"

    results: list[str] = []

    def one() -> None:
        gate.wait(10)
        results.append(keys.once("k", "same", start))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["batch-1"] * 16 and len(calls) == 1
