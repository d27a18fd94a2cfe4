"""Plotly figures of an experiment's grid: latency and score by variant (no Streamlit)."""

from __future__ import annotations

import plotly.graph_objects as go

from crewdash.experiments import Grid

_LAYOUT = {"height": 320, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "showlegend": False}


def latency_by_variant(grid: Grid) -> go.Figure:
    """Every finished cell's latency as a point per variant, over a box of its spread."""
    fig = go.Figure()
    for v in grid.variants:
        cells = [c for c in grid.cells if c.variant == v.name and c.latency_s is not None]
        fig.add_box(
            y=[c.latency_s for c in cells],
            name=v.name,
            boxpoints="all",
            jitter=0.3,
            text=[c.topic for c in cells],
            hovertemplate="%{text}<br>%{y:.2f} s<extra>" + v.name + "</extra>",
        )
    fig.update_layout(yaxis_title="latency (s)", **_LAYOUT)
    return fig


def score_by_variant(grid: Grid) -> go.Figure:
    """Each variant's mean judge score (1-10), labelled with how many cells were scored."""
    names = [v.name for v in grid.variants]
    fig = go.Figure()
    fig.add_bar(
        x=names,
        y=[v.mean_score or 0 for v in grid.variants],
        text=[
            "-" if v.mean_score is None else f"{v.mean_score:.1f} ({v.scored})"
            for v in grid.variants
        ],
        textposition="outside",
        marker_color="#2563eb",
    )
    fig.update_layout(yaxis={"title": "mean score", "range": [0, 10.5]}, **_LAYOUT)
    return fig
