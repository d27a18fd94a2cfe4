"""A batch's budget: the estimate before Run, the stop at the cap (the rest `budget_exceeded`,
nothing lost from the crews that finished), and bad budgets refused with a message."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from crewdash.batch import CrewState
from crewdash.blueprints import builtin_blueprint
from crewdash.budget import Budget, budget_status, estimate_batch
from crewdash.demo_llm import DemoLLMServer
from crewdash.errors import SettingsError
from crewdash.llm import LLMSettings
from crewdash.runner import Runner, RunSettings
from crewdash.store import Store
from tests.api_server import api_server
from tests.conftest import finish


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
        started = api.post("/batches", json={"topics": ["a", "b"], "budget_tokens": 1})
        assert started.status_code == 202
        batch_id = started.json()["batch_id"]
        deadline = time.time() + 30
        while not (body := api.get(f"/batches/{batch_id}").json())["done"]:
            assert time.time() < deadline
            time.sleep(0.1)
        assert [c["state"] for c in body["crews"]] == ["budget_exceeded"] * 2
        assert body["budget_tokens"] == 1 and body["budget_usd"] is None
