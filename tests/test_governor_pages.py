"""The pages' side of rate limits and budgets (AppTest): the estimate before Run, a budget's
stop and message, the gauges' data, and the rate-limit benchmark on the Benchmark page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crewdash.blueprints.catalog import load_blueprint
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.plans import RunSettings
from crewdash.model.batch import CrewState
from tests.apptest import click, quick_demo
from tests.apptest import start as _start
from ui.session import runtime


@pytest.fixture(autouse=True)
def quick_demo_model() -> Iterator[None]:
    yield from quick_demo("0.2")


def test_the_estimate_shows_before_run_and_a_budget_stops_the_batch() -> None:
    at = _start()
    at.text_area(key="run.topics").input("alpha\nbeta\ngamma")
    click(at, "Estimate cost")  # Estimate cost: nothing starts
    assert "run.batch_id" not in at.session_state
    estimate = next(c.value for c in at.caption if c.value.startswith("Estimate"))
    assert "3 crew(s)" in estimate and "3 calls" in estimate and "$0.0000" in estimate
    # what it assumed: per task, from the inputs, answers guessed (nothing learned yet)
    assert "Assumed: " in estimate  # learned from the history when earlier tests left some
    assert "1 task from the blueprint's texts and the inputs" in estimate
    at.selectbox(key="run.budget_kind").set_value("tokens")
    at.number_input(key="run.budget_amount").set_value(0.0)
    click(at, "Run")
    assert "more than 0" in at.error[0].value
    assert "run.batch_id" not in at.session_state
    # a budget that admits no crew: said before Run, with the estimate, and Run refuses it
    at.number_input(key="run.budget_amount").set_value(1.0)
    click(at, "Estimate cost")
    assert not at.exception
    assert "Run will be refused: the budget of 1 tokens admits no crew" in at.warning[0].value
    assert "one crew is estimated at" in at.warning[0].value
    click(at, "Run")
    assert not at.exception
    assert "run.batch_id" not in at.session_state
    assert "admits no crew: one crew is estimated at" in at.error[0].value
    assert runtime().runner.batch_ids() == []
    # a budget that admits one crew at the estimate: the rest end budget_exceeded
    per_crew = (
        runtime()
        .runner.estimate(load_blueprint("research"), ["alpha", "beta", "gamma"], RunSettings())
        .per_crew.total
    )
    at.number_input(key="run.budget_amount").set_value(float(per_crew))
    click(at, "Run")
    assert not at.exception
    batch_id = at.session_state["run.batch_id"]
    assert runtime().runner.batch(batch_id).wait(30)
    at.run()
    snap = runtime().snapshot(batch_id)
    assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] + [CrewState.BUDGET_EXCEEDED] * 2
    assert snap.budget_tokens == per_crew
    assert "**2** budget_exceeded" in "\n".join(m.value for m in at.markdown)
    spent = snap.crews[0].tokens.total
    assert f"Budget: {spent:,} of {per_crew:,} tokens spent" in at.get("progress")[0].proto.text


def test_a_usd_budget_without_a_price_is_refused_with_a_message(
    demo_server: DemoLLMServer,
) -> None:
    at = _start()
    at.sidebar.selectbox(key="sidebar.provider").set_value("openai_compatible").run()
    at.sidebar.text_input(key="sidebar.model").input("mystery-model")
    # a server that answers (the pre-flight check passes), so the budget is what is refused
    at.sidebar.text_input(key="sidebar.base_url").input(demo_server.base_url)
    at.text_area(key="run.topics").input("alpha")
    at.selectbox(key="run.budget_kind").set_value("USD")
    at.number_input(key="run.budget_amount").set_value(5.0)
    click(at, "Run")
    assert not at.exception
    assert "no price for model 'mystery-model'" in at.error[0].value


def test_the_benchmark_page_runs_the_rate_limit_benchmark() -> None:
    at = _start()
    at.switch_page("pages/bench.py").run()
    assert not at.exception
    at.number_input(key="bench.limits_n").set_value(3)
    at.number_input(key="bench.limits_latency").set_value(0.1)
    click(at, "Run rate-limit benchmark")
    assert not at.exception
    job = runtime().jobs.wait(at.session_state["bench.limits_job"], timeout=90)
    assert job.error is None and job.done
    at.run()
    assert not at.exception
    # the page also shows this process's latest strategy benchmark, if another test ran one
    (rows,) = [d.value for d in at.dataframe if "Mode" in d.value.columns]
    assert list(rows["Mode"]) == ["governor", "retries only"]
    assert list(rows["Failed crews"]) == [0, 0] and rows["429s"][0] == 0
