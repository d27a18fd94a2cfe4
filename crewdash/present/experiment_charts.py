"""Plotly figures of an experiment's grid: latency and score by variant (no Streamlit)."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go

from crewdash.experiments.spec import Cell, Grid, VariantSummary
from crewdash.present.charts import chart_text

_LAYOUT = {"height": 320, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "showlegend": False}


def latency_by_variant(grid: Grid) -> go.Figure:
    """Every finished cell's latency as a point per variant, over a box of its spread."""
    fig = go.Figure()
    for v in grid.variants:
        cells = [c for c in grid.cells if c.variant == v.name and c.latency_s is not None]
        fig.add_box(
            y=[c.latency_s for c in cells],
            name=chart_text(v.name),
            boxpoints="all",
            jitter=0.3,
            text=[chart_text(c.topic) for c in cells],
            hovertemplate="%{text}<br>%{y:.2f} s<extra>%{fullData.name}</extra>",
        )
    fig.update_layout(yaxis_title="latency (s)", **_LAYOUT)
    return fig


def score_by_variant(grid: Grid) -> go.Figure:
    """Each variant's mean judge score (1-10), labelled with how many cells were scored."""
    names = [chart_text(v.name) for v in grid.variants]
    fig = go.Figure()
    fig.add_bar(
        x=names,
        y=[v.mean_score or 0 for v in grid.variants],
        text=[
            "-" if v.mean_score is None else f"{v.mean_score:.1f} ({v.scored})"
            for v in grid.variants
        ],
        textposition="outside",
        cliponaxis=False,
        marker_color="#2563eb",
    )
    # a 10's label "10.0 (3)" sits above 10: the axis leaves room for it
    fig.update_layout(yaxis={"title": "mean score", "range": [0, 12]}, **_LAYOUT)
    return fig


def cell_heatmap(grid: Grid, measure: str) -> go.Figure:
    """The grid coloured cell by cell: `score` (1-10, green is better) or `latency` (seconds,
    green is faster), topics down, variants across, each cell labelled with its value.
    Typed names are escaped: Plotly would render their tags."""
    names = [chart_text(v.name) for v in grid.spec.variants]
    rows = [f"#{t + 1}" for t in range(len(grid.spec.topics))]
    z: list[list[float | None]] = []
    text: list[list[str]] = []
    for t in range(len(grid.spec.topics)):
        values = [_cell_value(grid.cell(t, v), measure) for v in range(len(names))]
        z.append(values)
        text.append(["" if x is None else _format(x, measure) for x in values])
    seen = [x for row in z for x in row if x is not None]
    score = measure == "score"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=rows,
            text=text,
            texttemplate="%{text}",
            customdata=[[chart_text(topic)] * len(names) for topic in grid.spec.topics],
            hovertemplate="%{customdata}<br>%{x}: %{text}<extra></extra>",
            colorscale="RdYlGn",
            reversescale=not score,  # a short latency is the good end
            zmin=1 if score else min(seen, default=0.0),
            zmax=10 if score else max(seen, default=1.0),
            xgap=2,
            ygap=2,
            showscale=False,
        )
    )
    fig.update_layout(
        height=max(200, 60 + 34 * len(rows)),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title={"text": "Score by cell" if score else "Latency by cell (s)", "x": 0},
        yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"side": "top", "type": "category"},
    )
    return fig


def _cell_value(cell: Cell, measure: str) -> float | None:
    if measure == "score":
        return None if cell.score is None else float(cell.score)
    return cell.latency_s


def _format(value: float, measure: str) -> str:
    return f"{value:.0f}" if measure == "score" else f"{value:.2f} s"


def best_variants(grid: Grid) -> dict[str, str]:
    """The best variant for each measure that has values: highest mean score and success rate,
    lowest median latency and cost (the first of a tie)."""
    measures: dict[str, tuple[Callable[[VariantSummary], float | None], bool, str]] = {
        "score": (lambda v: v.mean_score, True, "{:.1f}"),
        "success": (lambda v: v.success_rate if v.cells else None, True, "{:.0%}"),
        "latency": (lambda v: v.median_latency_s, False, "{:.2f} s"),
        "cost": (lambda v: v.cost_usd, False, "${:.6f}"),
    }
    best: dict[str, str] = {}
    for measure, (get, high, fmt) in measures.items():
        rated = [(value, v.name) for v in grid.variants if (value := get(v)) is not None]
        if not rated:
            continue
        value, name = (max if high else min)(rated, key=lambda pair: pair[0])
        best[measure] = f"{name} ({fmt.format(value)})"
    return best
