"""The pages' side of rate limits and budgets (AppTest): the estimate before Run, a budget's
stop and message, the gauges' data, and the rate-limit benchmark on the Benchmark page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crewdash.batch import CrewState
from tests.apptest import quick_demo
from tests.apptest import start as _start
from ui.session import runtime


@pytest.fixture(autouse=True)
def quick_demo_model() -> Iterator[None]:
    yield from quick_demo("0.2")


def test_the_estimate_shows_before_run_and_a_budget_stops_the_batch() -> None:
    at = _start()
    at.text_area(key="run.topics").input("alpha\nbeta\ngamma")
    at.button[1].click().run()  # Estimate cost: nothing starts
    assert "run.batch_id" not in at.session_state
    estimate = next(c.value for c in at.caption if c.value.startswith("Estimate"))
    assert "3 crew(s)" in estimate and "3 calls" in estimate and "$0.0000" in estimate
    at.selectbox(key="run.budget_kind").set_value("tokens")
    at.number_input(key="run.budget_amount").set_value(0.0)
    at.button[0].click().run()
    assert "more than 0" in at.error[0].value
    assert "run.batch_id" not in at.session_state
    at.number_input(key="run.budget_amount").set_value(1.0)  # not even one crew fits
    at.button[0].click().run()
    assert not at.exception
    batch_id = at.session_state["run.batch_id"]
    assert runtime().runner.batch(batch_id).wait(30)
    at.run()
    snap = runtime().snapshot(batch_id)
    assert [c.state for c in snap.crews] == [CrewState.BUDGET_EXCEEDED] * 3
    assert snap.budget_tokens == 1
    assert "**3** budget_exceeded" in "\n".join(m.value for m in at.markdown)
    assert "Budget: 0 of 1 tokens spent" in at.get("progress")[0].proto.text


def test_a_usd_budget_without_a_price_is_refused_with_a_message() -> None:
    at = _start()
    at.sidebar.selectbox(key="sidebar.provider").set_value("openai_compatible").run()
    at.sidebar.text_input(key="sidebar.model").input("mystery-model")
    at.sidebar.text_input(key="sidebar.base_url").input("http://127.0.0.1:9/v1")
    at.text_area(key="run.topics").input("alpha")
    at.selectbox(key="run.budget_kind").set_value("USD")
    at.number_input(key="run.budget_amount").set_value(5.0)
    at.button[0].click().run()
    assert not at.exception
    assert "no price for model 'mystery-model'" in at.error[0].value


def test_the_benchmark_page_runs_the_rate_limit_benchmark() -> None:
    at = _start()
    at.switch_page("pages/bench.py").run()
    assert not at.exception
    at.number_input(key="bench.limits_n").set_value(3)
    at.number_input(key="bench.limits_latency").set_value(0.1)
    at.button[1].click().run()
    assert not at.exception
    job = runtime().jobs.wait(at.session_state["bench.limits_job"], timeout=90)
    assert job.error is None and job.done
    at.run()
    assert not at.exception
    rows = at.dataframe[-1].value
    assert list(rows["Mode"]) == ["governor", "retries only"]
    assert list(rows["Failed crews"]) == [0, 0] and rows["429s"][0] == 0
