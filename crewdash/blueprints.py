"""Blueprints: what one crew per topic is built from, found on the search path.

A folder on the search path (`crews_path`) is a blueprint when it holds CrewAI's YAML convention
(`<name>/config/{agents,tasks}.yaml`, read here) or a CrewAI project (`<name>/pyproject.toml` with
`[tool.crewai]`, loaded by `crewdash.projects`). Every kind offers the same interface
(`BaseBlueprint`): inputs with their defaults, the fan-out input, the agents that pin their own
model, and a picklable recipe that builds a *fresh* crew or flow on every call, so concurrent
crews never share an Agent (the tutorial's first pitfall).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from crewai import LLM, Agent, Crew, Process, Task

from crewdash.config import CREWS_DIR, crews_path
from crewdash.errors import BlueprintError
from crewdash.settings import load_settings

if TYPE_CHECKING:
    from crewdash.llm import LLMSettings

# The same pattern CrewAI uses to find `{placeholders}` it will fill from the inputs.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)}")
FAN_OUT_DEFAULT = "topic"
_AGENT_REQUIRED = ("role", "goal", "backstory")
_AGENT_OPTIONAL = ("allow_delegation", "max_iter", "max_rpm", "max_execution_time")
# Tools a blueprint may name (agents.yaml `tools: [...]`): module, class, the key it needs.
TOOLS = {"serper_dev": ("crewai_tools", "SerperDevTool", "SERPER_API_KEY")}


def _key(variable: str) -> str | None:
    return load_settings(only={variable}).secret(variable)


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
    from crewdash.llm import build_llm

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


def _is_blueprint(folder: Path) -> bool:
    from crewdash.projects import is_project

    return is_project(folder) or (folder / "config").is_dir()


def _same_files(homes: Sequence[Path]) -> bool:
    """Whether every copy of a blueprint has the same files (a copy of a built-in is no clash)."""
    from crewdash.projects import content_hash, is_project

    def files(home: Path) -> tuple[bytes | str | None, ...]:
        if is_project(home):
            return ("project", content_hash(home))
        config = home / "config"
        return tuple(
            (config / f).read_bytes() if (config / f).is_file() else None
            for f in ("agents.yaml", "tasks.yaml")
        )

    first = files(homes[0])
    return all(files(h) == first for h in homes[1:])


def load_blueprint(name: str, crews_dir: CrewsDirs = None) -> BaseBlueprint:
    """The blueprint `<folder>/<name>` from the search path (`crews_path`, or the folders
    given): a YAML crew (`config/`) or a CrewAI project (`pyproject.toml`). Every problem is a
    `BlueprintError` in plain words. A name found in two folders with different files is
    refused, naming both: neither silently wins."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise BlueprintError(f"invalid blueprint name {name!r}")
    folders = _folders(crews_dir)
    homes = [f / name for f in folders if _is_blueprint(f / name)]
    if not homes:
        where = ", ".join(str(f) for f in folders)
        raise BlueprintError(f"no blueprint named {name!r} in {where}")
    if not _same_files(homes):
        where = " and ".join(str(h.parent) for h in homes)
        raise BlueprintError(
            f"two different blueprints are named {name!r}, in {where}: rename one of them"
        )
    from crewdash.projects import is_project, load_project

    if is_project(homes[0]):
        return load_project(homes[0], name)
    agents = _read_yaml(homes[0] / "config" / "agents.yaml")
    tasks = _read_yaml(homes[0] / "config" / "tasks.yaml")
    _validate(name, agents, tasks)
    return Blueprint(name=name, agents=agents, tasks=tasks)


def builtin_blueprint(name: str) -> Blueprint:
    """A blueprint shipped with crewdash (the warm-up's and benchmarks' `timing`), from the
    built-in folder only: a user's folder can neither hide it nor clash with it."""
    blueprint = load_blueprint(name, CREWS_DIR)
    if not isinstance(blueprint, Blueprint):
        raise BlueprintError(f"built-in blueprint {name!r} is not a YAML crew")
    return blueprint


def list_blueprints(crews_dir: CrewsDirs = None) -> list[str]:
    """Names of the folders on the search path that look like blueprints (a name in two
    folders is listed once; loading it says whether the two differ)."""
    from crewdash.projects import is_project

    names: set[str] = set()
    for folder in _folders(crews_dir):
        if folder.is_dir():
            names.update(
                p.name
                for p in folder.iterdir()
                if (p / "config" / "tasks.yaml").is_file() or is_project(p)
            )
    return sorted(names)


@dataclass(frozen=True)
class BlueprintInfo:
    """One entry of the picker: a blueprint, or why it cannot be used."""

    name: str
    kind: str
    blueprint: BaseBlueprint | None = None
    error: str | None = None


def describe_blueprints(crews_dir: CrewsDirs = None) -> list[BlueprintInfo]:
    """Every blueprint on the search path, loaded: a broken one carries its message and never
    stops the others from listing (projects are imported once per change of their files)."""
    from crewdash.projects import is_project, project_kind_hint

    infos = []
    for name in list_blueprints(crews_dir):
        try:
            bp = load_blueprint(name, crews_dir)
        except BlueprintError as exc:
            home = next((f / name for f in _folders(crews_dir) if _is_blueprint(f / name)), None)
            kind = project_kind_hint(home) if home is not None and is_project(home) else "yaml"
            infos.append(BlueprintInfo(name, kind, error=str(exc)))
        else:
            infos.append(BlueprintInfo(name, bp.kind, blueprint=bp))
    return infos
