"""The one "poll in a fragment until done" loop every live view uses (a batch, a job)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import streamlit as st


class Finishes(Protocol):
    @property
    def done(self) -> bool: ...


T = TypeVar("T", bound=Finishes)


def poll_until_done(
    first: T, fetch: Callable[[], T | None], draw: Callable[[T], None], every_s: float
) -> None:
    """Draw `fetch()` in a fragment that re-runs every `every_s` seconds while `first` was not
    done; when it ends, one full rerun draws it again without the timer, so polling stops (a
    finished thing is drawn once, with no timer at all). `fetch` returning None draws nothing."""
    polling = not first.done

    @st.fragment(run_every=every_s if polling else None)
    def live() -> None:
        current = fetch()
        if current is None:
            return
        draw(current)
        if polling and current.done:
            st.rerun()

    live()
