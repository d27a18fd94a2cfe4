"""Long measurements (benchmarks, pitfall demos) as background jobs that pages can poll.

Timings are only meaningful one at a time, so a `JobRunner` runs at most one job per process;
a second request is refused with a message saying what is running.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from crewdash.base.errors import JobBusyError, describe_error

Progress = Callable[[float, str], None]


class JobProgress:
    """What a job's work is handed: call it with (fraction, message) for the progress bar, and
    `partial(value)` to publish a result so far (a benchmark's finished strategies), which every
    session sees before the job ends."""

    def __init__(self, runner: JobRunner, job_id: str) -> None:
        self._runner, self._job_id = runner, job_id

    def __call__(self, fraction: float, message: str) -> None:
        self._runner._set(self._job_id, progress=max(0.0, min(1.0, fraction)), message=message)

    def partial(self, value: Any) -> None:
        self._runner._set(self._job_id, partial=value)


Work = Callable[[JobProgress], Any]


class JobState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class JobSnapshot:
    job_id: str
    title: str
    state: JobState
    progress: float
    message: str
    started_at: float
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    kind: str = ""  # what started it ("bench", "limits", "pitfalls"): pages find theirs
    partial: Any = None  # the result so far, published by the work while it runs

    @property
    def done(self) -> bool:
        return self.state is not JobState.RUNNING


class JobRunner:
    """Runs one job at a time on a daemon thread; every method is thread-safe."""

    def __init__(self, keep: int = 50) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobSnapshot] = {}
        self._keep = keep

    def start(self, title: str, work: Work, kind: str = "") -> str:
        with self._lock:
            running = [j for j in self._jobs.values() if not j.done]
            if running:
                raise JobBusyError(
                    f"“{running[0].title}” is running ({running[0].progress:.0%}); measurements "
                    "run one at a time so they do not disturb each other — try again when it ends."
                )
            job_id = uuid.uuid4().hex[:10]
            self._jobs[job_id] = JobSnapshot(
                job_id, title, JobState.RUNNING, 0.0, "starting", time.time(), kind=kind
            )
            for old in list(self._jobs)[: max(0, len(self._jobs) - self._keep)]:
                self._jobs.pop(old)
        threading.Thread(
            target=self._run, args=(job_id, work), name=f"job-{job_id}", daemon=True
        ).start()
        return job_id

    def _set(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def _run(self, job_id: str, work: Work) -> None:
        try:
            result = work(JobProgress(self, job_id))
        except Exception as exc:  # noqa: BLE001 - shown to the user, never raised in a page
            self._set(
                job_id, state=JobState.FAILED, error=describe_error(exc), finished_at=time.time()
            )
        else:
            self._set(
                job_id,
                state=JobState.SUCCEEDED,
                result=result,
                progress=1.0,
                message="done",
                finished_at=time.time(),
            )

    def get(self, job_id: str) -> JobSnapshot | None:
        with self._lock:
            return self._jobs.get(job_id)

    def running(self) -> list[JobSnapshot]:
        """The jobs still running, whichever session started them (the process runs one)."""
        with self._lock:
            return [j for j in self._jobs.values() if not j.done]

    def latest(self, kind: str) -> JobSnapshot | None:
        """The most recently started job of `kind`, running or ended."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.kind == kind]
        return max(jobs, key=lambda j: j.started_at, default=None)

    def wait(self, job_id: str, timeout: float = 600.0) -> JobSnapshot:
        """Block until the job ends (CLI and tests only, never pages)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job.done or time.monotonic() > deadline:
                return job
            time.sleep(0.05)
