"""The answers of running crews as the model writes them: a grid of cards, each showing the
tail of one crew's streamed text, for the first crews writing or the ones the analyst follows.

Only a dozen cards are drawn by default, so a batch of 100 streaming crews costs one refresh
about as much as a batch of twelve; the text itself is already coalesced by the core.
"""

from __future__ import annotations

import streamlit as st

from crewdash.model.batch import BatchSnapshot, CrewSnapshot, CrewState
from crewdash.present.charts import crew_label
from ui.text import plain

LIVE_CARDS = 12
COLUMNS = 3
TAIL_CHARS = 600
GRID_HEIGHT = 470  # two rows of 220 px cards


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    """The end of a growing text, cut at a word boundary."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    space = cut.find(" ")
    return "…" + (cut[space + 1 :] if 0 <= space < 40 else cut)


def shown_crews(snap: BatchSnapshot, followed: list[str]) -> list[CrewSnapshot]:
    """The followed crews that still run, else the first running crews that have text."""
    running = {c.run_id: c for c in snap.crews if c.state is CrewState.RUNNING}
    if followed:
        return [running[r] for r in followed if r in running]
    return [c for c in running.values() if c.live_text][:LIVE_CARDS]


def render_live_answers(snap: BatchSnapshot) -> None:
    """Cards of the answers being written (nothing once no crew runs)."""
    if not any(c.state is CrewState.RUNNING for c in snap.crews):
        return
    st.subheader("Answers being written")
    crews = {c.run_id: c for c in snap.crews}
    followed = st.multiselect(
        "Follow crews",
        list(crews),
        key=f"run.follow.{snap.batch_id}",
        format_func=lambda r: crew_label(crews[r]) if r in crews else r,
        placeholder=f"the first {LIVE_CARDS} crews writing",
    )
    shown = shown_crews(snap, followed)
    if not shown:
        st.caption("Waiting for the first tokens… (none yet, or streaming is off)")
        return
    # two rows of cards, then a scroll: the figures above and the table below stay put
    grid = st.container(height=GRID_HEIGHT if len(shown) > COLUMNS * 2 else "content")
    cols = grid.columns(COLUMNS)
    for i, crew in enumerate(shown):
        with cols[i % COLUMNS].container(border=True, height=220, key=f"live-{crew.run_id}"):
            ttft = "" if crew.ttft_s is None else f" · TTFT {crew.ttft_s:.2f} s"
            st.caption(plain(f"{crew_label(crew, 40)}{ttft}"))
            st.text(tail(crew.live_text) or "…")
