"""crewdash core: run many CrewAI crews concurrently and watch them live.

The face imports nothing of crewdash: `import crewdash.base.errors` loads errors alone. Its one
act is switching CrewAI's and OpenTelemetry's phone-home features off (this product runs
offline and keeps data local): it runs before any module of the package can import crewai,
which reads those variables itself. The public names in `__all__` load on first use; a test
keeps them from changing by accident.
"""

import os
from importlib import import_module
from typing import Any

QUIET_ENVIRONMENT = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_DISABLE_TRACKING": "true",
}


def _quiet_crewai() -> None:
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ[key] = value


_quiet_crewai()

# public name -> the module that holds it
_PUBLIC = {
    "Batch": "crewdash.model.batch",
    "BatchSnapshot": "crewdash.model.batch",
    "CrewSnapshot": "crewdash.model.batch",
    "CrewState": "crewdash.model.batch",
    "Span": "crewdash.model.batch",
    "TokenUsage": "crewdash.model.batch",
    "Blueprint": "crewdash.blueprints.base",
    "list_blueprints": "crewdash.blueprints.catalog",
    "load_blueprint": "crewdash.blueprints.catalog",
    "Budget": "crewdash.engine.budget",
    "ProviderLimits": "crewdash.providers.limits",
    "DemoLLMServer": "crewdash.demo.server",
    "LatencyProfile": "crewdash.demo.profiles",
    "BlueprintError": "crewdash.base.errors",
    "CrewdashError": "crewdash.base.errors",
    "SettingsError": "crewdash.base.errors",
    "TopicError": "crewdash.base.errors",
    "UnknownBatchError": "crewdash.base.errors",
    "LLMSettings": "crewdash.providers.llm",
    "build_llm": "crewdash.providers.llm",
    "Runner": "crewdash.engine.runner",
    "RunSettings": "crewdash.engine.runner",
    "Runtime": "crewdash.runtime",
    "Topics": "crewdash.model.topics",
    "parse_topics": "crewdash.model.topics",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'crewdash' has no attribute {name!r}")
