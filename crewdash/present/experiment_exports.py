"""An experiment's grid as text: one line per cell, CSV (a row per cell, then a row per
variant) and a Markdown report; the page, the API and the CLI share them."""

from __future__ import annotations

from typing import Any

from crewdash.base.errors import (
    ExportFormatError,
)
from crewdash.experiments.spec import Cell, Grid
from crewdash.present.exports import csv_text


def _num(value: float | None, places: int) -> str:
    return "" if value is None else f"{value:.{places}f}"


def grid_csv(grid: Grid) -> str:
    """A row per cell, then a row per variant's summary (`row` says which)."""
    header = [
        "row",
        "topic",
        "variant",
        "state",
        "latency_s",
        "tokens",
        "cost_usd",
        "score",
        "reason",
        "mark",
        "note",
        "cache_hits",
    ]
    rows: list[list[Any]] = [header]
    for c in grid.cells:
        rows.append(
            [
                "cell",
                c.topic,
                c.variant,
                c.state,
                _num(c.latency_s, 3),
                c.tokens,
                _num(c.cost_usd, 6),
                c.score,
                c.reason or c.judge_error,
                c.mark,
                c.note,
                c.cache_hits,
            ]
        )
    rows.append(
        [
            "row",
            "variant",
            "success_rate",
            "median_latency_s",
            "p95_latency_s",
            "tokens",
            "cost_usd",
            "mean_score",
            "cache_hits",
        ]
    )
    for v in grid.variants:
        rows.append(
            [
                "summary",
                v.name,
                _num(v.success_rate, 3),
                _num(v.median_latency_s, 3),
                _num(v.p95_latency_s, 3),
                v.tokens,
                _num(v.cost_usd, 6),
                _num(v.mean_score, 2),
                v.cache_hits,
            ]
        )
    return csv_text(rows)


def _md(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def cell_text(c: Cell) -> str:
    """One cell in a line, as the grid shows it."""
    parts = [c.state]
    if c.latency_s is not None:
        parts.append(f"{c.latency_s:.2f} s")
    parts.append(f"{c.tokens} tok")
    if c.cost_usd is not None:
        parts.append(f"${c.cost_usd:.6f}")
    if c.score is not None:
        parts.append(f"score {c.score}")
    elif c.judge == "failed":
        parts.append("judge failed")
    if c.cache_hits:
        parts.append(f"{c.cache_hits} cached")
    if c.mark:
        parts.append(c.mark)
    return " · ".join(parts)


def grid_markdown(grid: Grid) -> str:
    spec = grid.spec
    lines = [
        f"# Experiment {grid.experiment_id}",
        "",
        f"{len(spec.topics)} topics × {len(spec.variants)} variants"
        + (f"; judged against: {_md(spec.rubric)}" if spec.rubric else "")
        + ("; response cache on" if spec.cache else ""),
        "",
        "| topic | " + " | ".join(_md(v.name) for v in spec.variants) + " |",
        "| --- |" + " --- |" * len(spec.variants),
    ]
    for t, topic in enumerate(spec.topics):
        row = [cell_text(grid.cell(t, v)) for v in range(len(spec.variants))]
        lines.append(f"| {_md(topic)} | " + " | ".join(row) + " |")
    lines += [
        "",
        "## Summary",
        "",
        "| variant | model | success | median s | p95 s | tokens | cost $ | mean score |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in grid.variants:
        lines.append(
            f"| {_md(v.name)} | {_md(v.provider + '/' + v.model)} | {v.success_rate:.0%} | "
            f"{_num(v.median_latency_s, 2)} | {_num(v.p95_latency_s, 2)} | {v.tokens} | "
            f"{_num(v.cost_usd, 6)} | {_num(v.mean_score, 2)} |"
        )
    lines += ["", "## Answers", ""]
    for c in grid.cells:
        lines += [f"### {_md(c.topic)} — {_md(c.variant)}", "", c.answer or c.error or "", ""]
    return "\n".join(lines)


def export_grid(grid: Grid, fmt: str) -> str:
    if fmt == "csv":
        return grid_csv(grid)
    if fmt in ("md", "markdown"):
        return grid_markdown(grid)
    raise ExportFormatError(f"unknown export format {fmt!r}; use csv or md")
