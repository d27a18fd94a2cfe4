"""The batch view's headline (ui/batch_view.py), drawn by Streamlit's AppTest."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _headline_of_a_batch_with_every_ending() -> None:
    from crewdash.batch import Batch, CrewState, TokenUsage
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
    assert finished.label == "Crews finished" and finished.value == "5 / 7"
    for words in ("1 running", "1 queued", "1 failed", "1 cancelled", "1 timed out"):
        assert words in finished.help
