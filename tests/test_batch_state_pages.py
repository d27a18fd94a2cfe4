"""Issue 20, item 1, on the pages (AppTest): a cancelled batch "ended" (not "finished 4/4"), has
no speedup, History lists and filters it as cancelled, and its re-run button names what it
re-runs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from crewdash.model.batch import BATCH_STATES, CrewState
from tests.apptest import APP, quick_demo
from ui.session import runtime


@pytest.fixture(autouse=True)
def slow_demo_model() -> Iterator[None]:
    yield from quick_demo("30")  # every model call outlasts the test: crews wait until cancelled


def cancelled_batch(n: int) -> str:
    """A batch of `n` crews cancelled once each waits on its model call (not after a sleep)."""
    runner = runtime().runner
    batch_id = runner.submit("research", [f"ended topic {i}" for i in range(n)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        crews = runner.snapshot(batch_id).crews
        if all(
            c.state is CrewState.RUNNING and any(s.kind == "llm" for s in c.spans) for c in crews
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the crews never reached their model calls")
    assert runner.cancel(batch_id) == n
    return batch_id


def page(path: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    if path != "app":
        at.switch_page(path)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception
    return at


def test_a_cancelled_batch_ended_with_no_speedup_and_offers_to_rerun_the_cancelled() -> None:
    batch_id = cancelled_batch(4)

    run = page("app", batch=batch_id)  # the Run page, reattached by its URL
    caption = next(c.value for c in run.caption if batch_id in c.value)
    assert caption.endswith("ended: cancelled") and "finished" not in caption
    metrics = {m.label: m.value for m in run.metric}
    assert metrics["Crews succeeded"] == "0 / 4"
    assert metrics["Speedup"] == "n/a"

    history = page("pages/history.py", batch=batch_id)
    options = history.selectbox(key="history.state").options
    assert options == ["all", *(s.replace("_", " ") for s in BATCH_STATES)]
    assert {"cancelled", "partial", "failed", "interrupted", "budget exceeded"} <= set(options)
    rows = history.dataframe[0].value
    row = rows[rows["Batch"] == batch_id].iloc[0]
    assert row["State"] == "cancelled" and pd.isna(row["Speedup"])
    caption = next(c.value for c in history.caption if batch_id in c.value)
    assert caption.endswith("ended: cancelled")
    rerun = [b.label for b in history.button if b.label.startswith("Re-run")]
    assert rerun == ["Re-run 4 cancelled"]

    history.selectbox(key="history.state").select("cancelled").run()
    assert not history.exception
    assert set(history.dataframe[0].value["State"]) == {"cancelled"}
    assert batch_id in set(history.dataframe[0].value["Batch"])
    history.selectbox(key="history.state").select("succeeded").run()
    assert not history.exception
    shown = set(history.dataframe[0].value["Batch"]) if history.dataframe else set()
    assert batch_id not in shown
