"""Text on the page: what a user typed is shown as typed, and only a model's answer is Markdown.

Streamlit parses GitHub-flavoured Markdown in `st.markdown`, `st.write`, `st.caption`, alerts,
expander, tab, button and metric labels, and `st.table` cells. `plain` makes any text inert
there; `code` shows an id as a code span; `render_answer` is the one place an answer's
Markdown is drawn, with raw HTML off and no image loaded from another host.
"""

from __future__ import annotations

import re

import streamlit as st

# Characters that open or close Markdown anywhere in a line: code, emphasis, links and images,
# raw HTML and entities, strikethrough, math, table cells, and the backslash itself.
_ANYWHERE = re.compile(r"([\\`*\[\]<&~$|])")
# `_` is emphasis only at a word's edge (CommonMark's flanking rule): `snake_case` stays as is.
_UNDERSCORES = re.compile(r"(?<![^\W_])(?<!_)_++|(?<!_)_++(?![^\W_])")
# ... and at the start of a line: a heading, quote, list item, setext underline, ordered list.
_LINE_START = re.compile(r"^([ \t]*)([#>+=-])", re.MULTILINE)
_ORDERED = re.compile(r"^([ \t]*\d+)([.)])", re.MULTILINE)
# Indentation would make a code block: a word joiner first keeps the line a paragraph.
_INDENTED = re.compile(r"^(?=[ \t])", re.MULTILINE)
# Streamlit turns these into links, emoji or icons after escapes are resolved (find-and-replace
# passes over the parsed text: remark-gfm's autolink literals `http://`, `www.`, `a@b.c`,
# remark-emoji's `:name:`, Streamlit's `:material/name:`), so a backslash cannot stop them: an
# invisible word joiner breaks each pattern.
# Only where a pattern would match: an address such as `127.0.0.1:8000` copies as typed.
_LINKIFIED = re.compile(r"(?<=:)(?=//|[+\-\w]+:|material/\w+:)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"
# ![alt](url "title"): an image the browser would fetch from whatever host the answer names.
_IMAGE = re.compile(
    r"!\[((?:\\.|[^\]\\])*)\]\(\s*<?([^()\s<>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
# Any other `![` (a reference image `![a][ref]`, `![a]`, a URL with brackets) loses its `!`.
_BANG = re.compile(r"(?<!\\)((?:\\\\)*)!\[")


def plain(text: object) -> str:
    """`text` escaped for Markdown, so it reads as typed: a backslash before each character that
    could start emphasis, code, a link or image, HTML, math or a table, and before what would
    make a line a heading, quote or list; a word joiner where Streamlit would still make a link,
    an emoji or an icon. Ordinary prose comes out unchanged."""
    escaped = _ANYWHERE.sub(r"\\\1", str(text))
    escaped = _UNDERSCORES.sub(lambda m: "\\_" * len(m.group()), escaped)
    escaped = _ORDERED.sub(r"\1\\\2", escaped)
    escaped = _LINE_START.sub(r"\1\\\2", escaped)
    escaped = _INDENTED.sub(WORD_JOINER, escaped)
    return _LINKIFIED.sub(WORD_JOINER, escaped)


def code(text: object) -> str:
    """`text` as an inline code span (an id, a file name): a fence longer than any run of
    backticks inside, so nothing in it ends the span or is parsed."""
    value = str(text).replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def answer_markdown(text: str) -> str:
    """A model's answer as Markdown that loads nothing: each image becomes a link to it, marked
    as such, so the viewer's browser fetches no host the answer names (a tracking pixel, or a
    prompt-injected URL carrying data out)."""

    def link(match: re.Match[str]) -> str:
        alt = match.group(1).strip() or "image"
        return f"[image not loaded: {alt}]({match.group(2)})"

    return _BANG.sub(r"\1\\![", _IMAGE.sub(link, text))


def render_answer(text: str | None, empty: str = "_(empty answer)_") -> None:
    """Draw a model's answer (or `empty`): Markdown with raw HTML off and images as links."""
    st.markdown(answer_markdown(text) if text else empty)
