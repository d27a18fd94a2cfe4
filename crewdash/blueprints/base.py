"""Blueprints: what one crew per topic is built from.

A folder on the search path (`crews_path`, searched by `catalog`) is a blueprint when it holds
CrewAI's YAML convention (`<name>/config/{agents,tasks}.yaml`, read here) or a CrewAI project
(`<name>/pyproject.toml` with `[tool.crewai]`, loaded by `crewdash.blueprints.projects`).
Every kind offers the same interface
(`BaseBlueprint`): inputs with their defaults, the fan-out input, the agents that pin their own
model, and a picklable recipe that builds a *fresh* crew or flow on every call, so concurrent
crews never share an Agent (the tutorial's first pitfall).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from crewai import LLM, Agent, Crew, Process, Task

from crewdash.base.errors import BlueprintError
from crewdash.base.settings import process_settings

if TYPE_CHECKING:
    from crewdash.providers.llm import LLMSettings

# The same pattern CrewAI uses to find `{placeholders}` it will fill from the inputs.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)}")
FAN_OUT_DEFAULT = "topic"
_AGENT_REQUIRED = ("role", "goal", "backstory")
_AGENT_OPTIONAL = ("allow_delegation", "max_iter", "max_rpm", "max_execution_time")
# Tools a blueprint may name (agents.yaml `tools: [...]`): module, class, the key it needs.
TOOLS = {"serper_dev": ("crewai_tools", "SerperDevTool", "SERPER_API_KEY")}


def _key(variable: str) -> str | None:
    return process_settings(variable).secret(variable)


def missing_tool_keys(names: Iterable[str]) -> list[tuple[str, str]]:
    """(tool, environment variable) for each named tool whose key is not set."""
    return [(n, TOOLS[n][2]) for n in names if not _key(TOOLS[n][2])]


def _tools(names: Iterable[str]) -> list[Any]:
    """Instances of the named tools that can run here; a tool without its key is left out."""
    built = []
    for name in names:
        module, cls, key = TOOLS[name]
        if _key(key):
            built.append(getattr(importlib.import_module(module), cls)())
    return built


_TASK_REQUIRED = ("description", "expected_output", "agent")


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(_placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_placeholders(v) for v in value)) if value else set()
    return set()


def read_yaml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BlueprintError(f"{path.parent.parent.name}: missing {path.name}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise BlueprintError(f"{path.name}{where}: {problem}") from None
    if not isinstance(data, dict) or not data:
        raise BlueprintError(f"{path.name}: expected a mapping of names to settings")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise BlueprintError(f"{path.name}: entry {key!r} must be a mapping of settings")
    return data


@dataclass(frozen=True)
class PinnedAgent:
    """An agent that names its own model: it keeps it, whatever the run's model is."""

    role: str
    model: str
    where: str = ""  # the inner crew or Flow step it belongs to, if not the blueprint itself


class BaseBlueprint:
    """What every kind of blueprint offers the runner, the pages, the API and the CLI."""

    name: str
    kind: str = "yaml"

    @property
    def inputs(self) -> Mapping[str, str]:
        """Every input by name, with its default ("" when it has none), in display order."""
        raise NotImplementedError

    @property
    def required(self) -> frozenset[str]:
        """The inputs that must have a non-empty value at kickoff."""
        raise NotImplementedError

    @property
    def passes_defaults(self) -> bool:
        """Whether defaults are sent as kickoff inputs (crews) or already in place (flows)."""
        return True

    @property
    def pinned_agents(self) -> tuple[PinnedAgent, ...]:
        return ()

    @property
    def tool_names(self) -> list[str]:
        return []

    @property
    def placeholders(self) -> frozenset[str]:
        """Every input name (for a crew, every `{placeholder}` it needs at kickoff)."""
        return frozenset(self.inputs)

    @property
    def fan_out(self) -> str:
        """The input each topic fills: `topic` when there is one, else the first by name."""
        names = sorted(self.inputs)
        if FAN_OUT_DEFAULT in self.inputs or not names:
            return FAN_OUT_DEFAULT
        return names[0]

    def inputs_for(
        self, topic: str, extra: Mapping[str, str] | None = None, fan_out: str | None = None
    ) -> dict[str, str]:
        """Kickoff inputs for one topic: the blueprint's defaults, then `extra` (unknown names
        ignored), then the topic in the fan-out input. Refuses an input left without a value."""
        target = fan_out or self.fan_out
        if target not in self.inputs and self.inputs:
            raise BlueprintError(f"blueprint {self.name!r} has no placeholder {{{target}}}")
        inputs = {k: v for k, v in self.inputs.items() if v and self.passes_defaults}
        for key, value in (extra or {}).items():
            if key in self.inputs and key != target and value.strip():
                if self.passes_defaults or value != self.inputs[key]:
                    inputs[key] = value
        inputs[target] = topic
        missing = sorted(n for n in self.required if not inputs.get(n, "").strip())
        if missing:
            names = ", ".join("{" + m + "}" for m in missing)
            raise BlueprintError(f"blueprint {self.name!r} needs a value for {names}")
        return inputs

    def recipe(self, llm: LLMSettings, demo_url: str | None) -> Callable[[], Any]:
        """A picklable callable that returns a fresh crew (or flow) for one topic."""
        raise NotImplementedError


def _build_yaml(blueprint: Blueprint, llm: LLMSettings, demo_url: str | None) -> Crew:
    from crewdash.providers.llm import build_llm

    return blueprint.build(build_llm(llm, demo_url))


@dataclass(frozen=True)
class Blueprint(BaseBlueprint):
    """A validated crew design in CrewAI's YAML convention: agents and tasks by name, in file
    order (kind `yaml`)."""

    name: str
    agents: Mapping[str, Mapping[str, Any]]
    tasks: Mapping[str, Mapping[str, Any]]

    @property
    def inputs(self) -> Mapping[str, str]:
        names = _placeholders(dict(self.agents)) | _placeholders(dict(self.tasks))
        return dict.fromkeys(sorted(names), "")

    @property
    def required(self) -> frozenset[str]:
        return frozenset(self.inputs)

    @property
    def tool_names(self) -> list[str]:
        return sorted({t for cfg in self.agents.values() for t in cfg.get("tools", [])})

    def recipe(self, llm: LLMSettings, demo_url: str | None) -> Callable[[], Crew]:
        return partial(_build_yaml, self, llm, demo_url)

    def build(self, llm: LLM | str) -> Crew:
        """A fresh crew: new agents and tasks every call, never shared between crews."""
        agents = {
            key: Agent(
                **{k: cfg[k] for k in _AGENT_REQUIRED},
                **{k: cfg[k] for k in _AGENT_OPTIONAL if k in cfg},
                tools=_tools(cfg.get("tools", [])),
                llm=llm,
                verbose=False,
            )
            for key, cfg in self.agents.items()
        }
        tasks: dict[str, Task] = {}
        for key, cfg in self.tasks.items():
            tasks[key] = Task(
                name=key,
                description=cfg["description"],
                expected_output=cfg["expected_output"],
                agent=agents[cfg["agent"]],
                context=[tasks[c] for c in cfg.get("context", [])] or None,
            )
        return Crew(
            agents=list(agents.values()),
            tasks=list(tasks.values()),
            process=Process.sequential,
            verbose=False,
        )


def validate_blueprint(name: str, agents: dict[str, Any], tasks: dict[str, Any]) -> None:
    for key, cfg in agents.items():
        tools = cfg.get("tools", [])
        if not isinstance(tools, list) or any(t not in TOOLS for t in tools):
            raise BlueprintError(
                f"{name}: agent {key!r} tools must be a list of: {', '.join(TOOLS)}"
            )
        missing = [f for f in _AGENT_REQUIRED if not isinstance(cfg.get(f), str) or not cfg[f]]
        if missing:
            raise BlueprintError(f"{name}: agent {key!r} needs {', '.join(missing)}")
    seen: set[str] = set()
    for key, cfg in tasks.items():
        missing = [f for f in _TASK_REQUIRED if not isinstance(cfg.get(f), str) or not cfg[f]]
        if missing:
            raise BlueprintError(f"{name}: task {key!r} needs {', '.join(missing)}")
        if cfg["agent"] not in agents:
            raise BlueprintError(f"{name}: task {key!r} names unknown agent {cfg['agent']!r}")
        context = cfg.get("context", [])
        if not isinstance(context, list) or any(c not in seen for c in context):
            raise BlueprintError(f"{name}: task {key!r} context must list tasks defined above it")
        seen.add(key)
