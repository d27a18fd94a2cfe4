"""A batch as CSV (one row per crew), JSON (everything, spans included) or a Markdown report.

Every CSV crewdash writes goes through `csv_text`, which neutralises text a spreadsheet would run
as a formula (topics and results are anyone's input).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from crewdash.base.errors import ExportFormatError
from crewdash.model.batch import BatchSnapshot
from crewdash.model.pricing import batch_cost, crew_cost
from crewdash.schemas.batches import BatchDetail

FORMATS: dict[str, tuple[str, str]] = {
    "csv": ("text/csv", "csv"),
    "json": ("application/json", "json"),
    "md": ("text/markdown", "md"),
}


# OWASP "CSV injection": a cell starting with one of these is a formula to Excel, LibreOffice and
# Google Sheets (=HYPERLINK(...) sends data away, =cmd|... runs a program on old Excel).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A sign starts a formula only for what follows it. A number (-5, +3.25, -1,234.5, -1e-7) is
# read as a number, and a Markdown list item ("- first point", a sign, a space, then words) can
# only reach outside its cell through a function call (`WEBSERVICE(`, with or without a space
# before the bracket), a DDE link (`cmd|`) or a reference to another sheet or file
# (`Sheet1!A1`): without any of those it is left as written.
_NUMBER = re.compile(r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?")
_LIST_ITEM = re.compile(r"[+-] (?![\s\d+\-=@(.])")
_REACHES_OUT = re.compile(r"\w\s*\(|[|!]")
# A separator inside a cell could split it in a spreadsheet that guesses `;` or TAB: quote it.
_NEEDS_QUOTES = re.compile(r'[,;"\t\r\n]')
CsvCell = str | int | float | Decimal | None


def is_formula(text: str) -> bool:
    """Whether `text` must be kept from a spreadsheet's formula parser: always when it starts
    with = @ TAB or CR; when it starts with + or -, unless it is a number or a list item that
    calls nothing (the rule above)."""
    if not text.startswith(FORMULA_STARTS):
        return False
    if text[0] not in "+-":
        return True
    if _NUMBER.fullmatch(text):
        return False
    return not (_LIST_ITEM.match(text) and not _REACHES_OUT.search(text))


def csv_cell(value: CsvCell) -> str:
    """One cell as CSV text. A formula (`is_formula`) gets a leading `'`, so a spreadsheet
    shows it instead of evaluating it, and text holding a separator, quote or line break is
    quoted. Numbers (int, float, Decimal) stay numbers, negative ones included."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if not isinstance(value, str):
        return repr(value)
    if is_formula(value):
        value = "'" + value
    if _NEEDS_QUOTES.search(value):
        value = '"' + value.replace('"', '""') + '"'
    return value


# The separators `csv_cell` quotes inside a cell, so any of them may separate cells.
CSV_DELIMITERS = (",", ";", "\t")


def csv_text(rows: Iterable[Iterable[CsvCell]], delimiter: str = ",") -> str:
    """Rows as CSV (CRLF line ends, as the csv module writes), every cell through `csv_cell`,
    separated by `delimiter` (one of `CSV_DELIMITERS`)."""
    if delimiter not in CSV_DELIMITERS:
        raise ExportFormatError(f"unsupported CSV delimiter {delimiter!r}; use , ; or tab")
    return "".join(delimiter.join(csv_cell(cell) for cell in row) + "\r\n" for row in rows)


def _fixed(value: float | None, places: int) -> Decimal | None:
    """A number with a fixed count of decimals, written as such (not as 1.5e-07)."""
    return None if value is None else Decimal(f"{value:.{places}f}")


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def batch_dict(snap: BatchSnapshot) -> dict[str, Any]:
    """Everything about a batch as plain JSON-ready data (the API's `BatchDetail`)."""
    return BatchDetail.from_snapshot(snap).model_dump(mode="json")


CSV_HEADER = (
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
    "inputs",
    "tasks",
    "files",
    "error",
    "result",
    "ttft_s",
    "generation_s",
    "tokens_per_s",
)


def to_csv(snap: BatchSnapshot) -> str:
    rows: list[tuple[CsvCell, ...]] = [CSV_HEADER]
    for c in snap.crews:
        rows.append(
            (
                snap.batch_id,
                c.index + 1,
                c.topic,
                c.state.value,
                _iso(c.started_at),
                _iso(c.finished_at),
                _fixed(c.duration, 3),
                sum(1 for s in c.spans if s.kind == "llm"),
                c.tokens.prompt,
                c.tokens.completion,
                c.tokens.total,
                _fixed(crew_cost(snap, c), 8),
                json.dumps(dict(c.inputs), ensure_ascii=False) if c.inputs else None,
                json.dumps(
                    [
                        {"name": t.name, "output": t.output}
                        | ({"restored": True} if t.restored else {})
                        for t in c.tasks
                    ],
                    ensure_ascii=False,
                )
                if c.tasks
                else None,
                "; ".join(c.files) or None,
                c.error,
                c.result,
                _fixed(c.ttft_s, 3),
                _fixed(c.generation_s, 3),
                _fixed(c.tokens_per_s, 1),
            )
        )
    return csv_text(rows)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def to_markdown(snap: BatchSnapshot) -> str:
    lines = [
        f"# crewdash batch {snap.batch_id}",
        "",
        f"- Blueprint: {snap.blueprint} ({snap.kind})",
        f"- Model: {snap.model_label}",
        f"- Submitted: {_iso(snap.created_at)}",
        f"- State: {snap.state} ("
        + ", ".join(f"{n} {state}" for state, n in snap.counts.items())
        + ")",
        f"- Crews: {len(snap.crews)} · wall {snap.wall_s:.2f} s · sum of crew times "
        f"{snap.sum_crew_s:.2f} s"
        + ("" if snap.speedup is None else f" · speedup {snap.speedup:.1f}×")
        + f" · tokens {snap.tokens.total}"
        + ("" if (total := batch_cost(snap)) is None else f" · cost ${total:.4f}"),
        "",
        "## Latency",
        "",
        "| # | Topic | State | Start (s) | Duration (s) | LLM calls | Tokens | TTFT (s) "
        "| Tokens/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in snap.crews:
        start = "" if c.started_at is None else f"{c.started_at - snap.created_at:.2f}"
        duration = "" if c.duration is None else f"{c.duration:.2f}"
        calls = sum(1 for s in c.spans if s.kind == "llm")
        ttft = "" if c.ttft_s is None else f"{c.ttft_s:.2f}"
        rate = "" if c.tokens_per_s is None else f"{c.tokens_per_s:.0f}"
        lines.append(
            f"| {c.index + 1} | {_cell(c.topic)} | {c.state.value} | {start} | "
            f"{duration} | {calls} | {c.tokens.total} | {ttft} | {rate} |"
        )
    lines += ["", "## Results", ""]
    for c in snap.crews:
        lines += [f"### {c.index + 1}. {_cell(c.topic)}", ""]
        if c.inputs:
            shown = ", ".join(f"{k} = {_cell(v)}" for k, v in c.inputs.items())
            lines += [f"Inputs: {shown}", ""]
        lines += [c.result if c.result else f"_{c.state.value}: {c.error or 'no result'}_", ""]
        for task in c.tasks:
            agent = f" ({_cell(task.agent)})" if task.agent else ""
            restored = " (restored: finished before an interruption)" if task.restored else ""
            lines += [f"#### Task {_cell(task.name)}{agent}{restored}", "", task.output, ""]
        if c.files:
            lines += ["Files: " + ", ".join(f"`{_cell(f)}`" for f in c.files), ""]
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
