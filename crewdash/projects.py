"""CrewAI projects as blueprints: the four shapes `crewai create` makes, loaded by CrewAI itself.

- `crew`: `[tool.crewai] type = "crew"`; per topic `MyCrew().crew()` from `src/<pkg>/crew.py`.
- `json_crew`: `type = "crew"`, `definition = "crew.jsonc"`; a fresh crew from the loaded JSON.
- `flow`: `type = "flow"`; per topic `MyFlow()` from `src/<pkg>/main.py`.
- `flow_yaml`: `type = "flow"`, `definition = ".../flow.yaml"`; `Flow.from_declaration(...)`.

A project is imported once per process and kept while its files stay the same (a fingerprint of
their paths, sizes and modification times); a changed file is picked up by the next load. Its
package is imported under its own name from its `src/` folder, and taken out of `sys.modules`
again right after, so two projects with the same package name never see each other's modules
(a module that imports its own package lazily, inside a function, is not supported).

Importing a project runs its code: only folders on the configured search path are loaded.

To run on another machine (a Ray worker) a project travels with its crews: the version loaded
here is also packed as a zip (`Bundle`, capped at `MAX_PROJECT_BYTES`) that the recipe carries;
the receiving process unpacks it once per version under its temp dir and imports it from there.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback
import types
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from crewai import Crew, Flow
from crewai.llms.base_llm import BaseLLM
from pydantic import BaseModel, ValidationError

from crewdash.blueprints import PLACEHOLDER, BaseBlueprint, PinnedAgent
from crewdash.errors import BlueprintError
from crewdash.llm import LLMSettings
from crewdash.run_context import install, run_llm

PROJECT_FILE = "pyproject.toml"
KIND_LABELS = {
    "yaml": "YAML crew",
    "crew": "crew project",
    "json_crew": "JSON crew",
    "flow": "Python Flow",
    "flow_yaml": "declarative Flow",
}
_SKIP_DIRS = {"__pycache__", "node_modules", "venv", "build", "dist"}
_MAX_FILES = 5000
_IMPORT_LOCK = threading.RLock()  # sys.path and sys.modules are process-wide
MAX_PROJECT_BYTES = 16 * 1024**2  # a project's files, for sending it to another machine


Runnable = Crew | Flow[Any]


def is_project(folder: Path) -> bool:
    return (folder / PROJECT_FILE).is_file()


def _walk(root: Path) -> Iterator[Path]:
    count = 0
    for base, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            count += 1
            if count > _MAX_FILES:
                return
            yield Path(base) / name


def fingerprint(root: Path) -> str:
    """Paths, sizes and modification times of a project's files: changes when any file does."""
    digest = hashlib.sha256()
    for path in _walk(root):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def content_hash(root: Path) -> str:
    """The files' paths and bytes: equal for two copies of the same project."""
    digest = hashlib.sha256()
    for path in _walk(root):
        digest.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


# --- error messages --------------------------------------------------------------------------


def _rel(root: Path, path: str | Path | None) -> str:
    """A project's file as `<blueprint>/<path in the project>`, for messages."""
    if not path:
        return "?"
    try:
        return Path(path).resolve().relative_to(root.resolve().parent).as_posix()
    except ValueError:
        return Path(path).name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _code_error(root: Path, exc: BaseException, doing: str) -> BlueprintError:
    """One line naming the project's file and line where `exc` was raised."""
    if isinstance(exc, SyntaxError):
        where = f"{_rel(root, exc.filename)} line {exc.lineno}"
        return BlueprintError(f"{where}: syntax error: {exc.msg}")
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        name = _rel(root, getattr(mark, "name", None)) if mark else "a YAML file"
        line = f" line {mark.line + 1}" if mark else ""
        return BlueprintError(f"{name}{line}: {getattr(exc, 'problem', None) or 'invalid YAML'}")
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if Path(f.filename).resolve().is_relative_to(root.resolve())
    ]
    where = f"{_rel(root, frames[-1].filename)} line {frames[-1].lineno}: " if frames else ""
    if isinstance(exc, ModuleNotFoundError):
        return BlueprintError(
            f"{where}missing dependency {exc.name!r}: install it into crewdash's Python environment"
        )
    return BlueprintError(f"{where}{_first_line(exc)} (while {doing})")


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


# --- a project's files, for another machine --------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """One version of a project's files as a zip, made when that version is loaded (so another
    machine runs exactly what was loaded here), or the reason it cannot be sent."""

    folder: str  # the project folder's name
    digest: str  # of the folder's name and the files' paths and bytes
    data: bytes | None
    problem: str | None = None


def _megabytes(size: int) -> str:
    return f"{size / 1024**2:.3g} MB"


def _pack(root: Path) -> Bundle:
    """Zip a project's files (those `fingerprint` covers: no hidden files such as `.env`, no
    caches or virtualenvs); refuses a project over `MAX_PROJECT_BYTES` without reading it."""
    files = list(_walk(root))
    size = sum(f.stat().st_size for f in files)
    problem = None
    if len(files) >= _MAX_FILES:
        problem = f"has more than {_MAX_FILES - 1} files"
    elif size > MAX_PROJECT_BYTES:
        cap = _megabytes(MAX_PROJECT_BYTES)
        problem = f"has {_megabytes(size)} of files, more than the {cap} sent to a worker"
    if problem:
        return Bundle(
            root.name,
            "",
            None,
            f"project {root.name!r} {problem}: move data files out of the project folder, "
            "or run it on the local backend",
        )
    digest = hashlib.sha256(f"{root.name}\0".encode())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            name = path.relative_to(root).as_posix()
            data = path.read_bytes()
            digest.update(f"{name}\0{len(data)}\0".encode() + data)
            archive.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
    return Bundle(root.name, digest.hexdigest()[:24], buffer.getvalue())


_received: dict[str, Loaded] = {}  # digest -> the project unpacked and imported here
_received_lock = threading.Lock()


def _unpack(bundle: Bundle) -> Path:
    """The project's folder under this machine's temp dir, unpacked once per version (another
    process of this machine may have done it: each unpacks aside and renames into place)."""
    assert bundle.data is not None
    home = Path(tempfile.gettempdir()) / "crewdash-projects" / bundle.digest
    if not home.is_dir():
        home.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{bundle.digest}-", dir=home.parent))
        with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
            archive.extractall(staging / bundle.folder)
        try:
            staging.rename(home)
        except OSError:  # another process unpacked it first
            shutil.rmtree(staging, ignore_errors=True)
    return home / bundle.folder


def _receive(bundle: Bundle, name: str) -> Loaded:
    """A project sent from another process, imported once per version in this one."""
    with _received_lock:
        loaded = _received.get(bundle.digest)
        if loaded is None:
            loaded = _cached(_unpack(bundle), name, pack=False)[0]
            _received[bundle.digest] = loaded
    return loaded


def received_projects() -> dict[str, int]:
    """Projects this process received (their folder here) and how many times each was
    imported: for tests and health checks of the workers."""
    with _received_lock:
        roots = [str(loaded.root.resolve()) for loaded in _received.values()]
    return {root: _imports[root] for root in roots}


def _pyproject(root: Path) -> dict[str, Any]:
    from crewai_core.project import read_toml

    try:
        return read_toml(root / PROJECT_FILE)
    except Exception as exc:  # noqa: BLE001 - tomli's decode error, or an unreadable file
        raise BlueprintError(f"{root.name}/{PROJECT_FILE}: {_first_line(exc)}") from None


def _definition(root: Path, kind: str, data: dict[str, Any]) -> Path | None:
    from crewai_core.project import ProjectDefinitionError, configured_project_definition

    try:
        return configured_project_definition(kind, pyproject_data=data, project_root=root)
    except ProjectDefinitionError as exc:
        raise BlueprintError(f"{root.name}/{PROJECT_FILE}: {exc}") from None


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
        raise _code_error(root, exc, f"importing {_rel(root, home / entry)}") from None
    found = _classes(module, test)
    if len(found) != 1:
        problem = f"no {what}" if not found else f"several {what}es"  # "class" -> "classes"
        kind = "crew" if module_name == "crew" else "flow"
        raise BlueprintError(
            f"{_rel(root, home / entry)}: {problem}; a {kind} project needs exactly one"
        )
    return found[0], home, modules


def _load_classic_crew(root: Path, data: dict[str, Any]) -> Loaded:
    crew_cls, home, modules = _entry_class(root, data, "crew", _is_crew_class, "@CrewBase class")
    for attr in ("original_agents_config_path", "original_tasks_config_path"):
        rel = getattr(crew_cls, attr, None)
        base = getattr(crew_cls, "base_directory", home)
        if isinstance(rel, str) and not (Path(base) / rel).is_file():
            raise BlueprintError(f"{_rel(root, Path(base) / rel)} is missing")

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
        message = _first_line(exc).removeprefix("JSONProjectError: ")
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


def _declared_pins(definition: Any) -> list[PinnedAgent]:
    """Agents of a declarative flow's inline crews and agent steps that name their own llm."""
    pins = []
    for method, spec in definition.model_dump(mode="python").get("methods", {}).items():
        action = spec.get("do") or {}
        body = action.get("with_") or action.get("with") or {}
        if not isinstance(body, dict):
            continue
        if action.get("call") == "crew":
            agents = body.get("agents") or {}
            items = agents.items() if isinstance(agents, dict) else enumerate(agents)
            candidates = [(str(k), a) for k, a in items if isinstance(a, dict)]
        elif action.get("call") == "agent":
            candidates = [(method, body)]
        else:
            continue
        for key, agent in candidates:
            llm = agent.get("llm") or (agent.get("settings") or {}).get("llm")
            if llm:
                model = llm.get("model", "?") if isinstance(llm, dict) else str(llm)
                pins.append(PinnedAgent(str(agent.get("role") or key).strip(), model, method))
    return pins


def _load_flow_yaml(root: Path, path: Path) -> Loaded:
    from crewai.flow.flow_definition import FlowDefinition

    try:
        definition = FlowDefinition.from_declaration(path=path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise BlueprintError(f"{_rel(root, path)}{line}: {problem}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise BlueprintError(f"{_rel(root, path)}: {where}: {err.get('msg')}") from None
    except Exception as exc:  # noqa: BLE001 - any other refusal of CrewAI's loader
        raise BlueprintError(f"{_rel(root, path)}: {_first_line(exc)}") from None
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
        declared_pins=_declared_pins(definition),
    )


def _load(root: Path) -> Loaded:
    data = _pyproject(root)
    from crewai_core.project import get_crewai_project_type

    kind = get_crewai_project_type(data)
    if kind not in ("crew", "flow"):
        raise BlueprintError(
            f'{root.name}/{PROJECT_FILE}: [tool.crewai] type must be "crew" or "flow"'
        )
    definition = _definition(root, kind, data)
    if kind == "crew":
        return _load_json_crew(root, definition) if definition else _load_classic_crew(root, data)
    return _load_flow_yaml(root, definition) if definition else _load_python_flow(root, data)


# --- probing: inputs and pinned models, before any run ---------------------------------------


class _Probe:
    """The model factory used while probing: every agent that asks for the run's model gets one
    of these, so the others are the agents that pin their own."""

    def __init__(self) -> None:
        self.made: list[int] = []

    def __call__(self) -> BaseLLM:
        from crewdash.llm import build_llm

        llm = build_llm(LLMSettings(), "http://127.0.0.1:9/v1")  # never called
        self.made.append(id(llm))
        return llm


@contextmanager
def _probing() -> Iterator[_Probe]:
    probe = _Probe()
    token = run_llm.set(probe)
    try:
        yield probe
    finally:
        run_llm.reset(token)


def _texts(crew: Crew) -> Iterator[Any]:
    for agent in crew.agents:
        yield from (agent.role, agent.goal, agent.backstory)
    for task in crew.tasks:
        yield from (task.description, task.expected_output, task.output_file)


def _pins(crew: Crew, probe: _Probe, where: str) -> list[PinnedAgent]:
    agents = [*crew.agents, *([crew.manager_agent] if crew.manager_agent else [])]
    return [
        PinnedAgent(" ".join(str(a.role).split()), str(getattr(a.llm, "model", a.llm)), where)
        for a in agents
        if a.llm is not None and id(a.llm) not in probe.made
    ]


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def _describe(name: str, loaded: Loaded, fp: str) -> ProjectBlueprint:
    root = loaded.root
    pins: list[PinnedAgent] = list(loaded.declared_pins)
    with _probing() as probe:
        if loaded.kind in ("crew", "json_crew"):
            try:
                crew = loaded.new()
            except Exception as exc:  # noqa: BLE001 - the project's own build code
                raise _code_error(root, exc, "building the crew") from None
            assert isinstance(crew, Crew)
            found: set[str] = set()
            for text in _texts(crew):
                if isinstance(text, str):
                    found.update(PLACEHOLDER.findall(text))
            defaults = {k: _scalar(v) for k, v in loaded.default_inputs.items()}
            inputs = {n: defaults.get(n, "") for n in sorted(found | defaults.keys())}
            required = frozenset(found)
            pins += _pins(crew, probe, "")
        else:
            if loaded.state is None:
                try:
                    flow = loaded.new()
                except Exception as exc:  # noqa: BLE001 - the project's own code
                    raise _code_error(root, exc, "creating the flow") from None
                assert isinstance(flow, Flow)
                state = flow.state
                raw = state.model_dump() if isinstance(state, BaseModel) else dict(state)
                raw.pop("id", None)
            else:
                raw = loaded.state
            inputs = {k: _scalar(v) for k, v in raw.items()}
            required = loaded.required
            for build in loaded.inner_crews:
                try:
                    inner = build()
                except Exception:  # noqa: BLE001 - an inner crew may need the flow's state
                    continue
                pins += _pins(inner, probe, inner.name or "inner crew")
    return ProjectBlueprint(
        name=name,
        kind=loaded.kind,
        root=str(root),
        fingerprint=fp,
        input_defaults=inputs,
        required_inputs=required,
        pinned=tuple(pins),
    )


# --- the cache and the blueprint -------------------------------------------------------------

_cache: dict[str, tuple[str, Loaded | BlueprintError, ProjectBlueprint | None]] = {}
_cache_lock = threading.Lock()
_imports: Counter[str] = Counter()  # per project folder, how many versions were imported


def _cached(root: Path, name: str, *, pack: bool = True) -> tuple[Loaded, ProjectBlueprint]:
    key = str(root.resolve())
    fp = fingerprint(root)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None or hit[0] != fp:
            install()
            _imports[key] += 1
            try:
                loaded = _load(root)
                if pack:
                    loaded.bundle = _pack(root)
                described: ProjectBlueprint | None = _describe(name, loaded, fp)
                hit = (fp, loaded, described)
            except BlueprintError as exc:
                hit = (fp, exc, None)
            _cache[key] = hit
    _, outcome, blueprint = hit
    if isinstance(outcome, BlueprintError):
        raise BlueprintError(str(outcome))
    assert blueprint is not None
    if blueprint.name != name:
        blueprint = ProjectBlueprint(**{**blueprint.__dict__, "name": name})
    return outcome, blueprint


def load_project(folder: Path, name: str | None = None) -> ProjectBlueprint:
    """The blueprint of a CrewAI project folder; every problem is one `BlueprintError` line
    naming the file (and line) at fault. Imports the project once per change of its files."""
    return _cached(folder, name or folder.name)[1]


class ProjectBuild:
    """The picklable recipe for one fresh crew or flow of a project (Ray ships it). Here it
    uses the version loaded at submit; pickled, it carries that version's files, so another
    process (on any machine) unpacks and imports them once and never reads this folder."""

    def __init__(self, root: str, name: str, loaded: Loaded | None = None) -> None:
        self.root = root
        self.name = name
        self._loaded = loaded
        self._bundle: Bundle | None = None  # set when received from another process

    def __call__(self) -> Runnable:
        if self._bundle is not None:
            return _receive(self._bundle, self.name).new()
        return self._version().new()

    def _version(self) -> Loaded:
        return self._loaded or _cached(Path(self.root), self.name)[0]

    def _files(self) -> Bundle:
        bundle = self._bundle or self._version().bundle
        if bundle is None or bundle.data is None:
            raise BlueprintError(bundle.problem if bundle else f"{self.name}: not packed")
        return bundle

    def portable(self) -> str:
        """The digest of the files this recipe carries when pickled (one per version of the
        project); a `BlueprintError` if the project is too large to send."""
        return self._files().digest

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "name": self.name, "bundle": self._files()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["name"])  # type: ignore[misc]
        self._bundle = state["bundle"]


@dataclass(frozen=True)
class ProjectBlueprint(BaseBlueprint):
    """A CrewAI project on the search path, described once per version of its files."""

    name: str
    root: str
    fingerprint: str
    input_defaults: Mapping[str, str]
    required_inputs: frozenset[str]
    kind: str = "crew"  # crew | json_crew | flow | flow_yaml
    pinned: tuple[PinnedAgent, ...] = ()

    @property
    def inputs(self) -> Mapping[str, str]:
        return self.input_defaults

    @property
    def required(self) -> frozenset[str]:
        return self.required_inputs

    @property
    def pinned_agents(self) -> tuple[PinnedAgent, ...]:
        return self.pinned

    @property
    def passes_defaults(self) -> bool:
        """Crews get their defaults as kickoff inputs; a flow's state already holds them."""
        return self.kind in ("crew", "json_crew")

    def recipe(self, llm: LLMSettings, demo_url: str | None) -> Callable[[], Runnable]:
        key = str(Path(self.root).resolve())
        with _cache_lock:
            hit = _cache.get(key)
        loaded = hit[1] if hit and hit[0] == self.fingerprint else None
        return ProjectBuild(self.root, self.name, loaded if isinstance(loaded, Loaded) else None)


def project_kind_hint(folder: Path) -> str:
    """The kind a project folder says it is, without importing it (for broken ones)."""
    try:
        text = (folder / PROJECT_FILE).read_text(encoding="utf-8")
    except OSError:
        return "project"
    kind = re.search(r'^\s*type\s*=\s*"(crew|flow)"', text, re.MULTILINE)
    has_definition = re.search(r"^\s*definition\s*=", text, re.MULTILINE) is not None
    if not kind:
        return "project"
    if kind.group(1) == "crew":
        return "json_crew" if has_definition else "crew"
    return "flow_yaml" if has_definition else "flow"
