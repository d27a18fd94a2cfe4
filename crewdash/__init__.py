"""crewdash core: run many CrewAI crews concurrently and watch them live.

The public surface is listed in `__all__`; a test keeps it from changing by accident.
"""

from crewdash import locks
from crewdash.config import silence_telemetry

silence_telemetry()  # before crewai is imported by anything below
locks.install()

from crewdash import run_context

run_context.install()  # the run's model and output folder per crew (imports paid at start)

from crewdash.batch import Batch, BatchSnapshot, CrewSnapshot, CrewState, Span, TokenUsage
from crewdash.blueprints import Blueprint, list_blueprints, load_blueprint
from crewdash.budget import Budget
from crewdash.demo_limits import ProviderLimits
from crewdash.demo_llm import DemoLLMServer, LatencyProfile
from crewdash.errors import (
    BlueprintError,
    CrewdashError,
    SettingsError,
    TopicError,
    UnknownBatchError,
)
from crewdash.llm import LLMSettings, build_llm
from crewdash.runner import Runner, RunSettings
from crewdash.runtime import Runtime
from crewdash.topics import Topics, parse_topics

__all__ = [
    "Batch",
    "BatchSnapshot",
    "Blueprint",
    "BlueprintError",
    "Budget",
    "CrewSnapshot",
    "CrewState",
    "CrewdashError",
    "DemoLLMServer",
    "LLMSettings",
    "LatencyProfile",
    "ProviderLimits",
    "RunSettings",
    "Runner",
    "Runtime",
    "SettingsError",
    "Span",
    "TokenUsage",
    "TopicError",
    "Topics",
    "UnknownBatchError",
    "build_llm",
    "list_blueprints",
    "load_blueprint",
    "parse_topics",
]
