"""A batch's budget: the estimate before Run (per task, from the inputs, learned from finished
crews), the stop at the cap (at a crew's start and at its next model call: the rest
`budget_exceeded`, nothing lost from the tasks that finished), and bad budgets refused with a
message, a budget that admits no crew before anything starts."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from crewdash.base.errors import SettingsError
from crewdash.blueprints.catalog import builtin_blueprint
from crewdash.blueprints.projects.blueprint import load_project
from crewdash.cli.main import main
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.budget import (
    Budget,
    BudgetTooSmall,
    PastCrew,
    batch_spend,
    budget_status,
    estimate_batch,
)
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import CrewState, TokenUsage
from crewdash.model.pricing import price_for
from crewdash.providers.llm import LLMSettings
from crewdash.store.history import Store
from tests.api_server import api_server
from tests.budget_projects import six_task_project
from tests.conftest import finish

PROJECTS = Path(__file__).resolve().parent / "projects"
LONG_TOPIC = " ".join(["solid-state lithium cells"] * 20)  # the demo echoes it in its answers


def test_the_estimate_counts_calls_tokens_and_cost_from_the_blueprint_and_prices() -> None:
    bp = builtin_blueprint("research")
    est = estimate_batch(bp, ["EV batteries", "Solid-state cells"], "gpt-4o-mini", max_tokens=200)
    assert est.crews == 2 and est.calls == 2 * len(bp.tasks)
    assert est.per_crew.completion == 200 * len(bp.tasks) and est.per_crew.prompt > 50
    assert est.cost_usd == pytest.approx(
        2 * (est.per_crew.prompt * 0.15 + est.per_crew.completion * 0.60) / 1e6
    )
    assert estimate_batch(bp, ["x"], "no-such-model").cost_usd is None


@pytest.mark.parametrize(
    "kwargs", [{"usd": 0}, {"usd": -1.0}, {"tokens": 0}, {}, {"usd": 1, "tokens": 5}]
)
def test_a_budget_of_zero_or_below_or_of_both_kinds_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(SettingsError):
        Budget(**kwargs)  # type: ignore[arg-type]


def test_a_usd_budget_for_a_model_without_a_price_starts_nothing(runner: Runner) -> None:
    settings = RunSettings(llm=LLMSettings(model="mystery-model"), budget=Budget(usd=1.0))
    with pytest.raises(SettingsError, match="no price for model 'mystery-model'"):
        runner.submit("research", ["a"], settings)
    assert runner.batch_ids() == []


def test_a_batch_stops_at_its_cap_and_keeps_what_finished(
    demo_server: DemoLLMServer, tmp_path: Path
) -> None:
    """One crew at a time, a budget of 3.5 crews' tokens: three finish (saved, results kept),
    the fourth would pass the cap, so it and the rest never start and end budget_exceeded."""
    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    runner = Runner(max_concurrency=1, demo_base_url=lambda: demo_server.base_url, store=store)
    try:
        probe = finish(runner, runner.submit("research", ["probe topic"], RunSettings()))
        per_crew = probe.crews[0].tokens.total
        assert per_crew > 0
        budget = Budget(tokens=int(per_crew * 3.5))
        topics = [f"budget topic {i}" for i in range(6)]
        # max_tokens keeps the first crew's estimate near a real one (the demo answers ~50)
        settings = RunSettings(llm=LLMSettings(max_tokens=60), max_concurrency=1, budget=budget)
        snap = finish(runner, runner.submit("research", topics, settings))
    finally:
        runner.close()
    states = [c.state for c in snap.crews]
    assert states[:3] == [CrewState.SUCCEEDED] * 3
    assert states[3:] == [CrewState.BUDGET_EXCEEDED] * 3
    assert all(c.result for c in snap.crews[:3])
    assert all("budget exceeded" in (c.error or "") for c in snap.crews[3:])
    status = budget_status(budget, snap)
    assert status.spent.total <= budget.tokens  # type: ignore[operator]
    saved = store.load(snap.batch_id)
    assert saved is not None
    assert [c.state for c in saved.crews] == states
    assert saved.budget_tokens == budget.tokens and saved.budget_usd is None
    assert [c.result for c in saved.crews[:3]] == [c.result for c in snap.crews[:3]]


def test_the_api_takes_a_budget_and_refuses_bad_ones(tmp_path: Path) -> None:
    with (
        api_server(tmp_path, CREWDASH_DEMO_LATENCY="0.1") as url,
        httpx.Client(base_url=url, timeout=60) as api,
    ):
        for bad, status, words in (
            ({"budget_usd": 0}, 422, "greater than 0"),
            ({"budget_tokens": -5}, 422, "greater than 0"),
            ({"budget_usd": 1, "budget_tokens": 5}, 400, "either in USD or in tokens"),
        ):
            answer = api.post("/batches", json={"topics": ["a"], **bad})
            assert answer.status_code == status, answer.text
            assert words in answer.json()["detail"]
        # a budget that admits no crew at all is refused before anything starts, with the estimate
        refused = api.post("/batches", json={"topics": ["a", "b"], "budget_tokens": 1})
        assert refused.status_code == 400, refused.text
        detail = refused.json()["detail"]
        assert "the budget of 1 tokens admits no crew" in detail
        assert "one crew is estimated at" in detail and "task from the blueprint" in detail
        assert api.get("/batches").json() == []
        started = api.post("/batches", json={"topics": ["a", "b"], "budget_tokens": 100_000})
        assert started.status_code == 202
        batch_id = started.json()["batch_id"]
        deadline = time.time() + 30
        while not (body := api.get(f"/batches/{batch_id}").json())["done"]:
            assert time.time() < deadline
            time.sleep(0.1)
        assert [c["state"] for c in body["crews"]] == ["succeeded"] * 2
        assert body["budget_tokens"] == 100_000 and body["budget_usd"] is None


def test_the_estimate_is_per_task_and_grows_with_the_inputs(tmp_path: Path) -> None:
    """A six-task project crew is six calls, each carrying its texts with the inputs filled in
    and the earlier answer; a longer topic makes every call dearer (the old estimate was one
    900-token call whatever the project)."""
    six = load_project(six_task_project(tmp_path))
    short = estimate_batch(six, ["EV"], "gpt-4o-mini", max_tokens=100)
    long = estimate_batch(six, [LONG_TOPIC], "gpt-4o-mini", max_tokens=100)
    assert short.calls_per_crew == 6 and short.steps_known
    assert short.per_crew.completion == 6 * 100
    assert short.per_crew.prompt > 6 * 100  # texts, framing, and five earlier answers carried
    # the topic fills three placeholders per task: six tasks, ~125 tokens each more per call
    assert long.per_crew.prompt - short.per_crew.prompt > 6 * 3 * (len(LONG_TOPIC) - 2) / 4
    assert "6 tasks from the blueprint's texts and the inputs" in short.basis
    two = estimate_batch(six, ["EV", LONG_TOPIC], "gpt-4o-mini", max_tokens=100)
    assert two.crews == 2 and two.tokens == pytest.approx(short.tokens + long.tokens, abs=2)


@pytest.mark.parametrize(
    ("name", "calls", "known", "words"),
    [
        ("analyst_crew", 4, True, "3 tasks"),  # the counter's tool: a call for it, then the answer
        ("brief_json", 3, True, "2 tasks"),  # the scout's custom tool
        ("board_crew", 6, True, "2 tasks"),  # hierarchical: the manager delegates and reviews
        ("route_flow", 1, False, "routed declarative Flow: its largest of 2 steps"),
        ("triage_flow", 1, False, "Python Flow: one run of its largest of 1 inner crew"),
    ],
)
def test_every_project_shape_is_estimated_as_far_as_it_allows(
    name: str, calls: int, known: bool, words: str
) -> None:
    blueprint = load_project(PROJECTS / name)
    est = estimate_batch(blueprint, ["EV batteries"], "gpt-4o-mini")
    assert est.calls_per_crew == calls and est.steps_known is known
    assert words in est.basis
    if not known:  # a Flow decides its steps as it runs: a floor, and the runtime stop keeps it
        assert "decided as it runs" in est.basis and est.describe().startswith("at least")


def test_the_estimate_learns_from_past_crews_of_the_same_blueprint() -> None:
    bp = builtin_blueprint("research")
    fresh = estimate_batch(bp, ["alpha"] * 8, "gpt-4o-mini")
    assert fresh.learned_from == 0
    # earlier crews spent a third of the blueprint's estimate for their inputs: so will these
    seen = estimate_batch(bp, ["EV"], "gpt-4o-mini")
    past = [PastCrew({"topic": "EV"}, TokenUsage(p, c, p + c)) for p, c in [(90, 30)] * 3]
    learned = estimate_batch(bp, ["alpha"] * 8, "gpt-4o-mini", past=past)
    assert learned.learned_from == 3
    assert "learned from 3 finished crews of earlier batches" in learned.basis
    assert learned.per_crew.prompt == pytest.approx(
        fresh.per_crew.prompt * 90 / seen.per_crew.prompt, rel=0.05
    )
    assert learned.per_crew.completion == pytest.approx(
        fresh.per_crew.completion * 30 / seen.per_crew.completion, rel=0.05
    )


POSTGRES_URL = os.environ.get(
    "CREWDASH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty history on each database (PostgreSQL: a schema of its own)."""
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'history.db'}")
        return
    import uuid

    from sqlalchemy import create_engine, text

    schema = f"crewdash_budget_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    store = Store(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    try:
        yield store
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_400_tokens_for_8_crews_admits_crews_and_learns_from_the_history(
    demo_server: DemoLLMServer, history: Store
) -> None:
    """The issue's batch: 400 tokens for 8 crews of ~147 tokens ended all 8 budget_exceeded
    with 0 spent (a fixed 421-token estimate). On a fresh store that budget admits no crew at the
    estimate: refused before anything starts, the estimate in the message; a cap that admits one
    starts the first crew. Once the history holds finished crews of the blueprint and model, the
    estimate is theirs, and the same 400 tokens admit crews and are spent."""
    runner = Runner(max_concurrency=8, demo_base_url=lambda: demo_server.base_url, store=history)
    bp, topics = builtin_blueprint("research"), [f"budget topic {i}" for i in range(8)]
    settings = RunSettings(max_concurrency=8, budget=Budget(tokens=400))
    try:
        fresh = runner.estimate(bp, topics, settings)
        assert fresh.learned_from == 0 and fresh.per_crew.total > 400
        with pytest.raises(BudgetTooSmall, match=f"estimated at {fresh.per_crew.total:,} tokens"):
            runner.submit(bp, topics, settings)
        assert runner.batch_ids() == []
        admits_one = replace(settings, budget=Budget(tokens=fresh.per_crew.total + 50))
        first = finish(runner, runner.submit(bp, topics, admits_one))
        assert first.count(CrewState.SUCCEEDED) >= 1 and batch_spend(first).total > 0
        assert batch_spend(first).total <= fresh.per_crew.total + 50
        learned = runner.estimate(bp, topics, settings)
        used = [c.tokens.total for c in first.crews if c.state is CrewState.SUCCEEDED]
        assert learned.learned_from == len(used)
        assert learned.per_crew.total == pytest.approx(sum(used) / len(used), rel=0.1)
        assert learned.per_crew.total < fresh.per_crew.total / 2
        assert history.past_usage("research", "other-model") == []
        second = finish(runner, runner.submit(bp, topics, settings))
    finally:
        runner.close()
    assert second.count(CrewState.SUCCEEDED) >= 400 // learned.per_crew.total >= 2
    assert second.count(CrewState.SUCCEEDED) > first.count(CrewState.SUCCEEDED)
    assert 0 < batch_spend(second).total <= 400
    over = [c for c in second.crews if c.state is CrewState.BUDGET_EXCEEDED]
    assert over and all("budget exceeded" in (c.error or "") for c in over)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole answers"])
def test_a_project_crew_stops_at_its_next_model_call_at_the_cap(
    demo_server: DemoLLMServer, tmp_path: Path, stream: bool
) -> None:
    """Six tasks on a long topic: the estimate admits the crew, the demo's answers (which echo
    the topic) cost more; at the call that would pass the cap the crew stops: no request sent,
    its finished tasks kept and saved, `budget_exceeded`, and the cap passed by at most the
    calls in flight (one here) beyond the batch's average call."""
    six = load_project(six_task_project(tmp_path))
    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    runner = Runner(max_concurrency=4, demo_base_url=lambda: demo_server.base_url, store=store)
    settings = RunSettings(llm=LLMSettings(stream=stream), budget=Budget(tokens=9_000))
    try:
        est = runner.estimate(six, [LONG_TOPIC], settings)
        assert est.per_crew.total <= 9_000  # admitted at the estimate
        snap = finish(runner, runner.submit(six, [LONG_TOPIC], settings), timeout=120)
    finally:
        runner.close()
    crew = snap.crews[0]
    assert crew.state is CrewState.BUDGET_EXCEEDED, crew.error
    assert "stopped before its next model call" in (crew.error or "")
    assert 1 <= len(crew.tasks) < 6 and all(t.output for t in crew.tasks)
    assert f"({len(crew.tasks)} of 6 task(s) finished and kept)" in (crew.error or "")
    calls = [s for s in crew.spans if s.kind == "llm"]
    assert all(s.finished_at is not None and not s.error for s in calls)  # none refused mid-air
    spent = batch_spend(snap).total
    assert spent == crew.tokens.total == sum(s.tokens.total for s in calls)
    assert spent <= 9_000 + max(s.tokens.total for s in calls)
    saved = store.load(snap.batch_id)
    assert saved is not None and saved.crews[0].state is CrewState.BUDGET_EXCEEDED
    assert [t.output for t in saved.crews[0].tasks] == [t.output for t in crew.tasks]


def test_a_usd_cap_stops_two_running_project_crews_at_their_next_model_calls(
    demo_server: DemoLLMServer, tmp_path: Path
) -> None:
    """The issue's $ cap: two six-task crews admitted at once at the estimate, both stopped at
    their next model call once the batch's spend reaches the cap."""
    six = load_project(six_task_project(tmp_path))
    runner = Runner(max_concurrency=8, demo_base_url=lambda: demo_server.base_url)
    model = "gpt-4o-mini"  # a priced model the demo answers
    price = price_for(model)
    assert price is not None
    settings = RunSettings(llm=LLMSettings(model=model), budget=Budget(usd=0.004))
    topics = [f"{LONG_TOPIC} {i}" for i in range(4)]
    try:
        est = runner.estimate(six, topics, settings)
        assert 2 * price.cost(est.per_crew) <= 0.004 < 3 * price.cost(est.per_crew)
        snap = finish(runner, runner.submit(six, topics, settings), timeout=120)
    finally:
        runner.close()
    states = [c.state for c in snap.crews]
    assert states == [CrewState.BUDGET_EXCEEDED] * 4
    ran = [c for c in snap.crews if c.started_at and c.spans]
    assert len(ran) == 2 and all(1 <= len(c.tasks) < 6 for c in ran)
    calls = [s.tokens for c in ran for s in c.spans if s.kind == "llm"]
    spent = price.cost(batch_spend(snap))
    assert spent <= 0.004 + 2 * max(price.cost(t) for t in calls)  # two calls in flight


def test_the_cli_refuses_a_budget_that_admits_no_crew(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "alpha", "--budget-tokens", "5", "--latency", "0", "--no-history"])
    assert code == 2
    err = capsys.readouterr().err
    assert "estimate: about 1 calls" in err and "budget 5 tokens" in err
    assert "error: the budget of 5 tokens admits no crew: one crew is estimated at" in err


def test_a_budget_that_admits_no_crew_is_refused_by_submit(runner: Runner) -> None:
    with pytest.raises(BudgetTooSmall, match="admits no crew"):
        runner.submit("research", ["a", "b"], RunSettings(budget=Budget(tokens=10)))
    assert runner.batch_ids() == []


def test_a_running_batch_learns_from_its_own_finished_calls_and_gates_the_next_call() -> None:
    """Before any crew of the batch finished, its finished calls stand for the estimate's calls
    (the estimate said 400 tokens a crew; the calls show 2 × 50); the gate lets a call through
    while the spend plus the calls in flight and this one fit the cap, and refuses every call
    after the first one that does not."""
    from crewdash.engine.budget import BatchEstimate, BudgetGate, over_budget
    from crewdash.model.batch import Batch, Span

    batch = Batch("b", "research", ["a", "b", "c"], model_label="m", max_concurrency=3, model="m")
    first, second, _ = batch.run_ids
    estimate = BatchEstimate(3, 2, TokenUsage(300, 100, 400), None)
    budget = Budget(tokens=250)
    assert over_budget(budget, batch.snapshot(), estimate) is not None  # 400 > 250 at the estimate
    batch.mark_running(first)
    batch.record_span(
        first,
        "call-1",
        lambda s: Span(
            s.key, kind="llm", started_at=1.0, finished_at=2.0, tokens=TokenUsage(40, 10, 50)
        ),
    )
    status = budget_status(budget, batch.snapshot(), estimate, admitted={first})
    assert status.per_crew.total == 100 and "average of 1 finished" in status.basis
    assert status.projected == 50 + 50 + 100  # spent, the first crew's rest, the next crew
    assert over_budget(budget, batch.snapshot(), estimate, admitted={first}) is None
    gate = BudgetGate(budget, estimate, "m")
    assert gate.check(batch, first) is None  # 50 spent + this call's 50
    batch.mark_running(second)
    for key, crew in (("call-2", first), ("call-3", second)):  # two calls in flight
        batch.record_span(crew, key, lambda s: Span(s.key, kind="llm", started_at=3.0))
    assert gate.check(batch, first) is None  # 50 + 2 × 50 in flight + 50 = 200
    batch.record_span(
        second,
        "call-4",
        lambda s: Span(
            s.key, kind="llm", started_at=1.5, finished_at=2.5, tokens=TokenUsage(40, 10, 50)
        ),
    )
    why = gate.check(batch, second)  # 100 spent + 2 × 50 in flight + 50 = 250: still fits
    assert why is None
    batch.record_span(second, "call-5", lambda s: Span(s.key, kind="llm", started_at=4.0))
    why = gate.check(batch, second)  # 100 + 3 × 50 + 50 = 300 > 250
    assert why is not None and "stopped before its next model call" in why
    assert "100 tokens of 250 tokens spent" in why
    assert gate.check(batch, first) == why and gate.refused(first) and gate.refused(second)
