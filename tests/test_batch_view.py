"""The batch view's headline (ui/batch_view.py), drawn by Streamlit's AppTest."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest


def _headline_of_a_batch_with_every_ending() -> None:
    from crewdash.model.batch import Batch, CrewState, TokenUsage
    from ui.batch_view import render_headline

    topics = ["ok", "bad", "stopped", "slow", "lost", "busy", "waiting"]
    batch = Batch("b", "research", topics, model_label="demo", max_concurrency=7)
    ok, bad, stopped, slow, lost, busy, _ = batch.run_ids
    for run_id in (ok, bad, stopped, slow, lost, busy):
        batch.mark_running(run_id)
    batch.mark_succeeded(ok, "done", TokenUsage(1, 1, 2))
    batch.mark_failed(bad, "RuntimeError: boom")
    batch.mark_failed(stopped, "cancelled", CrewState.CANCELLED)
    batch.mark_failed(slow, "timed out", CrewState.TIMED_OUT)
    batch.mark_failed(lost, "interrupted", CrewState.INTERRUPTED)
    render_headline(batch.snapshot())


def test_the_headline_counts_every_crew_that_ended() -> None:
    """Cancelled, timed-out and interrupted crews have finished too: 5 of 7 here, not 2."""
    at = AppTest.from_function(_headline_of_a_batch_with_every_ending, default_timeout=30).run()
    assert not at.exception
    finished = at.metric[0]
    assert finished.label == "Crews done" and finished.value == "5 / 7"
    for words in ("1 running", "1 queued", "1 failed", "1 cancelled", "1 timed out"):
        assert words in finished.help


def _status_table_of_a_running_batch() -> None:
    from crewdash.model.batch import Batch
    from ui.batch_view import render_batch_rest, render_batch_top

    batch = Batch("b", "research", ["alpha", "beta"], model_label="demo", max_concurrency=2)
    batch.mark_running(batch.run_ids[0])
    render_batch_top(batch.snapshot())
    render_batch_rest(batch.snapshot())


def test_the_status_table_fits_1440_px_and_the_figures_say_so_far() -> None:
    """Issue 20 items 5 and 6: tokens, cost and TTFT were behind a horizontal scroll while the
    "Step" column (reading "done") took 40% of the width; moving figures were not labelled."""
    at = AppTest.from_function(_status_table_of_a_running_batch, default_timeout=30).run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert "Speedup so far" in labels and "Batch wall time so far" in labels
    table = at.dataframe[0]
    columns = list(table.value.columns)
    assert "Restored tasks" not in columns  # a column of zeros until a resume restores tasks
    assert {"Tokens", "Cost ($)", "TTFT (s)"} <= set(columns)
    config = json.loads(table.proto.columns)
    widths = {name: config[name]["width"] for name in columns}
    assert all(isinstance(w, int) for n, w in widths.items() if n != "Topic"), widths
    # the main area at 1440 px beside the sidebar is about 980 px; a "medium" column is 200
    total = sum(w for n, w in widths.items() if n != "Topic") + 200
    assert total <= 980, widths
    assert widths["Step"] <= 0.15 * total
