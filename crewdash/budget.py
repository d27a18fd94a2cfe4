"""A batch's budget (US dollars or tokens): the estimate before Run, the spend while it runs, and
the check that stops admitting crews before the next one would cross it.

The check runs before each crew starts: the spend so far (finished crews' usage, running crews'
calls so far), plus what the running crews are still expected to spend, plus the next crew's
estimate. Past the cap, the batch admits no more crews; its unstarted crews end
`budget_exceeded` and running crews finish (so the cap can be passed by at most what the
running crews spend beyond their estimate). A crew's estimate is the average of this batch's
finished crews once there is one, else the blueprint's (`estimate_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crewdash.batch import BatchSnapshot, CrewSnapshot, CrewState, TokenUsage
from crewdash.blueprints import BaseBlueprint, Blueprint
from crewdash.errors import SettingsError
from crewdash.pricing import Price, price_for

# A blueprint whose prompts are in Python (a project, a Flow): one call of this size per crew,
# until the batch's own crews show their real usage.
DEFAULT_CALL_PROMPT = 600
DEFAULT_ANSWER_TOKENS = 300  # an answer without max_tokens
FRAMING_TOKENS = 60  # CrewAI's own words around an agent's and a task's text, per call


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

    def describe(self) -> str:
        return f"${self.usd:,.4g}" if self.usd is not None else f"{self.tokens:,} tokens"

    def check_price(self, model: str) -> Price | None:
        """The model's price; a USD budget for a model without one is refused, never ignored."""
        price = price_for(model)
        if self.usd is not None and price is None:
            raise SettingsError(
                f"no price for model {model!r} in prices.yaml: a USD budget cannot be kept; "
                "use a token budget or add the price (CREWDASH_PRICES_FILE)"
            )
        return price


@dataclass(frozen=True)
class BatchEstimate:
    """What a batch is expected to spend before it runs."""

    crews: int
    calls_per_crew: int
    per_crew: TokenUsage
    cost_usd: float | None  # None: the model has no price

    @property
    def calls(self) -> int:
        return self.crews * self.calls_per_crew

    @property
    def tokens(self) -> int:
        return self.crews * self.per_crew.total


def _text(config: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    return "\n".join(str(config.get(k, "")) for k in keys)


def estimate_batch(
    blueprint: BaseBlueprint,
    topics: Sequence[str],
    model: str,
    max_tokens: int | None = None,
) -> BatchEstimate:
    """Calls, tokens and cost of one crew per topic, from the blueprint's texts (one call per
    task; characters / 4 tokens), `max_tokens` (else a typical answer) and prices.yaml."""
    answer = max_tokens or DEFAULT_ANSWER_TOKENS
    if isinstance(blueprint, Blueprint) and blueprint.tasks:
        agents = "\n".join(
            _text(a, ("role", "goal", "backstory")) for a in blueprint.agents.values()
        )
        calls = len(blueprint.tasks)
        task_text = sum(
            len(_text(t, ("description", "expected_output"))) for t in blueprint.tasks.values()
        )
        topic_chars = sum(len(t) for t in topics) / max(1, len(topics))
        prompt = math.ceil(
            (len(agents) / max(1, len(blueprint.agents)) * calls + task_text) / 4
            + calls * (FRAMING_TOKENS + topic_chars / 4)
        )
    else:
        calls, prompt = 1, DEFAULT_CALL_PROMPT
    per_crew = TokenUsage(prompt, calls * answer, prompt + calls * answer)
    price = price_for(model)
    cost = None if price is None else price.cost(per_crew) * len(topics)
    return BatchEstimate(len(topics), calls, per_crew, cost)


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


@dataclass(frozen=True)
class BudgetStatus:
    """The spend of a batch against its budget, for the page, the API and the check."""

    budget: Budget
    spent: TokenUsage
    spent_amount: float  # in the budget's unit
    projected: float  # spent + what running crews and the next crew are expected to add

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
    through that may not show as running yet)."""
    price = price_for(snap.model)
    spent = batch_spend(snap)
    finished = [c for c in snap.crews if c.state is CrewState.SUCCEEDED and crew_spend(c).total > 0]
    if finished:
        per_crew = _scaled(sum((crew_spend(c) for c in finished), TokenUsage()), 1 / len(finished))
    else:
        per_crew = estimate.per_crew if estimate else TokenUsage()
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
    return BudgetStatus(budget, spent, _amount(budget, spent, price), projected)


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
