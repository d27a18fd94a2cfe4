"""Importing a CrewAI project: the four shapes `crewai create` makes, loaded by CrewAI itself.

- `crew`: `[tool.crewai] type = "crew"`; per topic `MyCrew().crew()` from `src/<pkg>/crew.py`.
- `json_crew`: `type = "crew"`, `definition = "crew.jsonc"`; a fresh crew from the loaded JSON.
- `flow`: `type = "flow"`; per topic `MyFlow()` from `src/<pkg>/main.py`.
- `flow_yaml`: `type = "flow"`, `definition = ".../flow.yaml"`; `Flow.from_declaration(...)`.

Its package is imported under its own name from its `src/` folder, and taken out of
`sys.modules` again right after, so two projects with the same package name never see each
other's modules (a module that imports its own package lazily, inside a function, is not
supported). Importing a project runs its code: only folders on the configured search path are
loaded.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from crewai import Crew, Flow
from pydantic import BaseModel, ValidationError

from crewdash.base.errors import BlueprintError
from crewdash.blueprints.base import PinnedAgent
from crewdash.blueprints.projects.declared import declared_pins, declared_shape
from crewdash.blueprints.projects.files import (
    PROJECT_FILE,
    Bundle,
    code_error,
    definition_path,
    first_line,
    read_pyproject,
    rel_name,
)
from crewdash.blueprints.shape import CrewShape

_IMPORT_LOCK = threading.RLock()  # sys.path and sys.modules are process-wide


Runnable = Crew | Flow[Any]


# --- importing a project's package -----------------------------------------------------------


def _package_modules(package: str) -> list[str]:
    return [k for k in sys.modules if k == package or k.startswith(package + ".")]


def import_from(src: Path, package: str, module: str) -> tuple[types.ModuleType, dict[str, Any]]:
    """`<package>.<module>` from `src/`, as the project's own code imports it, without leaving
    it (or hiding another project's package of the same name) in `sys.modules`."""
    with _IMPORT_LOCK:
        saved = {k: sys.modules.pop(k) for k in _package_modules(package)}
        sys.path.insert(0, str(src))
        importlib.invalidate_caches()
        try:
            loaded = importlib.import_module(f"{package}.{module}")
        finally:
            sys.path.remove(str(src))
            mine = {k: sys.modules.pop(k) for k in _package_modules(package)}
            sys.modules.update(saved)
    return loaded, mine


def _pick_package(root: Path, entry: str, project_name: str | None) -> tuple[str, Path]:
    """The package under `src/` that holds `entry` (crew.py or main.py)."""
    found = sorted(p.parent for p in (root / "src").glob(f"*/{entry}"))
    if not found:
        raise BlueprintError(f"{root.name}: no src/<package>/{entry} (as `crewai create` makes)")
    if len(found) > 1:
        wanted = (project_name or "").replace("-", "_")
        named = [p for p in found if p.name == wanted]
        if len(named) != 1:
            names = ", ".join(f"src/{p.name}/{entry}" for p in found)
            raise BlueprintError(f"{root.name}: several packages have {entry} ({names})")
        found = named
    return found[0].name, found[0]


def _classes(module: types.ModuleType, test: Callable[[type], bool]) -> list[type]:
    return [
        v
        for v in vars(module).values()
        if isinstance(v, type) and v.__module__ == module.__name__ and test(v)
    ]


def _is_crew_class(cls: type) -> bool:
    return bool(getattr(cls, "is_crew_class", False))


def _is_flow_class(cls: type) -> bool:
    return issubclass(cls, Flow) and cls is not Flow


# --- what a loaded project can do ------------------------------------------------------------


@dataclass
class Loaded:
    """A project imported in this process: makes a fresh crew or flow per topic."""

    kind: str
    root: Path
    new: Callable[[], Runnable]
    modules: dict[str, Any] = field(default_factory=dict)  # keeps the package alive
    default_inputs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    required: frozenset[str] = frozenset()
    inner_crews: list[Callable[[], Crew]] = field(default_factory=list)
    declared_pins: list[PinnedAgent] = field(default_factory=list)
    bundle: Bundle | None = None  # this version's files, for another machine
    declared_shape: CrewShape | None = None  # a declarative flow's crews, for the estimate


def _entry_class(
    root: Path, data: dict[str, Any], module_name: str, test: Callable[[type], bool], what: str
) -> tuple[Any, Path, dict[str, Any]]:
    """Import `src/<package>/<module_name>.py` of a project and return its one class that passes
    `test`, the package's folder and the imported modules; anything else names the file."""
    entry = f"{module_name}.py"
    package, home = _pick_package(root, entry, data.get("project", {}).get("name"))
    try:
        module, modules = import_from(root / "src", package, module_name)
    except Exception as exc:  # noqa: BLE001 - the project's own code: any error is its message
        raise code_error(root, exc, f"importing {rel_name(root, home / entry)}") from None
    found = _classes(module, test)
    if len(found) != 1:
        problem = f"no {what}" if not found else f"several {what}es"  # "class" -> "classes"
        kind = "crew" if module_name == "crew" else "flow"
        raise BlueprintError(
            f"{rel_name(root, home / entry)}: {problem}; a {kind} project needs exactly one"
        )
    return found[0], home, modules


def _load_classic_crew(root: Path, data: dict[str, Any]) -> Loaded:
    crew_cls, home, modules = _entry_class(root, data, "crew", _is_crew_class, "@CrewBase class")
    for attr in ("original_agents_config_path", "original_tasks_config_path"):
        rel = getattr(crew_cls, attr, None)
        base = getattr(crew_cls, "base_directory", home)
        if isinstance(rel, str) and not (Path(base) / rel).is_file():
            raise BlueprintError(f"{rel_name(root, Path(base) / rel)} is missing")

    def new() -> Crew:
        crew: Crew = crew_cls().crew()
        return crew

    return Loaded("crew", root, new, modules)


def _fresh_tools(tools: Any) -> Any:
    """Each crew its own tool objects (a tool's usage count is per object)."""
    if not isinstance(tools, list):
        return tools
    return [t.model_copy() if isinstance(t, BaseModel) else copy.deepcopy(t) for t in tools]


def _load_json_crew(root: Path, definition: Path) -> Loaded:
    from crewai.project.crew_loader import _load_crew_project
    from crewai.project.json_loader import load_json_crew_project

    try:
        project = load_json_crew_project(definition)
    except Exception as exc:  # noqa: BLE001 - CrewAI's loader names file and line itself
        message = first_line(exc).removeprefix("JSONProjectError: ")
        message = message.removeprefix("JSONProjectValidationError: ")
        for base in {str(root.resolve().parent), str(root.parent)}:
            message = message.replace(base + os.sep, "")
        raise BlueprintError(message) from None

    def new() -> Crew:
        agents = {
            name: type(a)(
                name=a.name,
                path=a.path,
                definition=a.definition,
                kwargs={**a.kwargs, "tools": _fresh_tools(a.kwargs.get("tools", []))},
                agent_class=a.agent_class,
            )
            for name, a in project.agents.items()
        }
        fresh = type(project)(
            crew_path=project.crew_path,
            agents_dir=project.agents_dir,
            definition=project.definition,
            agent_names=list(project.agent_names),
            agents=agents,
            task_definitions=copy.deepcopy(project.task_definitions),
        )
        crew, _ = _load_crew_project(fresh, project_root=definition.parent)
        return crew  # type: ignore[no-any-return]

    inputs = project.definition.get("inputs") or {}
    return Loaded("json_crew", root, new, default_inputs=dict(inputs))


def _load_python_flow(root: Path, data: dict[str, Any]) -> Loaded:
    flow_cls, _, modules = _entry_class(root, data, "main", _is_flow_class, "Flow subclass")
    inner = [
        cls
        for name, mod in sorted(modules.items())
        if isinstance(mod, types.ModuleType)
        for cls in _classes(mod, _is_crew_class)
    ]

    def new() -> Flow[Any]:
        flow: Flow[Any] = flow_cls()
        return flow

    def inner_builder(cls: type) -> Callable[[], Crew]:
        return lambda: cls().crew()  # type: ignore[no-any-return]

    return Loaded("flow", root, new, modules, inner_crews=[inner_builder(c) for c in inner])


def _load_flow_yaml(root: Path, path: Path) -> Loaded:
    from crewai.flow.flow_definition import FlowDefinition

    try:
        definition = FlowDefinition.from_declaration(path=path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise BlueprintError(f"{rel_name(root, path)}{line}: {problem}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise BlueprintError(f"{rel_name(root, path)}: {where}: {err.get('msg')}") from None
    except Exception as exc:  # noqa: BLE001 - any other refusal of CrewAI's loader
        raise BlueprintError(f"{rel_name(root, path)}: {first_line(exc)}") from None
    state = definition.state
    schema = getattr(state, "json_schema", None) or {}
    default = dict(getattr(state, "default", None) or {})
    fields = dict.fromkeys(schema.get("properties", {}), "")
    fields.update(default)
    required = frozenset(n for n in schema.get("required", []) if n not in default)

    def new() -> Flow[Any]:
        flow: Flow[Any] = Flow.from_declaration(contents=definition)  # type: ignore[assignment]
        return flow

    return Loaded(
        "flow_yaml",
        root,
        new,
        state=fields,
        required=required,
        declared_pins=declared_pins(definition),
        declared_shape=declared_shape(definition),
    )


def import_project(root: Path) -> Loaded:
    """The project in `root` imported, by the kind its `pyproject.toml` says it is."""
    data = read_pyproject(root)
    from crewai_core.project import get_crewai_project_type

    kind = get_crewai_project_type(data)
    if kind not in ("crew", "flow"):
        raise BlueprintError(
            f'{root.name}/{PROJECT_FILE}: [tool.crewai] type must be "crew" or "flow"'
        )
    definition = definition_path(root, kind, data)
    if kind == "crew":
        return _load_json_crew(root, definition) if definition else _load_classic_crew(root, data)
    return _load_flow_yaml(root, definition) if definition else _load_python_flow(root, data)
