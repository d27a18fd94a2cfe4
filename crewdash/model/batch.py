"""A batch of crew runs: the live, lock-protected record and the frozen snapshots readers get.

Writers are the runner (on its loop thread) and the event listener (on CrewAI's handler threads);
readers are pages, the API and the CLI on their own threads. Writers go through `Batch` methods,
which take one lock; readers only ever see immutable `BatchSnapshot`s.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, get_args

from crewdash.base.errors import UnknownBatchError


class CrewState(StrEnum):
    """Where one crew run is; every state after `running` is final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # the process died first; set when the store reopens
    BUDGET_EXCEEDED = "budget_exceeded"  # not started: the batch's budget would be passed

    @property
    def final(self) -> bool:
        return self not in (CrewState.QUEUED, CrewState.RUNNING)


BatchState = Literal[
    "running", "succeeded", "partial", "failed", "cancelled", "interrupted", "budget_exceeded"
]
BATCH_STATES: tuple[BatchState, ...] = get_args(BatchState)
# A batch in one of these was stopped from outside before its crews had all run: it "ended"
# rather than "finished", and its figures describe a cut-short run.
STOPPED_STATES: frozenset[BatchState] = frozenset({"cancelled", "interrupted", "budget_exceeded"})


def batch_state(counts: Mapping[str, int], finished_at: float | None) -> BatchState:
    """How a batch went, from its crews' states (`counts`: crews per `CrewState` value). The one
    rule for the page, History, the API, exports, the CLI and the store; first match wins:

    1. a crew still queued or running (or no crews, and no end written): `running`;
    2. every crew succeeded: `succeeded`;
    3. a crew was interrupted (its server stopped): `interrupted`, resumable;
    4. a crew was cancelled (by a user): `cancelled`;
    5. every crew that did not succeed stopped at the budget: `budget_exceeded`;
    6. no crew succeeded (failed or timed out): `failed`;
    7. otherwise, some succeeded and some did not: `partial`.

    A batch whose crews have all ended is over even if its end was never written.
    """
    live = counts.get(CrewState.QUEUED.value, 0) + counts.get(CrewState.RUNNING.value, 0)
    total = sum(counts.values())
    if live or (not total and finished_at is None):
        return "running"
    succeeded = counts.get(CrewState.SUCCEEDED.value, 0)
    if succeeded == total:
        return "succeeded"
    if counts.get(CrewState.INTERRUPTED.value):
        return "interrupted"
    if counts.get(CrewState.CANCELLED.value):
        return "cancelled"
    if succeeded + counts.get(CrewState.BUDGET_EXCEEDED.value, 0) == total:
        return "budget_exceeded"
    return "failed" if not succeeded else "partial"


def batch_speedup(
    sum_crew_s: float, wall_s: float | None, succeeded: int, done: bool
) -> float | None:
    """Sum of crew times over wall time: how much concurrency bought. None where it means
    nothing: no wall time yet, or a batch that is over with no crew that succeeded."""
    if not wall_s or wall_s <= 0 or (done and not succeeded):
        return None
    return sum_crew_s / wall_s


def topics_preview(topics: Sequence[str], shown: int = 3) -> str:
    """The first topics of a batch, for a one-line listing."""
    return ", ".join(topics[:shown]) + ("…" if len(topics) > shown else "")


@dataclass(frozen=True)
class TokenUsage:
    prompt: int = 0
    completion: int = 0
    total: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt + other.prompt,
            self.completion + other.completion,
            self.total + other.total,
        )

    @classmethod
    def from_mapping(cls, usage: Any) -> TokenUsage:
        """Read OpenAI-style usage from a dict or an object with the same attribute names."""
        if usage is None:
            return cls()

        def get(name: str) -> int:
            value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, 0)
            return int(value or 0)

        prompt, completion = get("prompt_tokens"), get("completion_tokens")
        return cls(prompt, completion, get("total_tokens") or prompt + completion)


@dataclass(frozen=True)
class Span:
    """One LLM call, tool use, task or Flow step of one crew, on the wall clock (epoch seconds)."""

    key: str
    kind: str = "llm"  # "llm", "tool", "retry", "task", "step" or "cache"
    name: str = ""  # the model, the tool's, task's or step's name
    started_at: float | None = None
    finished_at: float | None = None
    tokens: TokenUsage = field(default_factory=TokenUsage)
    error: str | None = None
    first_token_at: float | None = None  # a streamed LLM call's first text chunk

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def ttft(self) -> float | None:
        """Time to first token of a streamed LLM call: the wait before the model writes."""
        if self.started_at is None or self.first_token_at is None:
            return None
        return max(0.0, self.first_token_at - self.started_at)

    @property
    def generation_s(self) -> float | None:
        """From a streamed call's first token to its end: the time spent writing."""
        if self.first_token_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.first_token_at)

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second while the model wrote (None if too short to tell)."""
        gen = self.generation_s
        if not gen or gen < 0.01 or not self.tokens.completion:
            return None
        return self.tokens.completion / gen


def ended_spans(spans: Sequence[Span], at: float, why: str | None = None) -> tuple[Span, ...]:
    """A crew's spans as they stand when it ends at `at`: nothing of it runs past its end. An
    open span ends there (with `why` as its error, if given), a later end is brought back to
    it, and a span that began after it (a cancelled crew's thread going on) is dropped."""
    kept = []
    for span in spans:
        if span.started_at is not None and span.started_at > at:
            continue
        if span.finished_at is None or span.finished_at > at:
            first = span.first_token_at
            span = replace(
                span,
                finished_at=at,
                error=span.error or (why if span.finished_at is None else None),
                first_token_at=first if first is None or first <= at else None,
            )
        kept.append(span)
    return tuple(kept)


_CUT_OFF = {
    CrewState.FAILED: "failed",
    CrewState.CANCELLED: "was cancelled",
    CrewState.TIMED_OUT: "timed out",
    CrewState.INTERRUPTED: "was interrupted",
    CrewState.BUDGET_EXCEEDED: "was stopped by the budget",
}


def _cut_off(state: CrewState) -> str | None:
    """The error of a span still open when its crew ended in `state` (none for a success: its
    open spans are late events on their way)."""
    return f"cut off: the crew {_CUT_OFF[state]}" if state in _CUT_OFF else None


@dataclass(frozen=True)
class TaskResult:
    """One finished task of a crew run (of the crew itself, or of a crew a Flow step ran)."""

    key: str  # the task's id: one entry per task even when events arrive twice
    name: str
    output: str
    agent: str = ""
    restored: bool = False  # finished before an interruption, kept by a resume (not re-run)


def merge_tasks(first: Sequence[TaskResult], more: Sequence[TaskResult]) -> tuple[TaskResult, ...]:
    """`first`, then the tasks of `more` it does not have yet, in order."""
    seen = {t.key for t in first}
    return (*first, *(t for t in more if t.key not in seen))


@dataclass(frozen=True)
class CrewSnapshot:
    run_id: str
    index: int
    topic: str
    state: CrewState
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    result: str | None = None
    error: str | None = None
    step: str = "waiting for a slot"
    spans: tuple[Span, ...] = ()
    tokens: TokenUsage = field(default_factory=TokenUsage)
    agent_ids: tuple[str, ...] = ()
    inputs: Mapping[str, str] = field(default_factory=dict)  # this crew's kickoff inputs
    tasks: tuple[TaskResult, ...] = ()  # every finished task's output, in order
    files: tuple[str, ...] = ()  # files its tasks wrote, relative to its own folder
    # The model's text as it streams in (every call, blank-line separated): shown while the
    # crew runs, never stored and never taken as its result.
    live_text: str = ""

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or to now while running)."""
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    @property
    def streamed_calls(self) -> tuple[Span, ...]:
        return tuple(s for s in self.spans if s.kind == "llm" and s.first_token_at is not None)

    @property
    def ttft_s(self) -> float | None:
        """The crew's time to first token: its first streamed LLM call's."""
        calls = self.streamed_calls
        return calls[0].ttft if calls else None

    @property
    def generation_s(self) -> float | None:
        """Seconds the model spent writing this crew's streamed answers."""
        calls = [s.generation_s for s in self.streamed_calls if s.generation_s is not None]
        return sum(calls) if calls else None

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second over the crew's finished streamed calls."""
        done = [s for s in self.streamed_calls if s.generation_s is not None]
        gen = sum(s.generation_s or 0.0 for s in done)
        out = sum(s.tokens.completion for s in done)
        return out / gen if gen >= 0.01 and out else None


@dataclass(frozen=True)
class BatchSnapshot:
    batch_id: str
    blueprint: str
    model_label: str
    created_at: float
    crews: tuple[CrewSnapshot, ...]
    max_concurrency: int
    notes: tuple[str, ...] = ()
    model: str = ""  # the model's name, for pricing
    kind: str = "yaml"  # the blueprint's kind: yaml, crew, json_crew, flow or flow_yaml
    budget_usd: float | None = None  # the batch's budget (crewdash.engine.budget), if it has one
    budget_tokens: int | None = None
    created_by: str = ""  # who started it (`crewdash.model.people.Person.id`); "" before accounts
    created_by_name: str = ""

    @property
    def done(self) -> bool:
        """Every crew has ended: `state` is no longer `running`."""
        return all(c.state.final for c in self.crews)

    @property
    def finished_at(self) -> float | None:
        if not self.done:
            return None
        return max((c.finished_at or self.created_at for c in self.crews), default=self.created_at)

    @property
    def wall_s(self) -> float:
        """From submit to the last crew's finish (to now while running)."""
        return (self.finished_at or time.time()) - self.created_at

    @property
    def sum_crew_s(self) -> float:
        return sum(c.duration or 0.0 for c in self.crews)

    @property
    def slowest_crew_s(self) -> float:
        return max((c.duration or 0.0 for c in self.crews), default=0.0)

    @property
    def speedup(self) -> float | None:
        """Sum of crew times over wall time (`batch_speedup`: None where it means nothing)."""
        return batch_speedup(
            self.sum_crew_s, self.wall_s, self.count(CrewState.SUCCEEDED), self.done
        )

    @property
    def counts(self) -> dict[str, int]:
        """Crews per state, in the order the states first appear."""
        return {s.value: self.count(s) for s in dict.fromkeys(c.state for c in self.crews)}

    @property
    def state(self) -> BatchState:
        """How the batch went (or goes): `batch_state` of its crews, the one rule. Every reader
        (the page, History, the API's models, exports, the CLI) takes it from here, or from the
        history's summary row, which applies the same rule to its stored crew counts."""
        return batch_state(self.counts, self.finished_at)

    @property
    def tokens(self) -> TokenUsage:
        total = TokenUsage()
        for crew in self.crews:
            total = total + crew.tokens
        return total

    def count(self, state: CrewState) -> int:
        return sum(1 for c in self.crews if c.state is state)


class Batch:
    """The mutable record of one batch; every method is safe to call from any thread."""

    def __init__(
        self,
        batch_id: str,
        blueprint: str,
        topics: Sequence[str],
        *,
        model_label: str,
        max_concurrency: int,
        notes: Sequence[str] = (),
        run_ids: Sequence[str] | None = None,
        model: str = "",
        inputs: Sequence[Mapping[str, str]] | None = None,
        kind: str = "yaml",
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        created_by: str = "",
        created_by_name: str = "",
    ) -> None:
        now = time.time()
        ids = run_ids or [f"{batch_id}-{i}" for i in range(len(topics))]
        crew_inputs = list(inputs) if inputs is not None else [{} for _ in topics]
        self._lock = threading.Lock()
        self._version = 0
        self._cached: BatchSnapshot | None = None
        self._done = threading.Event()
        self._crews: dict[str, CrewSnapshot] = {
            run_id: CrewSnapshot(
                run_id=run_id,
                index=i,
                topic=t,
                state=CrewState.QUEUED,
                queued_at=now,
                inputs=dict(values),
            )
            for i, (run_id, t, values) in enumerate(zip(ids, topics, crew_inputs, strict=True))
        }
        self._spans: dict[str, dict[str, Span]] = {run_id: {} for run_id in ids}
        self._head = BatchSnapshot(
            batch_id=batch_id,
            blueprint=blueprint,
            model_label=model_label,
            created_at=now,
            crews=(),
            max_concurrency=max_concurrency,
            notes=tuple(notes),
            model=model,
            kind=kind,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
            created_by=created_by,
            created_by_name=created_by_name,
        )

    @property
    def batch_id(self) -> str:
        return self._head.batch_id

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(self._crews)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every crew is final (for CLI and API callers, never for pages)."""
        return self._done.wait(timeout)

    def _update(self, run_id: str, **changes: Any) -> None:
        with self._lock:
            crew = self._crews[run_id]
            if crew.state.final:
                return  # the first final state wins; late events do not reopen a crew
            self._crews[run_id] = replace(crew, **changes)
            self._version += 1

    def mark_running(self, run_id: str, agent_ids: Sequence[str] = ()) -> None:
        self._update(
            run_id,
            state=CrewState.RUNNING,
            started_at=time.time(),
            step="starting",
            agent_ids=tuple(agent_ids),
        )

    def ending(
        self,
        run_id: str,
        state: CrewState,
        *,
        result: str | None = None,
        error: str | None = None,
        tokens: TokenUsage | None = None,
        tasks: Sequence[TaskResult] | None = None,
        files: Sequence[str] = (),
    ) -> CrewSnapshot:
        """The crew as it would be if it ended now, not yet applied: callers persist it first.
        Tasks given here come first; tasks recorded from events are kept after them."""
        with self._lock:
            crew = self._crews[run_id]
        now = time.time()
        return replace(
            crew,
            state=state,
            finished_at=now,
            spans=ended_spans(crew.spans, now, _cut_off(state)),
            started_at=crew.started_at or now,
            result=result,
            error=error,
            step="done" if state is CrewState.SUCCEEDED else state.value,
            tokens=tokens or crew.tokens,
            tasks=merge_tasks(tasks or (), crew.tasks),
            files=tuple(files),
        )

    def end(self, ended: CrewSnapshot) -> bool:
        """Apply an ending from `ending`; False if the crew had already ended."""
        with self._lock:
            crew = self._crews[ended.run_id]
            if crew.state.final:
                return False
            # the spans as they are now (events came since `ending`) end with the crew too
            at = ended.finished_at or time.time()
            closed = ended_spans(crew.spans, at, _cut_off(ended.state))
            self._spans[ended.run_id] = {span.key: span for span in closed}
            self._crews[ended.run_id] = replace(
                ended, spans=closed, tasks=merge_tasks(ended.tasks, crew.tasks)
            )
            self._version += 1
            if all(c.state.final for c in self._crews.values()):
                self._done.set()
            return True

    def crew(self, run_id: str) -> CrewSnapshot:
        """One crew as it is now."""
        with self._lock:
            return self._crews[run_id]

    def adopt(self, remote: CrewSnapshot) -> None:
        """Take over the progress of a crew running elsewhere (a Ray worker): its state while
        running, start time, step and spans. Endings still go through `end`."""
        with self._lock:
            crew = self._crews[remote.run_id]
            if crew.state.final or remote.state.final:
                return
            self._spans[remote.run_id] = {span.key: span for span in remote.spans}
            self._crews[remote.run_id] = replace(
                crew,
                state=remote.state,
                started_at=remote.started_at,
                step=remote.step,
                spans=remote.spans,
                tokens=remote.tokens,
                agent_ids=remote.agent_ids,
                tasks=remote.tasks,
            )
            self._version += 1

    def mark_succeeded(self, run_id: str, result: str, tokens: TokenUsage | None) -> None:
        """Test hook: end a crew in one call (the runner builds `ending`s and calls `end`)."""
        self.end(self.ending(run_id, CrewState.SUCCEEDED, result=result, tokens=tokens))

    def mark_failed(self, run_id: str, error: str, state: CrewState = CrewState.FAILED) -> None:
        """Test hook: end a crew with an error in one call (see `mark_succeeded`)."""
        self.end(self.ending(run_id, state, error=error))

    def append_text(self, run_id: str, text: str) -> None:
        """Streamed text for a running crew (coalesced by the caller: a few times a second)."""
        with self._lock:
            crew = self._crews[run_id]
            if crew.state.final or not text:
                return
            self._crews[run_id] = replace(crew, live_text=crew.live_text + text)
            self._version += 1

    def reset_text(self, run_id: str) -> None:
        """Forget a crew's streamed text (its stream broke and it runs again without one)."""
        self._update(run_id, live_text="")

    def note_step(self, run_id: str, step: str) -> None:
        self._update(run_id, step=step)

    def record_task(self, run_id: str, task: TaskResult) -> None:
        """Keep one finished task's output (also after the crew ended: events come late)."""
        with self._lock:
            crew = self._crews[run_id]
            if any(t.key == task.key for t in crew.tasks):
                return
            self._crews[run_id] = replace(crew, tasks=(*crew.tasks, task))
            self._version += 1

    def record_span(self, run_id: str, key: str, change: Callable[[Span], Span]) -> None:
        """Apply `change` to one span; events may arrive out of order, so fields merge.

        `change` runs under the batch's lock: it must be a pure function of the span.
        """
        with self._lock:
            spans = self._spans[run_id]
            crew = self._crews[run_id]
            changed: tuple[Span, ...] = (change(spans.get(key, Span(key=key))),)
            if crew.state.final and crew.finished_at is not None:  # a late event: see ended_spans
                changed = ended_spans(changed, crew.finished_at)
            if not changed:
                return
            spans[key] = changed[0]
            ordered = tuple(sorted(spans.values(), key=lambda s: s.started_at or 0.0))
            tokens = TokenUsage()
            for span in ordered:
                if span.kind != "cache":  # a cached call's tokens were not spent
                    tokens = tokens + span.tokens
            if not crew.state.final:
                crew = replace(crew, tokens=tokens)
            self._crews[run_id] = replace(crew, spans=ordered)
            self._version += 1

    def snapshot(self) -> BatchSnapshot:
        """An immutable view; cheap when nothing changed since the last call."""
        with self._lock:
            if self._cached is None or self._cached_version != self._version:
                self._cached = replace(self._head, crews=tuple(self._crews.values()))
                self._cached_version = self._version
            return self._cached

    _cached_version = -1

    @classmethod
    def reopen(cls, snap: BatchSnapshot, again: Mapping[str, CrewSnapshot]) -> Batch:
        """A stored batch live again (a resume): the crews of `again` replace theirs, the others
        stay as they ended."""
        batch = cls(
            snap.batch_id,
            snap.blueprint,
            [c.topic for c in snap.crews],
            model_label=snap.model_label,
            max_concurrency=snap.max_concurrency,
            notes=snap.notes,
            run_ids=[c.run_id for c in snap.crews],
            model=snap.model,
            inputs=[c.inputs for c in snap.crews],
            kind=snap.kind,
            budget_usd=snap.budget_usd,
            budget_tokens=snap.budget_tokens,
            created_by=snap.created_by,
            created_by_name=snap.created_by_name,
        )
        batch._head = replace(batch._head, created_at=snap.created_at)
        for crew in snap.crews:
            now = again.get(crew.run_id, crew)
            batch._crews[crew.run_id] = now
            batch._spans[crew.run_id] = {s.key: s for s in now.spans}
        if all(c.state.final for c in batch._crews.values()):
            batch._done.set()
        return batch


BATCH_ID = re.compile(r"[0-9a-f]{12}")  # what the runner gives: uuid4().hex[:12]


def check_batch_id(batch_id: str) -> None:
    """UnknownBatchError for an id the runner could never have given, before it reaches a
    database (PostgreSQL refuses a NUL in a query parameter)."""
    if not BATCH_ID.fullmatch(batch_id):
        raise UnknownBatchError(batch_id)
