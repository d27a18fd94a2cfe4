"""A batch as CSV (one row per crew), JSON (everything, spans included) or a Markdown report."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from crewdash.batch import BatchSnapshot
from crewdash.errors import CrewdashError

ExportFormat = Literal["csv", "json", "md"]
FORMATS: dict[str, tuple[str, str]] = {
    "csv": ("text/csv", "csv"),
    "json": ("application/json", "json"),
    "md": ("text/markdown", "md"),
}


class ExportFormatError(CrewdashError, ValueError):
    """An export format crewdash does not produce."""


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def batch_dict(snap: BatchSnapshot) -> dict[str, Any]:
    """Everything about a batch as plain JSON-ready data."""
    data = asdict(snap)
    data.update(
        done=snap.done,
        finished_at=snap.finished_at,
        wall_s=snap.wall_s,
        sum_crew_s=snap.sum_crew_s,
        speedup=snap.speedup,
        tokens=asdict(snap.tokens),
        cost_usd=snap.cost,
    )
    for crew, raw in zip(snap.crews, data["crews"], strict=True):
        raw["state"] = crew.state.value
        raw["duration_s"] = crew.duration
        raw["cost_usd"] = snap.crew_cost(crew)
    return data


def to_csv(snap: BatchSnapshot) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "batch_id",
            "index",
            "topic",
            "state",
            "started_at",
            "finished_at",
            "duration_s",
            "llm_calls",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cost_usd",
            "error",
            "result",
        ]
    )
    for c in snap.crews:
        writer.writerow(
            [
                snap.batch_id,
                c.index + 1,
                c.topic,
                c.state.value,
                _iso(c.started_at),
                _iso(c.finished_at),
                "" if c.duration is None else f"{c.duration:.3f}",
                sum(1 for s in c.spans if s.kind == "llm"),
                c.tokens.prompt,
                c.tokens.completion,
                c.tokens.total,
                "" if (cost := snap.crew_cost(c)) is None else f"{cost:.8f}",
                c.error or "",
                c.result or "",
            ]
        )
    return out.getvalue()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def to_markdown(snap: BatchSnapshot) -> str:
    lines = [
        f"# crewdash batch {snap.batch_id}",
        "",
        f"- Blueprint: {snap.blueprint}",
        f"- Model: {snap.model_label}",
        f"- Submitted: {_iso(snap.created_at)}",
        f"- Crews: {len(snap.crews)} · wall {snap.wall_s:.2f} s · sum of crew times "
        f"{snap.sum_crew_s:.2f} s · speedup {snap.speedup:.1f}× · tokens {snap.tokens.total}"
        + ("" if snap.cost is None else f" · cost ${snap.cost:.4f}"),
        "",
        "## Latency",
        "",
        "| # | Topic | State | Start (s) | Duration (s) | LLM calls | Tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in snap.crews:
        start = "" if c.started_at is None else f"{c.started_at - snap.created_at:.2f}"
        duration = "" if c.duration is None else f"{c.duration:.2f}"
        calls = sum(1 for s in c.spans if s.kind == "llm")
        lines.append(
            f"| {c.index + 1} | {_cell(c.topic)} | {c.state.value} | {start} | "
            f"{duration} | {calls} | {c.tokens.total} |"
        )
    lines += ["", "## Results", ""]
    for c in snap.crews:
        lines += [f"### {c.index + 1}. {_cell(c.topic)}", ""]
        lines += [c.result if c.result else f"_{c.state.value}: {c.error or 'no result'}_", ""]
    return "\n".join(lines)


def export(snap: BatchSnapshot, fmt: str) -> str:
    """The batch in `fmt` (csv, json or md)."""
    if fmt == "csv":
        return to_csv(snap)
    if fmt == "json":
        return json.dumps(batch_dict(snap), indent=2, ensure_ascii=False)
    if fmt == "md":
        return to_markdown(snap)
    raise ExportFormatError(f"unsupported export format {fmt!r}; use csv, json or md")
