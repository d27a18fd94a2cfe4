"""Experiments end to end in one process: a real runtime, the real demo model over HTTP and a
real SQLite history; the checks before anything starts, the grid, the judge, the cache, marks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from crewdash.base.errors import BatchRunningError, UnknownBatchError
from crewdash.demo.profiles import LatencyProfile
from crewdash.engine.plans import RunSettings
from crewdash.experiments.runner import Experiments
from crewdash.experiments.spec import (
    ExperimentError,
    Variant,
    build_spec,
    p95,
    parse_variant,
    parse_verdict,
)
from crewdash.present.charts import timeline_figure
from crewdash.present.experiment_charts import best_variants, cell_heatmap
from crewdash.present.experiment_exports import cell_text, export_grid
from crewdash.providers.response_cache import CacheScope, CachingTransport, cache_scope
from crewdash.runtime import Runtime
from crewdash.schemas.experiments import ExperimentDetail
from crewdash.store.history import Store

FAST = "name=fast,model=demo-fast"
THOROUGH = "name=thorough,model=demo-thorough"
BASE = "name=base,model=crewdash-demo"


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    db = tmp_path_factory.mktemp("experiments") / "history.db"
    runtime = Runtime(RunSettings(), LatencyProfile("fixed", 0.2), Store(f"sqlite:///{db}"))
    yield runtime
    runtime.close()


def start(rt: Runtime, topics: list[str], variants: list[str], **options: object) -> str:
    spec, _ = build_spec(topics, [parse_variant(v) for v in variants], **options)  # type: ignore[arg-type]
    return rt.experiments.start(spec, rt.default_settings.llm)


def requests(rt: Runtime) -> int:
    assert rt.demo is not None
    return rt.demo.stats.requests


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([FAST], "2 to 6 variants; got 1"),
        ([f"name=v{i},model=demo-fast,temperature=0.{i}" for i in range(7)], "got 7"),
        ([FAST, "name=fast,model=demo-thorough"], "two variants are named 'fast'"),
        ([FAST, "name=quick,model=demo-fast"], "'fast' and 'quick' are identical"),
        ([FAST, "name=x,provider=acme"], "variant 'x': unknown provider 'acme'"),
        ([FAST, "name=x,model=gpt-9"], "variant 'x': the demo provider has no model 'gpt-9'"),
        ([FAST, "name=x,blueprint=nope"], "variant 'x': no blueprint named 'nope'"),
        ([FAST, "name=x,temperature=hot"], "temperature must be a number"),
        ([FAST, "name=x,temperature=5"], "temperature must be between 0 and 2"),
        ([FAST, "name=x,colour=red"], "unknown variant key 'colour'"),
        ([FAST, "name=x,model"], "is not key=value"),
    ],
)
def test_bad_variants_get_one_message_and_start_nothing(
    rt: Runtime, variants: list[str], message: str
) -> None:
    before = rt.runner.batch_ids()
    with pytest.raises(ExperimentError, match=message.replace("(", r"\(")):
        start(rt, ["anything"], variants)
    assert rt.runner.batch_ids() == before


def test_a_provider_without_its_key_is_refused_before_anything_starts(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ExperimentError, match="variant 'x': anthropic needs an API key"):
        start(rt, ["anything"], [FAST, "name=x,provider=anthropic"])


def test_judge_verdicts_are_read_or_refused() -> None:
    assert parse_verdict("SCORE: 8\nREASON: thorough") == (8, "thorough", None)
    assert parse_verdict("**SCORE:** 10") == (10, "(no reason given)", None)
    score, _, error = parse_verdict("I cannot judge this answer.")
    assert score is None and error and "no score" in error and "cannot judge" in error
    assert parse_verdict("SCORE: 11")[2] == "the judge's score 11 is not between 1 and 10"
    assert p95([1.0, 2.0, 3.0]) == 3.0 and p95([float(i) for i in range(1, 101)]) == 95.0


def test_a_judged_grid_shows_each_models_speed_and_style_and_its_exports_match(
    rt: Runtime,
) -> None:
    topics = ["grid batteries", "grid heat pumps", "grid tidal power"]
    experiment_id = start(rt, topics, [FAST, THOROUGH, BASE], rubric="Specific and complete")
    grid = rt.experiments.wait(experiment_id, 60)
    assert grid.done and len(grid.cells) == 9
    assert {c.state for c in grid.cells} == {"succeeded"}
    assert [c.variant for c in grid.cells[:3]] == ["fast", "thorough", "base"]
    assert all(c.judge == "scored" and 1 <= (c.score or 0) <= 10 and c.reason for c in grid.cells)
    fast, thorough, base = grid.variants
    assert fast.success_rate == thorough.success_rate == 1.0
    # the demo models differ for real: terse and quick against long and slow
    assert (fast.median_latency_s or 0) < (thorough.median_latency_s or 0)
    assert fast.tokens < base.tokens < thorough.tokens
    assert (fast.mean_score or 0) < (thorough.mean_score or 0)
    assert (fast.cost_usd or 0) < (thorough.cost_usd or 0) and base.cost_usd == 0.0
    # all nine crews ran at once: the wall time is far under the sum of the cells
    assert grid.wall_s < 0.6 * sum(c.latency_s or 0 for c in grid.cells)

    rows = list(csv.reader(io.StringIO(export_grid(grid, "csv"))))
    cells = [r for r in rows if r[0] == "cell"]
    assert [(r[1], r[2], r[3], int(r[5]), int(r[7])) for r in cells] == [
        (c.topic, c.variant, c.state, c.tokens, c.score) for c in grid.cells
    ]
    summaries = {r[1]: r for r in rows if r[0] == "summary"}
    assert summaries["thorough"][3] == f"{thorough.median_latency_s:.3f}"
    assert summaries["fast"][7] == f"{fast.mean_score:.2f}"
    markdown = export_grid(grid, "md")
    assert all(cell_text(c) in markdown for c in grid.cells)

    # the history holds it all: another process's view of the experiment is the same grid
    assert rt.store is not None
    again = Experiments(rt.runner, rt.store, rt.default_settings.llm)
    assert ExperimentDetail.from_grid(again.grid(experiment_id)) == ExperimentDetail.from_grid(grid)
    assert rt.store.load(experiment_id) is not None  # an ordinary batch of the history too


def test_the_grid_is_coloured_by_score_and_latency_and_names_the_best_variants(
    rt: Runtime,
) -> None:
    """Issue 20 item 6: the grid was plain text; each cell now has a colour for its score and
    its latency, and the best variant is named for each measure."""
    topics = ["colour <b>one</b>", "colour two"]
    experiment_id = start(rt, topics, [FAST, THOROUGH], rubric="Specific and complete")
    grid = rt.experiments.wait(experiment_id, 60)
    assert grid.done
    score = cell_heatmap(grid, "score").data[0]
    latency = cell_heatmap(grid, "latency").data[0]
    for heat, measure in ((score, "score"), (latency, "latency_s")):
        assert heat.type == "heatmap" and heat.colorscale and heat.texttemplate == "%{text}"
        assert heat.x == ("fast", "thorough") and heat.y == ("#1", "#2")
        expected = [[getattr(grid.cell(t, v), measure) for v in range(2)] for t in range(2)]
        assert [list(row) for row in heat.z] == expected
        assert all(text for row in heat.text for text in row)
    assert (score.zmin, score.zmax, score.reversescale) == (1, 10, False)  # green: high score
    assert latency.reversescale is True  # green: fast
    assert latency.zmin == min(c.latency_s or 0 for c in grid.cells)
    assert score.customdata[0][0] == "colour &lt;b&gt;one&lt;/b&gt;"  # typed text, not markup
    best = best_variants(grid)
    fast, thorough = grid.variants
    assert best["latency"] == f"fast ({fast.median_latency_s:.2f} s)"
    assert best["score"] == f"thorough ({thorough.mean_score:.1f})"
    assert best["cost"].startswith("fast (") and best["success"].startswith("fast (100%")


@pytest.mark.parametrize(
    ("rubric", "why"),
    [("Be fair [demo:fail-400]", "the judge failed"), ("Be fair [demo:no-score]", "no score")],
)
def test_a_judge_that_fails_or_gives_no_score_marks_its_cells_alone(
    rt: Runtime, rubric: str, why: str
) -> None:
    experiment_id = start(rt, [f"judged {why}"], [FAST, THOROUGH], rubric=rubric)
    grid = rt.experiments.wait(experiment_id, 60)
    assert grid.done and {c.state for c in grid.cells} == {"succeeded"}
    assert all(c.answer for c in grid.cells)  # the answers are there, the grid is whole
    assert all(c.judge == "failed" and c.score is None for c in grid.cells)
    assert all(why in (c.judge_error or "") for c in grid.cells)
    assert all(v.mean_score is None and v.scored == 0 for v in grid.variants)


def test_a_rerun_with_the_cache_calls_the_model_only_for_what_changed(rt: Runtime) -> None:
    topics = ["cache solar", "cache wind"]
    first = start(rt, topics, [FAST, THOROUGH], rubric="Clear", cache=True)
    assert rt.experiments.wait(first, 60).done
    before = requests(rt)

    changed = start(
        rt, topics, [FAST, "name=thorough,model=demo-thorough,temperature=0.3"], rubric="Clear",
        cache=True,
    )  # fmt: skip
    grid = rt.experiments.wait(changed, 60)
    fast, thorough = grid.variants
    # the changed variant's two crews reached the model, nothing else: their judges' requests
    # were identical to the first run's (the demo model ignores temperature), so cached too
    assert requests(rt) - before == 2
    assert fast.cache_hits == 2 and thorough.cache_hits == 0
    assert (fast.saved_usd or 0) > 0 and grid.saved_usd == fast.saved_usd
    assert [c.score for c in grid.cells if c.variant == "fast"] == [
        c.score for c in rt.experiments.grid(first).cells if c.variant == "fast"
    ]
    cached = rt.runner.snapshot(changed).crews[0].spans
    assert [s.kind for s in cached].count("cache") == 1
    bars = {t.name: t for t in timeline_figure(rt.runner.snapshot(changed)).data}
    assert len(bars["cached answer"].y) == 2  # the fast crews' calls, marked in the timeline
    assert rt.runner.snapshot(changed).crews[0].tokens.total > 0  # as answered, not spent

    before = requests(rt)
    again = rt.experiments.rerun(first, rt.default_settings.llm)
    assert rt.experiments.wait(again, 60).cache_hits == 4
    assert requests(rt) == before  # no model call at all
    one = rt.experiments.rerun(first, rt.default_settings.llm, variant="thorough")
    regrid = rt.experiments.wait(one, 60)
    assert [v.name for v in regrid.variants] == ["thorough"] and regrid.spec.rerun_of == first
    assert requests(rt) == before


def test_a_cached_streamed_call_replays_as_a_valid_event_stream(rt: Runtime) -> None:
    assert rt.demo is not None
    transport = CachingTransport(httpx.HTTPTransport())
    http = httpx.Client(transport=transport)
    client = openai.OpenAI(api_key="x", base_url=rt.demo.base_url, http_client=http)

    def ask() -> str:
        stream = client.chat.completions.create(
            model="demo-fast",
            messages=[{"role": "user", "content": "Topic: streamed cache"}],
            stream=True,
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    hits: list[str] = []
    token = cache_scope.set(CacheScope(on_hit=lambda hit: hits.append(hit.content_type)))
    try:
        first = ask()
        before = requests(rt)
        assert ask() == first and first.startswith("- ")
    finally:
        cache_scope.reset(token)
        client.close()
    assert requests(rt) == before and hits == ["text/event-stream; charset=utf-8"]


def test_marks_and_notes_are_stored_with_the_cell(rt: Runtime) -> None:
    experiment_id = start(rt, ["marked topic"], [FAST, BASE])
    rt.experiments.wait(experiment_id, 60)
    rt.experiments.mark(experiment_id, 1, "bad", "  misses the cost angle ")
    assert rt.store is not None
    fresh = Experiments(rt.runner, rt.store, rt.default_settings.llm).grid(experiment_id)
    assert (fresh.cells[1].mark, fresh.cells[1].note) == ("bad", "misses the cost angle")
    assert fresh.cells[0].mark is None
    assert "bad" in export_grid(fresh, "csv") and "bad" in cell_text(fresh.cells[1])
    with pytest.raises(ExperimentError, match="no cell 5"):
        rt.experiments.mark(experiment_id, 5, "good", None)
    with pytest.raises(ExperimentError, match="'good', 'bad' or empty"):
        rt.experiments.mark(experiment_id, 0, "great", None)


def test_variants_round_trip_through_the_stored_spec() -> None:
    variant = Variant("v", "demo", "demo-fast", 0.5, "research", {"audience": "CFOs"})
    spec, _ = build_spec(["a"], [variant, Variant("w")], rubric=" ", cache=True)
    assert spec.rubric is None  # a blank rubric: no judge
    assert type(spec).from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_the_demo_models_are_listed(rt: Runtime) -> None:
    assert rt.demo is not None
    listed = httpx.get(f"{rt.demo.base_url}/models").json()["data"]
    assert {m["id"] for m in listed} >= {"crewdash-demo", "demo-fast", "demo-thorough"}


def test_the_judge_blueprint_is_a_crew_like_any_other() -> None:
    path = Path(__file__).resolve().parent.parent / "crews" / "judge" / "config" / "tasks.yaml"
    assert "{rubric}" in path.read_text() and "{answer}" in path.read_text()


def test_an_ordinary_batch_opts_in_to_the_cache_per_run(rt: Runtime, openai_env: str) -> None:
    topic = f"plain cached topic ({openai_env})"  # with and without OPENAI_API_KEY set
    cached = RunSettings(response_cache=True)
    first = rt.runner.submit("research", [topic], cached)
    assert rt.runner.batch(first).wait(60)
    before = requests(rt)
    again = rt.runner.submit("research", [topic], cached)
    assert rt.runner.batch(again).wait(60)
    assert requests(rt) == before
    assert rt.runner.snapshot(again).crews[0].result == rt.runner.snapshot(first).crews[0].result
    uncached = rt.runner.submit("research", [topic], RunSettings())
    assert rt.runner.batch(uncached).wait(60)
    assert requests(rt) == before + 1  # without the opt-in the model answers again


def test_the_cache_key_keeps_a_local_servers_port_and_ignores_the_bodys_key_order() -> None:
    from crewdash.providers.response_cache import endpoint, request_key

    a = endpoint(httpx.URL("http://127.0.0.1:40001/v1/chat/completions"))
    b = endpoint(httpx.URL("http://127.0.0.1:52002/v1/chat/completions"))
    assert a != b  # two local servers are two models (issue 20, item 15)
    remote = endpoint(httpx.URL("https://api.openai.com/v1/chat/completions"))
    assert remote == "https://api.openai.com:443/v1/chat/completions" != a
    assert request_key(a, b'{"model": "m", "n": 1}') == request_key(a, b'{"n":1,"model":"m"}')
    assert request_key(a, b'{"model": "m"}') != request_key(a, b'{"model": "n"}')


def test_an_experiment_is_deleted_once_judged_with_its_spec_and_notes(rt: Runtime) -> None:
    # the rubric reaches the judge only: it holds each verdict 5 s after the crews have ended
    experiment_id = start(rt, ["deleted topic"], [FAST, BASE], rubric="Plain [demo:wait=5]")
    assert rt.runner.batch(experiment_id).wait(60)
    assert rt.experiments.judging(experiment_id)
    with pytest.raises(BatchRunningError, match="still being judged"):
        rt.delete_batch(experiment_id)
    assert rt.experiments.wait(experiment_id, 60).done
    rt.experiments.mark(experiment_id, 0, "good", "kept until deleted")
    assert rt.delete_batch(experiment_id) == 2
    assert rt.store is not None and rt.store.load(experiment_id) is None
    for read in (rt.experiments.grid, rt.experiments.spec):
        with pytest.raises(UnknownBatchError):
            read(experiment_id)
    assert experiment_id not in [i for i, _, _ in rt.experiments.list()]
    again = Experiments(rt.runner, rt.store, rt.default_settings.llm)
    with pytest.raises(UnknownBatchError):
        again.grid(experiment_id)
