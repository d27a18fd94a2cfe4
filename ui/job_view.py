"""Shows a background measurement (benchmark, pitfall demos): progress while it runs, then its
result, polling only until it ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from crewdash.engine.jobs import JobRunner, JobSnapshot, JobState
from ui.polling import poll_until_done
from ui.text import plain


def shown_job(jobs: JobRunner, kind: str, session_key: str) -> str | None:
    """The job a page shows: one of its kind that is running, whichever session started it
    (a job belongs to the server, not to the tab), else the last one this session started."""
    latest = jobs.latest(kind)
    if latest is not None and not latest.done:
        return latest.job_id
    job_id = st.session_state.get(session_key)
    return job_id if isinstance(job_id, str) else None


def render_other_jobs(jobs: JobRunner, *kinds: str) -> None:
    """Jobs of other pages that are running now: measurements run one at a time per server."""
    for job in jobs.running():
        if job.kind not in kinds:
            st.info(
                plain(f"Running on this server: {job.title} ({job.progress:.0%}, {job.message})."),
                icon=":material/hourglass_top:",
            )


def render_live_job(
    jobs: JobRunner,
    job_id: str | None,
    what: str,
    render_result: Callable[[Any], None],
    render_partial: Callable[[Any], None] | None = None,
) -> JobSnapshot | None:
    """Draw the job `job_id`; returns it (None if unknown) so pages can lay out around it.
    While it runs, `render_partial` draws what it has published so far."""
    job = jobs.get(job_id) if job_id else None
    if job is None:
        return None

    def draw(current: JobSnapshot) -> None:
        if current.state is JobState.RUNNING:
            st.progress(current.progress, text=plain(f"{current.title}: {current.message}"))
            if render_partial is not None and current.partial is not None:
                render_partial(current.partial)
        elif current.state is JobState.FAILED:
            st.error(plain(f"The {what} failed: {current.error}"), icon=":material/error:")
        else:
            render_result(current.result)

    poll_until_done(job, lambda: jobs.get(job.job_id), draw, every_s=1.0)
    return job
