"""Shows a background measurement (benchmark, pitfall demos): progress while it runs, then its
result, polling only until it ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from crewdash.jobs import JobRunner, JobSnapshot, JobState
from ui.polling import poll_until_done


def render_live_job(
    jobs: JobRunner, job_id: str | None, what: str, render_result: Callable[[Any], None]
) -> JobSnapshot | None:
    """Draw the job `job_id`; returns it (None if unknown) so pages can lay out around it."""
    job = jobs.get(job_id) if job_id else None
    if job is None:
        return None

    def draw(current: JobSnapshot) -> None:
        if current.state is JobState.RUNNING:
            st.progress(current.progress, text=f"{current.title}: {current.message}")
        elif current.state is JobState.FAILED:
            st.error(f"The {what} failed: {current.error}", icon=":material/error:")
        else:
            render_result(current.result)

    poll_until_done(job, lambda: jobs.get(job.job_id), draw, every_s=1.0)
    return job
