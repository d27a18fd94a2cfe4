"""Shows a background measurement (benchmark, pitfall demos): progress while it runs, then its
result, polling only until it ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from crewdash.jobs import JobRunner, JobSnapshot, JobState


def render_live_job(
    jobs: JobRunner, job_id: str | None, what: str, render_result: Callable[[Any], None]
) -> JobSnapshot | None:
    """Draw the job `job_id`; returns it (None if unknown) so pages can lay out around it."""
    job = jobs.get(job_id) if job_id else None
    if job is None:
        return None
    polling = not job.done

    @st.fragment(run_every=1.0 if polling else None)
    def live_job() -> None:
        current = jobs.get(job.job_id)
        if current is None:
            return
        if current.state is JobState.RUNNING:
            st.progress(current.progress, text=f"{current.title}: {current.message}")
        elif current.state is JobState.FAILED:
            st.error(f"The {what} failed: {current.error}", icon=":material/error:")
        else:
            render_result(current.result)
        if polling and current.done:
            st.rerun()  # once more without the timer, so polling stops

    live_job()
    return job
