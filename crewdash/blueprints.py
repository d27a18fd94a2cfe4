"""Crew blueprints in CrewAI's YAML convention: `crews/<name>/config/{agents,tasks}.yaml`.

A blueprint is read once and builds a *fresh* crew (new Agent and Task objects) on every call, so
concurrent crews never share an Agent (the tutorial's first pitfall).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from crewai import LLM, Agent, Crew, Process, Task

from crewdash.config import CREWS_DIR
from crewdash.errors import BlueprintError

# The same pattern CrewAI uses to find `{placeholders}` it will fill from the inputs.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)}")
FAN_OUT_DEFAULT = "topic"
_AGENT_REQUIRED = ("role", "goal", "backstory")
_AGENT_OPTIONAL = ("allow_delegation", "max_iter", "max_rpm", "max_execution_time")
# Tools a blueprint may name (agents.yaml `tools: [...]`): module, class, the key it needs.
TOOLS = {"serper_dev": ("crewai_tools", "SerperDevTool", "SERPER_API_KEY")}


def missing_tool_keys(names: Iterable[str]) -> list[tuple[str, str]]:
    """(tool, environment variable) for each named tool whose key is not set."""
    return [(n, TOOLS[n][2]) for n in names if not os.environ.get(TOOLS[n][2])]


def _tools(names: Iterable[str]) -> list[Any]:
    """Instances of the named tools that can run here; a tool without its key is left out."""
    built = []
    for name in names:
        module, cls, key = TOOLS[name]
        if os.environ.get(key):
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


def _read_yaml(path: Path) -> dict[str, dict[str, Any]]:
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
class Blueprint:
    """A validated crew design: agents and tasks by name, in file order."""

    name: str
    agents: Mapping[str, Mapping[str, Any]]
    tasks: Mapping[str, Mapping[str, Any]]

    @property
    def placeholders(self) -> frozenset[str]:
        """Every `{input}` the crew needs at kickoff."""
        return frozenset(_placeholders(dict(self.agents)) | _placeholders(dict(self.tasks)))

    @property
    def fan_out(self) -> str:
        """The placeholder that each topic fills."""
        names = sorted(self.placeholders)
        if FAN_OUT_DEFAULT in self.placeholders or not names:
            return FAN_OUT_DEFAULT
        return names[0]

    @property
    def tool_names(self) -> list[str]:
        return sorted({t for cfg in self.agents.values() for t in cfg.get("tools", [])})

    def inputs_for(
        self, topic: str, extra: Mapping[str, str] | None = None, fan_out: str | None = None
    ) -> dict[str, str]:
        """Kickoff inputs for one topic; refuses a placeholder left without a value."""
        inputs = {k: v for k, v in (extra or {}).items() if k in self.placeholders}
        target = fan_out or self.fan_out
        if target not in self.placeholders and self.placeholders:
            raise BlueprintError(f"blueprint {self.name!r} has no placeholder {{{target}}}")
        inputs[target] = topic
        missing = sorted(self.placeholders - inputs.keys())
        if missing:
            names = ", ".join("{" + m + "}" for m in missing)
            raise BlueprintError(f"blueprint {self.name!r} needs a value for {names}")
        return inputs

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


def _validate(name: str, agents: dict[str, Any], tasks: dict[str, Any]) -> None:
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


def blueprints_dir() -> Path:
    """Where blueprints live: `CREWDASH_CREWS_DIR`, read at each call, else `crews/`."""
    return Path(os.environ.get("CREWDASH_CREWS_DIR") or CREWS_DIR)


def load_blueprint(name: str, crews_dir: Path | None = None) -> Blueprint:
    """Read and check `crews/<name>/config/`; every problem is a `BlueprintError` in plain words."""
    crews_dir = crews_dir or blueprints_dir()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise BlueprintError(f"invalid blueprint name {name!r}")
    config = crews_dir / name / "config"
    if not config.is_dir():
        raise BlueprintError(f"no blueprint named {name!r} in {crews_dir}")
    agents = _read_yaml(config / "agents.yaml")
    tasks = _read_yaml(config / "tasks.yaml")
    _validate(name, agents, tasks)
    return Blueprint(name=name, agents=agents, tasks=tasks)


def list_blueprints(crews_dir: Path | None = None) -> list[str]:
    """Names of the folders under `crews/` that look like blueprints."""
    crews_dir = crews_dir or blueprints_dir()
    if not crews_dir.is_dir():
        return []
    return sorted(p.name for p in crews_dir.iterdir() if (p / "config" / "tasks.yaml").is_file())
