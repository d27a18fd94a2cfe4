"""What a batch runs: its settings (the model, how many crews at once, timeout, budget, cache)
and, when its crews differ, one plan per crew. Plain values the runner, the checkpoints and
resume pass around and serialise."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from crewai import Crew

from crewdash.base.config import DEFAULT_MAX_CONCURRENCY
from crewdash.base.errors import SettingsError
from crewdash.blueprints.base import BaseBlueprint
from crewdash.engine.budget import Budget
from crewdash.providers.llm import LLMSettings


@dataclass(frozen=True)
class RunSettings:
    """Per-batch choices: the model and how many of this batch's crews may run at once."""

    llm: LLMSettings = field(default_factory=LLMSettings)
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    crew_timeout_s: float | None = None  # None: no limit beyond the LLM's own timeout
    budget: Budget | None = None  # at it, no more crews start nor model calls go (budget_exceeded)
    response_cache: bool = False  # answer identical model calls from the history database

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrency <= 1000:
            raise SettingsError("max concurrent crews must be between 1 and 1000")
        if self.crew_timeout_s is not None and not 0 < self.crew_timeout_s <= 86_400:
            raise SettingsError("the per-crew timeout must be between 0 and 86400 seconds")

    def to_dict(self) -> dict[str, Any]:
        """These settings as JSON-ready values, every field and the budget too, for a batch's
        record (`checkpoints.record_batch`), read back by `from_dict` when it resumes. Never the
        model's API key: a resume takes the server's own from its environment again."""
        return {
            "llm": self.llm.to_dict(),
            "max_concurrency": self.max_concurrency,
            "crew_timeout_s": self.crew_timeout_s,
            "budget": None if self.budget is None else asdict(self.budget),
            "response_cache": self.response_cache,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSettings:
        """Settings written by `to_dict`; a field a batch recorded before it existed (the
        budget, the response cache) is at its default."""
        budget = data.get("budget")
        return cls(
            llm=LLMSettings.from_dict(data["llm"]),
            max_concurrency=data["max_concurrency"],
            crew_timeout_s=data["crew_timeout_s"],
            budget=Budget(**budget) if budget else None,
            response_cache=data.get("response_cache", False),
        )


CrewFactory = Callable[[BaseBlueprint, str, RunSettings], Crew]


@dataclass(frozen=True)
class CrewPlan:
    """One crew of a batch whose crews differ (an experiment's topic × variant): its own
    blueprint, model settings and kickoff inputs."""

    topic: str
    blueprint: BaseBlueprint
    settings: RunSettings
    inputs: dict[str, str]
