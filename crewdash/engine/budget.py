"""A batch's budget (US dollars or tokens): the estimate before Run, the spend while it runs, and
the checks that keep it: before each crew starts, and before each model call.

The estimate is per task: each task's agent and task texts with the crew's own inputs filled in,
the answers of earlier tasks its prompt carries, a second call for a tool, a manager's calls in a
hierarchical crew. It then learns: from finished crews of earlier batches of the same blueprint
and model (the store), and while the batch runs, from its own finished crews and model calls.
A Flow decides its steps as it runs: its estimate is a floor (one run of its largest crew) and
the budget is kept by the stop at the next model call.

Before a crew starts: the spend so far, plus what the running crews are still expected to spend,
plus the next crew's estimate; past the cap, no more crews start (they end `budget_exceeded`).
Before each model call of a running crew (a CrewAI `before_llm_call` hook, which refuses the call
before any request is sent, streamed or not, for every provider): the spend so far plus the calls
in flight and this one at the batch's average call; past the cap, the call is refused and the crew
ends `budget_exceeded` with its finished tasks kept. The cap is then passed by at most what the
calls in flight spend beyond the average call.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from crewai.hooks import HookAborted

from crewdash.base.errors import SettingsError
from crewdash.blueprints.base import PLACEHOLDER, BaseBlueprint
from crewdash.blueprints.shape import CrewShape, blueprint_shape
from crewdash.model.batch import BatchSnapshot, CrewSnapshot, CrewState, TokenUsage
from crewdash.model.pricing import Price, price_for

if TYPE_CHECKING:
    from crewdash.model.batch import Batch

# A blueprint whose shape is unknown: one call of this size per crew, until crews show their usage.
DEFAULT_CALL_PROMPT = 600
DEFAULT_ANSWER_TOKENS = 300  # an answer without max_tokens
FRAMING_TOKENS = 60  # CrewAI's own words around an agent's and a task's text, per call
CHARS_PER_TOKEN = 4
TOOL_CALL_TOKENS = 40  # the answer that asks for a tool
MAX_PAST_CREWS = 50  # finished crews of earlier batches the estimate learns from


def _fill(text: str, inputs: Mapping[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: str(inputs.get(m.group(1), m.group(0))), text)


def prior(
    shape: CrewShape | None, inputs: Mapping[str, str], answer: int
) -> tuple[int, TokenUsage]:
    """Calls and tokens of one crew before anything was learned: per task, its texts with the
    inputs filled in (characters / 4), CrewAI's framing, the earlier answers it carries, and
    `answer` tokens per answer."""
    if shape is None or not shape.tasks:
        extra = math.ceil(sum(len(str(v)) for v in inputs.values()) / CHARS_PER_TOKEN)
        prompt = DEFAULT_CALL_PROMPT + extra
        return 1, TokenUsage(prompt, answer, prompt + answer)
    calls = prompt = completion = 0
    for task in shape.tasks:
        base = (
            math.ceil(len(_fill(task.text, inputs)) / CHARS_PER_TOKEN)
            + FRAMING_TOKENS
            + task.context * answer
        )
        # a tool: the call asking for it, then the answer with the tool's result in its prompt
        steps = [(base, TOOL_CALL_TOKENS)] * (task.calls - 1) + [
            (base + (task.calls - 1) * TOOL_CALL_TOKENS, answer)
        ]
        if task.manager:  # the manager delegates the task, then reviews the answer
            steps = [(base, TOOL_CALL_TOKENS), *steps, (base + answer, answer)]
        calls += len(steps)
        prompt += sum(p for p, _ in steps)
        completion += sum(c for _, c in steps)
    return calls, TokenUsage(prompt, completion, prompt + completion)


@dataclass(frozen=True)
class PastCrew:
    """A finished crew the estimate learns from: its inputs and what it spent."""

    inputs: Mapping[str, str]
    tokens: TokenUsage


@dataclass(frozen=True)
class Budget:
    """At most `usd` dollars or `tokens` tokens for one batch (exactly one of them)."""

    usd: float | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.usd is None) == (self.tokens is None):
            raise SettingsError("a budget is either in USD or in tokens (one of them)")
        value = self.usd if self.usd is not None else self.tokens
        if value is None or not math.isfinite(value) or value <= 0:
            raise SettingsError("a budget must be more than 0 (leave it empty for no budget)")

    @property
    def cap(self) -> float:
        return float(self.usd if self.usd is not None else self.tokens or 0)

    def describe(self) -> str:
        return f"${self.usd:,.4g}" if self.usd is not None else f"{self.tokens:,} tokens"

    def amount(self, usage: TokenUsage, price: Price | None) -> float:
        """`usage` in this budget's unit."""
        return _amount(self, usage, price)

    def describe_amount(self, amount: float) -> str:
        return f"${amount:,.4f}" if self.usd is not None else f"{math.ceil(amount):,} tokens"

    def check_price(self, model: str) -> Price | None:
        """The model's price; a USD budget for a model without one is refused, never ignored."""
        price = price_for(model)
        if self.usd is not None and price is None:
            raise SettingsError(
                f"no price for model {model!r} in prices.yaml: a USD budget cannot be kept; "
                "use a token budget or add the price (CREWDASH_PRICES_FILE)"
            )
        return price


class BudgetTooSmall(SettingsError):
    """A budget that admits no crew at all: the batch is refused before it starts."""


@dataclass(frozen=True)
class BatchEstimate:
    """What a batch is expected to spend before it runs, and what that assumes."""

    crews: int
    calls_per_crew: int
    per_crew: TokenUsage
    cost_usd: float | None  # None: the model has no price
    basis: str = "from the blueprint's texts"  # what it assumed, in words
    steps_known: bool = True  # False: a Flow's steps are decided as it runs (a floor)
    learned_from: int = 0  # finished crews of earlier batches it learned from

    @property
    def calls(self) -> int:
        return self.crews * self.calls_per_crew

    @property
    def tokens(self) -> int:
        return self.crews * self.per_crew.total

    @property
    def per_call(self) -> TokenUsage:
        return _scaled(self.per_crew, 1 / max(1, self.calls_per_crew))

    def describe(self) -> str:
        """One line for the page, the API and the CLI."""
        cost = "no price for this model" if self.cost_usd is None else f"${self.cost_usd:,.4f}"
        floor = "at least " if not self.steps_known else "about "
        return (
            f"{floor}{self.calls:,} calls, {self.tokens:,} tokens "
            f"({self.per_crew.total:,} per crew), {cost}; {self.basis}"
        )


def _ratio(actual: int, expected: int) -> float:
    return min(20.0, max(0.02, actual / expected)) if expected > 0 and actual > 0 else 1.0


def estimate_batch(
    blueprint: BaseBlueprint,
    topics: Sequence[str],
    model: str,
    max_tokens: int | None = None,
    *,
    inputs: Sequence[Mapping[str, str]] | None = None,
    past: Sequence[PastCrew] = (),
) -> BatchEstimate:
    """Calls, tokens and cost of one crew per topic: per task from the blueprint's texts with each
    crew's `inputs` filled in, `max_tokens` (else a typical answer) and prices.yaml, scaled by
    what `past` crews of the same blueprint and model really spent against the same estimate."""
    answer = max_tokens or DEFAULT_ANSWER_TOKENS
    shape = blueprint_shape(blueprint)
    if inputs is None:
        inputs = [{**blueprint.inputs, blueprint.fan_out: t} for t in topics]
    priors = [prior(shape, i, answer) for i in inputs] or [prior(shape, {}, answer)]
    calls = max(c for c, _ in priors)
    total = sum((u for _, u in priors), TokenUsage())
    per_crew = _scaled(total, 1 / len(priors))
    if shape is None or not shape.tasks:
        basis = f"one call of ~{DEFAULT_CALL_PROMPT} prompt tokens per crew (tasks unknown)"
    else:
        tasks = len(shape.tasks)
        basis = f"{tasks} task{'s' * (tasks != 1)} from the blueprint's texts and the inputs"
        if shape.note:
            basis += f"; {shape.note}"
    basis += "" if max_tokens else f", answers of ~{answer} tokens guessed"
    learned = [p for p in past if p.tokens.total > 0][:MAX_PAST_CREWS]
    if learned:
        then = [prior(shape, p.inputs, answer)[1] for p in learned]
        spent = sum((p.tokens for p in learned), TokenUsage())
        expected = sum(then, TokenUsage())
        p_ratio = _ratio(spent.prompt, expected.prompt)
        c_ratio = _ratio(spent.completion, expected.completion)
        prompt = math.ceil(per_crew.prompt * p_ratio)
        completion = math.ceil(per_crew.completion * c_ratio)
        per_crew = TokenUsage(prompt, completion, prompt + completion)
        basis = (
            f"learned from {len(learned)} finished crew{'s' * (len(learned) != 1)} of earlier "
            f"batches of this blueprint and model (×{spent.total / max(1, expected.total):.2g} "
            f"of the estimate {basis})"
        )
    if shape is not None and not shape.steps_known:
        basis += "; a Flow's steps are decided as it runs: a floor, kept by the stop at the cap"
    price = price_for(model)
    cost = None if price is None else price.cost(per_crew) * len(priors)
    return BatchEstimate(
        len(priors),
        calls,
        per_crew,
        cost,
        basis=basis,
        steps_known=shape is None or shape.steps_known,
        learned_from=len(learned),
    )


def admits_none(budget: Budget, estimate: BatchEstimate, model: str) -> str | None:
    """Why `budget` admits no crew at all at `estimate` (the first would pass it), or None."""
    per_crew = budget.amount(estimate.per_crew, price_for(model))
    if per_crew <= budget.cap:
        return None
    return (
        f"the budget of {budget.describe()} admits no crew: one crew is estimated at "
        f"{budget.describe_amount(per_crew)} (estimate {estimate.describe()}); "
        "raise the budget, set Max tokens, or run fewer tasks"
    )


def crew_spend(crew: CrewSnapshot) -> TokenUsage:
    """A crew's usage: its total once it ended, its model calls' so far while it runs."""
    if crew.state.final and crew.tokens.total:
        return crew.tokens
    total = TokenUsage()
    for span in crew.spans:
        if span.kind == "llm":
            total = total + span.tokens
    return total


def batch_spend(snap: BatchSnapshot) -> TokenUsage:
    total = TokenUsage()
    for crew in snap.crews:
        total = total + crew_spend(crew)
    return total


def _amount(budget: Budget, usage: TokenUsage, price: Price | None) -> float:
    if budget.tokens is not None:
        return float(usage.total)
    return price.cost(usage) if price is not None else 0.0


def _scaled(usage: TokenUsage, times: float) -> TokenUsage:
    return TokenUsage(
        math.ceil(usage.prompt * times),
        math.ceil(usage.completion * times),
        math.ceil(usage.total * times),
    )


def _mean(usages: Sequence[TokenUsage]) -> TokenUsage:
    return _scaled(sum(usages, TokenUsage()), 1 / len(usages)) if usages else TokenUsage()


def _calls(snap: BatchSnapshot) -> Iterable[Any]:
    for crew in snap.crews:
        for span in crew.spans:
            if span.kind == "llm":
                yield crew, span


def finished_calls(snap: BatchSnapshot) -> list[TokenUsage]:
    """The usage of every model call of the batch that answered."""
    return [s.tokens for _, s in _calls(snap) if s.finished_at is not None and s.tokens.total]


@dataclass(frozen=True)
class BudgetStatus:
    """The spend of a batch against its budget, for the page, the API and the check."""

    budget: Budget
    spent: TokenUsage
    spent_amount: float  # in the budget's unit
    projected: float  # spent + what running crews and the next crew are expected to add
    per_crew: TokenUsage = field(default_factory=TokenUsage)  # what a crew is expected to spend now
    basis: str = ""  # where `per_crew` comes from

    @property
    def share(self) -> float:
        cap = self.budget.usd if self.budget.usd is not None else self.budget.tokens
        return self.spent_amount / cap if cap else 0.0

    def describe(self) -> str:
        if self.budget.usd is not None:
            return f"${self.spent_amount:,.4f} of {self.budget.describe()}"
        return f"{int(self.spent_amount):,} of {self.budget.describe()}"


def budget_status(
    budget: Budget,
    snap: BatchSnapshot,
    estimate: BatchEstimate | None = None,
    admitted: Collection[str] = (),
) -> BudgetStatus:
    """Spend so far, and the projection if one more crew started now (`admitted`: crews let
    through that may not show as running yet). A crew is expected to spend what this batch's
    finished crews spent on average; before one finished, the estimate's calls at the average
    of this batch's finished calls; before any call answered, the estimate."""
    price = price_for(snap.model)
    spent = batch_spend(snap)
    finished = [c for c in snap.crews if c.state is CrewState.SUCCEEDED and crew_spend(c).total > 0]
    calls = finished_calls(snap)
    if finished:
        per_crew = _mean([crew_spend(c) for c in finished])
        basis = f"the average of this batch's {len(finished)} finished crew(s)"
    elif calls and estimate is not None:
        per_crew = _scaled(_mean(calls), estimate.calls_per_crew)
        basis = f"{estimate.calls_per_crew} call(s) at the average of {len(calls)} finished"
    else:
        per_crew = estimate.per_crew if estimate else TokenUsage()
        basis = estimate.basis if estimate else ""
    still = TokenUsage()
    for crew in snap.crews:
        if crew.state is CrewState.RUNNING or (crew.run_id in admitted and not crew.state.final):
            used = crew_spend(crew)
            still = still + TokenUsage(
                max(0, per_crew.prompt - used.prompt),
                max(0, per_crew.completion - used.completion),
                max(0, per_crew.total - used.total),
            )
    projected = _amount(budget, spent + still + per_crew, price)
    return BudgetStatus(
        budget, spent, _amount(budget, spent, price), projected, per_crew=per_crew, basis=basis
    )


def over_budget(
    budget: Budget,
    snap: BatchSnapshot,
    estimate: BatchEstimate | None = None,
    admitted: Collection[str] = (),
) -> str | None:
    """Why the next crew may not start (it would cross the budget), or None."""
    status = budget_status(budget, snap, estimate, admitted)
    cap = budget.usd if budget.usd is not None else budget.tokens
    if cap is not None and status.projected > cap:
        return (
            f"budget exceeded: {status.describe()} spent; the next crew would pass it (not started)"
        )
    return None


# --- the stop at the next model call ---------------------------------------------------------


class BudgetStop(HookAborted):
    """Raised before a model call that would pass the batch's budget: the call is never sent."""


@dataclass
class BudgetGate:
    """The budget of one running batch, asked before each of its crews' model calls."""

    budget: Budget
    estimate: BatchEstimate
    model: str
    stopped: str | None = None  # why calls are refused (once one is, every later one is)
    stopped_runs: set[str] = field(default_factory=set)  # crews refused a call
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, batch: Batch, run_id: str) -> str | None:
        """Why the next call of `run_id` may not be sent, or None. The spend so far, plus the
        calls in flight and this one at the batch's average call, must stay within the cap."""
        with self._lock:
            if self.stopped is None:
                snap = batch.snapshot()
                done = finished_calls(snap)
                per_call = _mean(done) if done else self.estimate.per_call
                flying = sum(
                    1
                    for crew, span in _calls(snap)
                    if not crew.state.final and span.finished_at is None and span.error is None
                )
                spent = batch_spend(snap)
                price = price_for(self.model)
                projected = self.budget.amount(spent + _scaled(per_call, flying + 1), price)
                if projected > self.budget.cap:
                    paid = self.budget.describe_amount(self.budget.amount(spent, price))
                    self.stopped = (
                        f"budget exceeded: {paid} of {self.budget.describe()} spent; "
                        "stopped before its next model call"
                    )
            if self.stopped is not None:
                self.stopped_runs.add(run_id)
            return self.stopped

    def refused(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self.stopped_runs


_gates: dict[str, BudgetGate] = {}
_gates_lock = threading.Lock()
_hook_installed = False


def open_gate(batch_id: str, gate: BudgetGate) -> None:
    """Keep `gate` for the batch's model calls (in this process) until `close_gate`."""
    install_budget_hook()
    with _gates_lock:
        _gates[batch_id] = gate


def close_gate(batch_id: str) -> None:
    with _gates_lock:
        _gates.pop(batch_id, None)


def gate_of(batch_id: str) -> BudgetGate | None:
    with _gates_lock:
        return _gates.get(batch_id)


def _before_model_call(context: Any) -> None:
    """CrewAI's `before_llm_call` hook: refuse a call of a crew whose batch is at its cap."""
    from crewdash.engine.events import current_run, event_router

    ref = current_run.get()
    if ref is None:  # a thread that did not inherit the crew's context: find it by its agent
        agent_id = getattr(getattr(context, "agent", None), "id", None)
        ref = event_router().resolve(SimpleNamespace(agent_id=agent_id)) if agent_id else None
    if ref is None:
        return None
    batch, run_id = ref
    gate = gate_of(batch.batch_id)
    if gate is not None and (why := gate.check(batch, run_id)) is not None:
        raise BudgetStop(why, source="crewdash budget")
    return None


def install_budget_hook() -> None:
    """Register the hook once per process, before any crew (executors copy the hooks)."""
    global _hook_installed
    with _gates_lock:
        if _hook_installed:
            return
        from crewai.hooks import register_before_llm_call_hook

        register_before_llm_call_hook(_before_model_call)
        _hook_installed = True


def stopped_by_budget(exc: BaseException) -> BudgetStop | None:
    """The budget stop behind a crew's failure, if that is what ended it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BudgetStop):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
