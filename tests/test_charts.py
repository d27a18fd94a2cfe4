from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from crewdash.bench.report import BenchReport, StrategyResult, floor_seconds
from crewdash.model.batch import Batch, TokenUsage
from crewdash.present.charts import (
    LEGEND_BAND,
    TITLE_BAND,
    bench_bar_figure,
    bench_table,
    crew_label,
    latency_figure,
    status_table,
    sweep_figure,
    timeline_figure,
    tokens_figure,
    ttft_figure,
)
from crewdash.present.experiment_charts import score_by_variant


def sample() -> Batch:
    batch = Batch(
        "b", "research", ["alpha", "beta", "gamma"], model_label="demo", max_concurrency=3
    )
    a, b, _ = batch.run_ids
    batch.mark_running(a)
    batch.mark_running(b)
    # not inside the change: it runs under the batch's lock; in the past: a crew's events come
    # before its end (a span after it is a stopped crew's thread going on, and is dropped)
    t0 = batch.snapshot().created_at - 1.0
    batch.record_span(
        a,
        "c1",
        lambda s: replace(
            s, name="m", started_at=t0 + 0.1, finished_at=t0 + 0.6, tokens=TokenUsage(5, 5, 10)
        ),
    )
    batch.mark_succeeded(a, "- one", TokenUsage(5, 5, 10))
    batch.mark_failed(b, "RuntimeError: boom")
    return batch


def test_status_table_has_a_row_per_crew() -> None:
    table = status_table(sample().snapshot())
    assert list(table["Topic"]) == ["alpha", "beta", "gamma"]
    assert list(table["State"]) == ["succeeded", "failed", "queued"]
    assert table["Step"][1] == "RuntimeError: boom"
    assert list(table["LLM calls"]) == [1, 0, 0]
    assert table["Tokens"][0] == 10


def test_timeline_has_crew_bars_and_llm_call_bars_on_one_axis() -> None:
    fig = timeline_figure(sample().snapshot())
    names = [t.name for t in fig.data]
    assert "crew succeeded" in names and "crew failed" in names and "LLM call" in names
    llm = next(t for t in fig.data if t.name == "LLM call")
    assert len(llm.y) == 1 and abs(llm.x[0] - 0.5) < 1e-6
    assert fig.layout.barmode == "overlay"


def test_latency_chart_draws_the_wall_time() -> None:
    snap = sample().snapshot()
    fig = latency_figure(snap)
    assert {t.name for t in fig.data} == {"succeeded", "failed"}
    assert fig.layout.shapes and fig.layout.shapes[0].y0 > 0


def test_labels_are_short_and_unique() -> None:
    snap = Batch(
        "b", "r", ["x" * 100, "x" * 100 + "y"], model_label="d", max_concurrency=1
    ).snapshot()
    labels = [crew_label(c) for c in snap.crews]
    assert len(set(labels)) == 2 and all(len(label) <= 40 for label in labels)


def test_flow_steps_and_tasks_are_bars_around_their_llm_calls() -> None:
    batch = Batch("f", "triage_flow", ["rust"], model_label="demo", max_concurrency=1, kind="flow")
    run_id = batch.run_ids[0]
    batch.mark_running(run_id)
    t0 = batch.snapshot().created_at
    for key, kind, name, start, end in (
        ("s1", "step", "deep_brief", 0.1, 1.0),
        ("t1", "task", "explain", 0.2, 0.9),
        ("c1", "llm", "m", 0.3, 0.8),
    ):
        batch.record_span(
            run_id,
            key,
            lambda s, k=kind, n=name, a=start, b=end: replace(
                s, kind=k, name=n, started_at=t0 + a, finished_at=t0 + b
            ),
        )
    fig = timeline_figure(batch.snapshot())
    bars = {t.name: t for t in fig.data}
    assert [t.name for t in fig.data][1:] == ["Flow step", "task", "LLM call"]  # drawn in order
    assert bars["Flow step"].width > bars["task"].width > bars["LLM call"].width
    assert bars["task"].text[0] == "task explain" and abs(bars["task"].x[0] - 0.7) < 1e-6
    assert list(status_table(batch.snapshot())["LLM calls"]) == [1]


def bench_report(n: int, cpu_ms: float, wall: float) -> BenchReport:
    floor = floor_seconds(n, 1.0, cpu_ms / 1000)
    row = StrategyResult("crewdash", n, 1.0, wall_s=wall, efficiency_vs_floor=floor / wall)
    return BenchReport(n, 1.0, "fixed 1 s", "demo", cpu_ms, floor, n * 1.03, False, [row])


def test_bench_charts_show_the_floor_as_max_of_one_crew_and_all_crews_cpu() -> None:
    report = bench_report(100, 30.0, 3.2)
    (line,) = bench_bar_figure(report, "wall_s").layout.shapes
    assert line.y0 == pytest.approx(3.0)  # N·c, not L + N·c
    (note,) = bench_bar_figure(report, "wall_s").layout.annotations
    assert note.text == "floor max(L + c, N·c) = 3.00 s (c = 30.0 ms)"
    assert bench_table(report)["Floor / wall"][0] == pytest.approx(3.0 / 3.2)
    sweep = sweep_figure([bench_report(1, 30.0, 1.1), bench_report(100, 30.0, 3.2)])
    floor = next(t for t in sweep.data if t.name.startswith("floor"))
    assert floor.name == "floor max(L + c, N·c)"
    assert list(floor.y) == pytest.approx([1.03, 3.0]) and list(floor.customdata) == [30.0, 30.0]


def streamed_sample() -> Batch:
    """`sample()` with a time to first token on the succeeded crew (the TTFT chart shows it)."""
    batch = sample()
    a = batch.run_ids[0]
    t0 = batch.snapshot().created_at
    batch.record_span(a, "c1", lambda s: replace(s, first_token_at=t0 + 0.3))
    return batch


@pytest.mark.parametrize("figure", [ttft_figure, tokens_figure])
def test_a_stacked_charts_title_and_legend_never_share_a_line(figure: Any) -> None:
    """Issue 20 item 6: "Time to first token" and "Tokens & cost" drew the title over the
    legend (both at the top of the plot area)."""
    layout = figure(streamed_sample().snapshot()).layout
    title, legend, top = layout.title, layout.legend, layout.margin.t
    assert title.text and title.yref == "container" and title.y == 1 and title.yanchor == "top"
    title_bottom = title.pad.t + title.font.size * 1.4  # one line of text below the pad
    assert title_bottom <= TITLE_BAND
    # the legend stands on the plot area and has its own band under the title's
    assert legend.yref in (None, "paper") and legend.y >= 1 and legend.yanchor == "bottom"
    assert legend.orientation == "h" and top >= TITLE_BAND + LEGEND_BAND


def test_the_benchmark_floor_label_is_above_the_bars() -> None:
    """Its label was drawn inside the plot at the floor's height, under the bars."""
    report = bench_report(20, 40.0, 2.5)
    report.results.append(StrategyResult("sequential", 20, 1.0, wall_s=20.6))
    fig = bench_bar_figure(report, "wall_s")
    (label,) = [a for a in fig.layout.annotations if "floor" in a.text]
    assert label.yref == "paper" and label.y >= 1 and label.yanchor == "bottom"
    assert f"{report.floor_s:.2f} s" in label.text
    # the value labels above the bars fit under the top of the axis
    assert fig.layout.yaxis.range[1] >= 1.1 * max(fig.data[0].y)
    assert fig.data[0].cliponaxis is False


def test_the_experiment_score_label_of_a_ten_is_not_clipped() -> None:
    grid = SimpleNamespace(variants=[SimpleNamespace(name="best", mean_score=10.0, scored=3)])
    fig = score_by_variant(grid)  # type: ignore[arg-type]
    assert fig.data[0].text == ("10.0 (3)",)
    assert fig.layout.yaxis.range[1] >= 11.5 or fig.data[0].cliponaxis is False
