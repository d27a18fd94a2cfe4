"""Crew blueprints in CrewAI's YAML convention: `crews/<name>/config/{agents,tasks}.yaml`.

A blueprint is read once and builds a *fresh* crew (new Agent and Task objects) on every call, so
concurrent crews never share an Agent (the tutorial's first pitfall).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from crewai import LLM, Agent, Crew, Process, Task

from crewdash.config import CREWS_DIR, crews_path
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


CrewsDirs = Path | Sequence[Path] | None


def _folders(crews_dir: CrewsDirs) -> list[Path]:
    if crews_dir is None:
        return crews_path()
    return [crews_dir] if isinstance(crews_dir, Path) else list(crews_dir)


def _same_files(homes: Sequence[Path]) -> bool:
    """Whether every copy of a blueprint has the same files (a copy of a built-in is no clash)."""

    def files(config: Path) -> tuple[bytes | None, ...]:
        return tuple(
            (config / f).read_bytes() if (config / f).is_file() else None
            for f in ("agents.yaml", "tasks.yaml")
        )

    first = files(homes[0])
    return all(files(h) == first for h in homes[1:])


def load_blueprint(name: str, crews_dir: CrewsDirs = None) -> Blueprint:
    """Read and check `<folder>/<name>/config/` from the search path (`crews_path`, or the
    folders given); every problem is a `BlueprintError` in plain words. A name found in two
    folders with different files is refused, naming both: neither silently wins."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise BlueprintError(f"invalid blueprint name {name!r}")
    folders = _folders(crews_dir)
    homes = [f / name / "config" for f in folders if (f / name / "config").is_dir()]
    if not homes:
        where = ", ".join(str(f) for f in folders)
        raise BlueprintError(f"no blueprint named {name!r} in {where}")
    if not _same_files(homes):
        where = " and ".join(str(h.parent.parent) for h in homes)
        raise BlueprintError(
            f"two different blueprints are named {name!r}, in {where}: rename one of them"
        )
    agents = _read_yaml(homes[0] / "agents.yaml")
    tasks = _read_yaml(homes[0] / "tasks.yaml")
    _validate(name, agents, tasks)
    return Blueprint(name=name, agents=agents, tasks=tasks)


def builtin_blueprint(name: str) -> Blueprint:
    """A blueprint shipped with crewdash (the warm-up's and benchmarks' `timing`), from the
    built-in folder only: a user's folder can neither hide it nor clash with it."""
    return load_blueprint(name, CREWS_DIR)


def list_blueprints(crews_dir: CrewsDirs = None) -> list[str]:
    """Names of the folders on the search path that look like blueprints (a name in two
    folders is listed once; loading it says whether the two differ)."""
    names: set[str] = set()
    for folder in _folders(crews_dir):
        if folder.is_dir():
            names.update(
                p.name for p in folder.iterdir() if (p / "config" / "tasks.yaml").is_file()
            )
    return sorted(names)
