"""What the user typed stays text: the Markdown helpers of ui/text.py and the plotly labels of
every chart builder (crewdash/present/charts.py, crewdash/present/experiment_charts.py)."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import plotly.graph_objects as go
import pytest

from crewdash.bench.report import BenchReport, StrategyResult, floor_seconds
from crewdash.experiments.spec import ExperimentSpec, Variant, build_grid
from crewdash.experiments.store import CellNotes
from crewdash.model.batch import Batch, CrewState, TokenUsage
from crewdash.present.charts import (
    bench_bar_figure,
    bench_timeline_figure,
    chart_text,
    latency_figure,
    sweep_figure,
    timeline_figure,
    tokens_figure,
    ttft_figure,
)
from crewdash.present.experiment_charts import latency_by_variant, score_by_variant
from ui.text import WORD_JOINER, answer_markdown, code, plain

HOSTILE = [
    "<b>bold</b> **markdown** [link](javascript:alert(2)) ![x](http://127.0.0.1:9/p.png)",
    "<img src=x onerror=alert(1)> <script>alert(1)</script> &lt;b&gt; &amp;",
    "# heading",
    "1. ordered",
    "- bullet",
    "> quote",
    "| a | b |",
    "`code` ```fence``` ~~strike~~ __under__ _it_",
    "$x^2$ and $$y$$",
    ":red[coloured] :material/home: :smile: :+1:",
    "see http://evil.example/x and www.evil.example and me@evil.example",
    "back\\slash \\*kept\\*",
    "<https://autolink.example>",
    "line one\n# two\n  - three\n12. four\n    five\n> six\n===",
]
# The find-and-replace passes Streamlit's Markdown runs over the parsed text, after escapes are
# resolved (read from its bundle, static/js/StreamlitMarkdown.*.js): links and emoji.
STREAMLIT_AUTOLINKS = [
    re.compile(r"(https?:\/\/|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE),
    re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)"),
    re.compile(r":[+\-\w]+:"),
]


def unescape(markdown: str) -> str:
    """What CommonMark shows for text made only of characters and backslash escapes."""
    return re.sub(r"\\([" + re.escape(string.punctuation) + "])", r"\1", markdown)


@pytest.mark.parametrize("text", HOSTILE)
def test_plain_escapes_every_markdown_character_and_reads_as_typed(text: str) -> None:
    escaped = plain(text)
    shown = unescape(escaped)
    assert shown.replace(WORD_JOINER, "") == text
    # nothing left that Markdown reads: no opening character outside an escape, and no line
    # that starts as a heading, quote, list item, underline or indented code
    rest = re.sub(r"\\[" + re.escape(string.punctuation) + "]", "", escaped)
    assert not set(rest) & set("\\`*[]<&~$|"), rest
    assert not re.search(r"(?<![^\W_])_|_(?![^\W_])", rest), rest  # `_` only inside a word
    for line in escaped.split("\n"):
        assert not re.match(r"[ \t]|[#>+=-]|\d+[.)]", line), line
    for pattern in STREAMLIT_AUTOLINKS:
        assert not pattern.search(shown), (pattern.pattern, shown)


def test_plain_leaves_ordinary_words_alone() -> None:
    prose_lines = (
        "EV batteries in 2026",
        "crewdash cannot start: CREWDASH_MAX_CONCURRENCY must be a whole number, got 'abc'.",
    )
    for prose in prose_lines:
        assert plain(prose) == prose
    assert plain(42) == "42"


@pytest.mark.parametrize("text", ["a1b2c3", "x`y", "``two``", "`edge", "line\nbreak"])
def test_code_spans_hold_any_text(text: str) -> None:
    span = code(text)
    fence = re.match(r"`+", span)
    assert fence is not None
    inner = span[len(fence.group()) : -len(fence.group())]
    assert span.endswith(fence.group())
    assert fence.group() not in inner  # no run inside ends the span early
    assert inner.strip(" ") == text.replace("\n", " ")


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (
            "- a ![x](http://h.example/p.png) b",
            "- a [image not loaded: x](http://h.example/p.png) b",
        ),
        ('![](http://h.example/p.png "t")', "[image not loaded: image](http://h.example/p.png)"),
        ("![a][r]\n\n[r]: http://h.example/p.png", "\\![a][r]\n\n[r]: http://h.example/p.png"),
        ("![a]\n\n[a]: http://h.example/p.png", "\\![a]\n\n[a]: http://h.example/p.png"),
        ("![w](http://h.example/a_(b).png)", "\\![w](http://h.example/a_(b).png)"),
        ("\\\\![a][r]", "\\\\\\![a][r]"),
    ],
)
def test_an_answer_loads_no_image(answer: str, shown: str) -> None:
    assert answer_markdown(answer) == shown
    assert not re.search(r"(?<!\\)(?:\\\\)*!\[", answer_markdown(answer))


def test_an_answer_without_images_is_unchanged() -> None:
    answer = "## Findings\n\n- **first** point, see [docs](https://example.com)\n- second!\n"
    assert answer_markdown(answer) == answer


# --- plotly -----------------------------------------------------------------------------------

TOPIC = HOSTILE[0]
ESCAPED = chart_text(TOPIC)
MODEL = "<i>model</i>"


def strings(node: Any) -> Iterator[str]:
    """Every string in a figure's JSON: labels, ticks, legend names, titles, hover text."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from strings(value)
    elif hasattr(node, "tolist"):
        yield from strings(node.tolist())


def assert_inert(fig: go.Figure) -> list[str]:
    """No string of the figure holds a tag or entity plotly would draw, other than the ones
    the builders write themselves (`<br>`, `<extra>`); returns them all."""
    found = list(strings(fig.to_plotly_json()))
    for text in found:
        tags = set(re.findall(r"</?\s*([a-zA-Z]+)", text)) - {"br", "extra"}
        assert not tags, (tags, text)
        assert "$x" not in text  # no LaTeX span either
    return found


def hostile_batch() -> Batch:
    topics = [TOPIC, "$x$ & y"]
    batch = Batch("b", "research", topics, model_label=MODEL, max_concurrency=2, model=MODEL)
    a, b = batch.run_ids
    for run_id in (a, b):
        batch.mark_running(run_id)
    # in the past: a crew's spans come before its end (later ones are a stopped crew's thread)
    t0 = batch.snapshot().created_at - 1.0
    batch.record_span(
        a,
        "c1",
        lambda s: replace(
            s,
            name="<u>model</u>",
            started_at=t0 + 0.1,
            first_token_at=t0 + 0.2,
            finished_at=t0 + 0.6,
            tokens=TokenUsage(5, 5, 10),
        ),
    )
    batch.record_span(
        b,
        "t1",
        lambda s: replace(
            s, kind="task", name="<b>task</b>", started_at=t0, finished_at=t0 + 0.3, error="<a>"
        ),
    )
    batch.mark_succeeded(a, "- one", TokenUsage(5, 5, 10))
    batch.mark_failed(b, "<b>boom</b>", CrewState.FAILED)
    return batch


@pytest.mark.parametrize(
    "builder",
    [timeline_figure, latency_figure, ttft_figure, tokens_figure],
    ids=lambda f: f.__name__,
)
def test_every_batch_chart_shows_the_topic_as_typed(builder: Any) -> None:
    snap = hostile_batch().snapshot()
    texts = assert_inert(builder(snap))
    assert any(ESCAPED[:30] in t for t in texts)  # the topic is there, escaped


def test_the_timeline_escapes_span_names_and_errors_too() -> None:
    texts = assert_inert(timeline_figure(hostile_batch().snapshot()))
    assert any("&lt;u&gt;model&lt;/u&gt;" in t for t in texts)
    assert any("task &lt;b&gt;task&lt;/b&gt; · error: &lt;a&gt;" in t for t in texts)


def test_chart_text_is_what_plotly_turns_back_into_the_typed_text() -> None:
    assert chart_text("<b>a</b> & $x$") == "&lt;b&gt;a&lt;/b&gt; &amp; &#36;x&#36;"
    assert chart_text("&lt;") == "&amp;lt;"  # plotly decodes once: shows "&lt;" as typed


def grid() -> Any:
    variants = (Variant("a_b_", model="demo-fast"), Variant("*star*", model="demo-thorough"))
    spec = ExperimentSpec((TOPIC,), variants, rubric="<b>rubric</b>")
    batch = Batch("e", "experiment", [TOPIC, TOPIC], model_label="demo", max_concurrency=2)
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
        batch.mark_succeeded(run_id, "answer", TokenUsage(1, 1, 2))
    notes = {0: CellNotes(score=7, reason="ok"), 1: CellNotes(score=5, reason="ok")}
    return build_grid("e", spec, batch.snapshot(), notes)


@pytest.mark.parametrize(
    "builder", [latency_by_variant, score_by_variant], ids=lambda f: f.__name__
)
def test_experiment_charts_show_topics_and_variant_names_as_typed(builder: Any) -> None:
    texts = assert_inert(builder(grid()))
    assert any("*star*" in t for t in texts)
    if builder is latency_by_variant:
        assert ESCAPED in texts
        # a variant name is data, never part of a hover template
        assert all("star" not in t for t in (d.hovertemplate for d in builder(grid()).data))


def test_bench_charts_hold_no_markup_either() -> None:
    floor = floor_seconds(10, 1.0, 0.03)
    row = StrategyResult("crewdash", 10, 1.0, wall_s=1.2, efficiency_vs_floor=floor / 1.2)
    report = BenchReport(10, 1.0, "fixed 1 s", "<b>m</b>", 30.0, floor, 10.3, False, [row])
    for fig in (
        bench_bar_figure(report, "wall_s"),
        bench_bar_figure(report, "speedup_vs_sequential"),
        bench_timeline_figure(row),
        sweep_figure([report]),
    ):
        assert_inert(fig)
