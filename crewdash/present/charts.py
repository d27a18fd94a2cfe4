"""Plotly figures and tables built from a `BatchSnapshot` (pure functions; no Streamlit).

The timeline puts every crew and every LLM call on one wall-clock axis: overlapping bars are the
visible proof that crews ran concurrently.
"""

from __future__ import annotations

import html
import time

import pandas as pd
import plotly.graph_objects as go

from crewdash.bench.report import BenchReport, StrategyResult, strategy_code, strategy_label
from crewdash.model.batch import BatchSnapshot, CrewSnapshot, CrewState
from crewdash.model.pricing import batch_cost, crew_cost

STATE_COLORS = {
    CrewState.QUEUED: "#b0b7c3",
    CrewState.RUNNING: "#3b82f6",
    CrewState.SUCCEEDED: "#16a34a",
    CrewState.FAILED: "#dc2626",
    CrewState.CANCELLED: "#6b7280",
    CrewState.TIMED_OUT: "#ea580c",
    CrewState.INTERRUPTED: "#a16207",
    CrewState.BUDGET_EXCEEDED: "#9333ea",
}
# Drawn in this order, widest first: a Flow step holds tasks, a task holds its LLM calls.
SPAN_COLORS = {
    "step": "#0d9488",
    "task": "#60a5fa",
    "llm": "#f59e0b",
    "tool": "#8b5cf6",
    "retry": "#dc2626",
    "governor": "#f472b6",
    "cache": "#16a34a",
}
SPAN_NAMES = {
    "step": "Flow step",
    "task": "task",
    "llm": "LLM call",
    "tool": "tool use",
    "retry": "retry wait",
    "governor": "rate governor wait",
    "cache": "cached answer",
}
SPAN_WIDTHS = {"step": 0.65, "task": 0.5}
WAIT_COLOR = "#fde68a"  # a streamed LLM call before its first token
# A title and a legend never share a line: the title sits in the top band of the figure
# (container coordinates), the legend in the band below it, just above the plot area.
TITLE_BAND = 34
LEGEND_BAND = 36
LEGEND_ABOVE_PLOT = {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"}


def _title(text: str) -> dict[str, object]:
    return {
        "text": text,
        "x": 0,
        "xanchor": "left",
        "xref": "paper",
        "y": 1,
        "yref": "container",
        "yanchor": "top",
        "pad": {"t": 8},
        "font": {"size": 15},
    }


def chart_text(text: object) -> str:
    """Text for a plotly label, tick, legend, title or hover text: plotly draws a subset of HTML
    (`<b>`, `<a href>`, `<br>`, ...) in all of them and has no raw-text mode, so `<`, `>` and `&`
    are escaped; plotly turns `&lt;` `&gt;` `&amp;` back into characters, so it reads as typed.
    `$` becomes `&#36;` too: text between two `$` would be typeset as LaTeX where MathJax is."""
    return html.escape(str(text), quote=False).replace("$", "&#36;")


def crew_label(crew: CrewSnapshot, width: int = 32) -> str:
    """A short unique label: index and the start of the topic (plain text: `chart_text` it for a
    figure)."""
    topic = crew.topic if len(crew.topic) <= width else crew.topic[: width - 1] + "…"
    return f"#{crew.index + 1} {topic}"


def status_table(snap: BatchSnapshot) -> pd.DataFrame:
    """One row per crew, for the live status table."""
    now = time.time()
    rows = []
    for crew in snap.crews:
        llm_calls = [s for s in crew.spans if s.kind == "llm"]
        rows.append(
            {
                "#": crew.index + 1,
                "Topic": crew.topic,
                "State": crew.state.value,
                "Step": crew.error if crew.state is CrewState.FAILED else crew.step,
                "Start (s)": None if crew.started_at is None else crew.started_at - snap.created_at,
                "Duration (s)": None
                if crew.started_at is None
                else (crew.finished_at or now) - crew.started_at,
                "LLM calls": len(llm_calls),
                "Restored tasks": sum(1 for t in crew.tasks if t.restored),
                "Tokens": crew.tokens.total,
                "Cost ($)": crew_cost(snap, crew),
                "TTFT (s)": crew.ttft_s,
                "Tokens/s": crew.tokens_per_s,
            }
        )
    return pd.DataFrame(rows)


def _height(n: int) -> int:
    return max(260, min(2400, 90 + 26 * n))


def timeline_figure(snap: BatchSnapshot) -> go.Figure:
    """Crews as wide bars; inside them their Flow steps, tasks, and LLM calls as ever narrower
    bars, on a shared seconds axis."""
    now = time.time()
    fig = go.Figure()
    labels = [chart_text(crew_label(c)) for c in snap.crews]
    for state in CrewState:
        crews = [
            (lbl, c)
            for lbl, c in zip(labels, snap.crews, strict=True)
            if c.state is state and c.started_at is not None
        ]
        if not crews:
            continue
        starts = [c.started_at - snap.created_at for _, c in crews]  # type: ignore[operator]
        ends = [(c.finished_at or now) - snap.created_at for _, c in crews]
        fig.add_bar(
            y=[lbl for lbl, _ in crews],
            x=[e - s for s, e in zip(starts, ends, strict=True)],
            base=starts,
            orientation="h",
            name=f"crew {state.value}",
            marker_color=STATE_COLORS[state],
            opacity=0.35,
            width=0.8,
            hovertemplate="%{y}<br>start %{base:.2f} s<br>%{x:.2f} s<extra>crew</extra>",
        )
    for kind, color in SPAN_COLORS.items():
        ys, xs, bases, texts = [], [], [], []
        for lbl, crew in zip(labels, snap.crews, strict=True):
            for span in crew.spans:
                if span.kind != kind or span.started_at is None:
                    continue
                end = span.finished_at or crew.finished_at or now
                if crew.finished_at is not None:  # an ended crew's spans end with it (also
                    end = min(end, crew.finished_at)  # rows stored before they did)
                ys.append(lbl)
                bases.append(span.started_at - snap.created_at)
                xs.append(end - span.started_at)
                if span.error:
                    status = f" · error: {span.error}"
                else:
                    status = f" · {span.tokens.total} tokens" if kind in ("llm", "cache") else ""
                texts.append(chart_text(f"{SPAN_NAMES[kind]} {span.name}{status}"))
        if ys:
            fig.add_bar(
                y=ys,
                x=xs,
                base=bases,
                orientation="h",
                width=SPAN_WIDTHS.get(kind, 0.35),
                marker_color=color,
                name=SPAN_NAMES[kind],
                text=texts,
                textposition="none",
                hovertemplate="%{y}<br>%{text}<br>start %{base:.2f} s, %{x:.2f} s<extra></extra>",
            )
    _add_waits(fig, snap, labels, now)
    fig.update_layout(
        barmode="overlay",
        height=_height(len(snap.crews)),
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        xaxis_title="seconds since the batch was submitted",
        yaxis={"categoryorder": "array", "categoryarray": labels[::-1], "type": "category"},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )
    fig.update_xaxes(rangemode="tozero")
    return fig


def _add_waits(fig: go.Figure, snap: BatchSnapshot, labels: list[str], now: float) -> None:
    """Over each streamed LLM call, its wait for the first token in a lighter shade: the rest
    of the call's bar is the model writing."""
    ys, xs, bases, texts = [], [], [], []
    for lbl, crew in zip(labels, snap.crews, strict=True):
        for span in crew.spans:
            if span.kind != "llm" or span.started_at is None:
                continue
            if span.first_token_at is None and span.finished_at is not None:
                continue  # not streamed: one bar, as before
            first = span.first_token_at or crew.finished_at or now  # still waiting for it
            ys.append(lbl)
            bases.append(span.started_at - snap.created_at)
            xs.append(max(0.0, first - span.started_at))
            rate = f" · then {span.tokens_per_s:.0f} tokens/s" if span.tokens_per_s else ""
            texts.append(f"waiting for the first token{rate}")
    if ys:
        fig.add_bar(
            y=ys,
            x=xs,
            base=bases,
            orientation="h",
            width=0.35,
            marker_color=WAIT_COLOR,
            name="LLM call: waiting for first token",
            text=texts,
            textposition="none",
            hovertemplate="%{y}<br>%{text}<br>start %{base:.2f} s, TTFT %{x:.2f} s<extra></extra>",
        )


def ttft_figure(snap: BatchSnapshot) -> go.Figure:
    """Each crew's time to first token against its whole duration (streamed crews): what the
    analyst waited before text appeared, and how long the answer then took."""
    now = time.time()
    crews = [c for c in snap.crews if c.ttft_s is not None and c.started_at is not None]
    labels = [chart_text(crew_label(c, 20)) for c in crews]
    ttft = [c.ttft_s or 0.0 for c in crews]
    total = [(c.finished_at or now) - (c.started_at or now) for c in crews]
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=ttft,
        name="time to first token",
        marker_color=WAIT_COLOR,
        hovertemplate="%{x}<br>TTFT %{y:.2f} s<extra></extra>",
    )
    fig.add_bar(
        x=labels,
        y=[max(0.0, t - f) for t, f in zip(total, ttft, strict=True)],
        name="rest of the crew's time",
        marker_color=SPAN_COLORS["llm"],
        customdata=total,
        hovertemplate="%{x}<br>total %{customdata:.2f} s<extra></extra>",
    )
    _stack_per_crew(
        fig,
        labels,
        "seconds",
        "Time to first token vs total latency"
        if crews
        else "No streamed answers yet (streaming off, or not started)",
    )
    return fig


def tokens_figure(snap: BatchSnapshot) -> go.Figure:
    """Prompt and completion tokens per crew, stacked, with each crew's cost on hover."""
    labels = [chart_text(crew_label(c, 20)) for c in snap.crews]
    costs = [crew_cost(snap, c) for c in snap.crews]
    hover = [f"${c:.6f}" if c is not None else "no price for this model" for c in costs]
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=[c.tokens.prompt for c in snap.crews],
        name="prompt tokens",
        marker_color="#93c5fd",
        customdata=hover,
        hovertemplate="%{x}<br>%{y} prompt tokens<br>%{customdata}<extra></extra>",
    )
    fig.add_bar(
        x=labels,
        y=[c.tokens.completion for c in snap.crews],
        name="completion tokens",
        marker_color="#2563eb",
        customdata=hover,
        hovertemplate="%{x}<br>%{y} completion tokens<br>%{customdata}<extra></extra>",
    )
    total = batch_cost(snap)
    _stack_per_crew(
        fig,
        labels,
        "tokens",
        f"{snap.tokens.total:,} tokens · "
        + (
            f"${total:.4f}"
            if total is not None
            else chart_text(f"no price for {snap.model or 'model'}")
        ),
    )
    return fig


def latency_figure(snap: BatchSnapshot) -> go.Figure:
    """Each crew's duration, coloured by state, with the batch wall time as a line."""
    now = time.time()
    fig = go.Figure()
    for state in CrewState:
        crews = [c for c in snap.crews if c.state is state and c.started_at is not None]
        if crews:
            fig.add_bar(
                x=[chart_text(crew_label(c, 20)) for c in crews],
                y=[(c.finished_at or now) - c.started_at for c in crews],  # type: ignore[operator]
                name=state.value,
                marker_color=STATE_COLORS[state],
                hovertemplate="%{x}<br>%{y:.2f} s<extra></extra>",
            )
    fig.add_hline(
        y=snap.wall_s,
        line_dash="dash",
        line_color="#111827",
        annotation_text=f"batch wall {snap.wall_s:.2f} s",
        annotation_position="top left",
    )
    fig.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis_title="crew latency (s)",
        xaxis={
            "categoryorder": "array",
            "categoryarray": [chart_text(crew_label(c, 20)) for c in snap.crews],
            "showticklabels": len(snap.crews) <= 30,
        },
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )
    return fig


def _strategy_colors(names: list[str]) -> list[str]:
    return ["#2563eb" if n == "crewdash" else "#9ca3af" for n in names]


def bench_table(report: BenchReport) -> pd.DataFrame:
    """One row per strategy, as the CLI prints it."""
    return pd.DataFrame(
        [
            {
                "Strategy": strategy_label(r.strategy),
                "Code": strategy_code(r.strategy),
                "Wall (s)": r.wall_s,
                "Speedup vs sequential": r.speedup_vs_sequential,
                "Floor / wall": r.efficiency_vs_floor,
                "Peak concurrent calls": r.peak_concurrency,
                "Errors": "; ".join(r.errors),
            }
            for r in report.results
        ]
    )


def bench_bar_figure(report: BenchReport, metric: str) -> go.Figure:
    """Wall time (`wall_s`) or speedup (`speedup_vs_sequential`) per strategy."""
    ok = [r for r in report.results if r.ok]
    names = [r.strategy for r in ok]
    values = [getattr(r, metric) or 0.0 for r in ok]
    fig = go.Figure(
        go.Bar(
            x=[chart_text(strategy_label(n)) for n in names],
            y=values,
            marker_color=_strategy_colors(names),
            text=[f"{v:.2f}{' s' if metric == 'wall_s' else '×'}" for v in values],
            textposition="outside",
            cliponaxis=False,
        )
    )
    if metric == "wall_s":
        # the line at the floor, its label above the plot: inside it the bars covered it
        fig.add_hline(y=report.floor_s, line_dash="dash", line_color="#16a34a")
        fig.add_annotation(
            text=(
                f"floor {report.floor_rule} = {report.floor_s:.2f} s "
                f"(c = {report.framework_cpu_per_crew_ms:.1f} ms)"
            ),
            xref="paper",
            x=0,
            xanchor="left",
            yref="paper",
            y=1.02,
            yanchor="bottom",
            showarrow=False,
            font={"color": "#16a34a"},
        )
    top = max([*values, report.floor_s if metric == "wall_s" else 0.0, 0.0])
    fig.update_layout(
        height=380,
        margin={"l": 10, "r": 10, "t": LEGEND_BAND + 10, "b": 10},
        yaxis={
            "title": "wall time (s)" if metric == "wall_s" else "speedup vs sequential (×)",
            "range": [0, top * 1.15 or 1],  # room for the labels above the bars
        },
    )
    return fig


def bench_timeline_figure(result: StrategyResult) -> go.Figure:
    """One strategy's LLM calls on its own clock: stair steps mean serialization."""
    spans = result.spans
    fig = go.Figure(
        go.Bar(
            y=[f"call {i + 1}" for i in range(len(spans))],
            x=[s.end - s.start for s in spans],
            base=[s.start for s in spans],
            orientation="h",
            marker_color=["#dc2626" if s.error else SPAN_COLORS["llm"] for s in spans],
            hovertemplate="%{y}: start %{base:.2f} s, %{x:.2f} s<extra></extra>",
        )
    )
    fig.update_layout(
        height=_height(len(spans)),
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        xaxis_title="seconds since the strategy started",
        yaxis={"autorange": "reversed", "showticklabels": len(spans) <= 40},
    )
    return fig


def sweep_figure(reports: list[BenchReport]) -> go.Figure:
    """Wall time against N for every strategy, with the floor (max(L + c, N·c) at each N)."""
    fig = go.Figure()
    names = list(dict.fromkeys(r.strategy for rep in reports for r in rep.results))
    for name in names:
        points = [(rep.n, rep.result(name)) for rep in reports]
        xs = [n for n, r in points if r is not None and r.ok]
        ys = [r.wall_s for _, r in points if r is not None and r.ok]
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            name=chart_text(strategy_label(name)),
            line={"width": 4 if name == "crewdash" else 2},
        )
    fig.add_scatter(
        x=[r.n for r in reports],
        y=[r.floor_s for r in reports],
        customdata=[r.framework_cpu_per_crew_ms for r in reports],
        mode="lines",
        name=f"floor {reports[0].floor_rule}" if reports else "floor",
        hovertemplate="N=%{x}: floor %{y:.2f} s, c = %{customdata:.1f} ms<extra></extra>",
        line={"dash": "dash", "color": "#16a34a"},
    )
    fig.update_layout(
        height=400,
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        xaxis_title="crews (N)",
        yaxis_title="wall time (s)",
    )
    return fig


def _stack_per_crew(fig: go.Figure, labels: list[str], unit: str, title: str) -> None:
    """The layout both stacked per-crew bar charts share: crews in batch order along x, their
    names shown only while they fit."""
    fig.update_layout(
        barmode="stack",
        height=380,
        margin={"l": 10, "r": 10, "t": TITLE_BAND + LEGEND_BAND, "b": 10},
        yaxis_title=unit,
        title=_title(title),
        xaxis={
            "categoryorder": "array",
            "categoryarray": labels,
            "showticklabels": len(labels) <= 30,
        },
        legend=LEGEND_ABOVE_PLOT,
    )


def progress_figure(snap: BatchSnapshot) -> go.Figure:
    """A large batch at a glance: crews ended over time (seconds since it was submitted), one
    line per ending state, whatever the number of crews."""
    fig = go.Figure()
    start = snap.created_at
    for state in CrewState:
        ends = sorted(
            c.finished_at - start for c in snap.crews if c.state is state and c.finished_at
        )
        if ends and state.final:
            fig.add_scatter(
                x=ends,
                y=list(range(1, len(ends) + 1)),
                mode="lines",
                line={"shape": "hv", "color": STATE_COLORS[state]},
                name=state.value,
                hovertemplate="%{y} crews by %{x:.1f} s<extra></extra>",
            )
    fig.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title="seconds since the batch was submitted",
        yaxis_title="crews ended",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )
    return fig


def latency_histogram(snap: BatchSnapshot) -> go.Figure:
    """How long the ended crews took, as a histogram (one bar per crew stops reading well past
    a few dozen crews)."""
    fig = go.Figure()
    for state in CrewState:
        took = [c.duration for c in snap.crews if c.state is state and c.finished_at]
        if took and state.final:
            fig.add_histogram(x=took, name=state.value, marker_color=STATE_COLORS[state], nbinsx=40)
    fig.update_layout(
        height=320,
        barmode="stack",
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title="crew latency (s)",
        yaxis_title="crews",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )
    return fig
