"""A CrewAI project as a blueprint: described once per version of its files, and the recipe
that makes a fresh crew or flow of it per topic, here or on another machine.

A project is imported once per process and kept while its files stay the same (a fingerprint of
their paths, sizes and modification times); a changed file is picked up by the next load.

To run on another machine (a Ray worker) a project travels with its crews: the version loaded
here is also packed as a zip (`Bundle`, capped at `MAX_PROJECT_BYTES`) that the recipe carries;
the receiving process unpacks it once per version under its temp dir and imports it from there.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crewai import Crew, Flow
from crewai.llms.base_llm import BaseLLM
from pydantic import BaseModel

from crewdash.base.errors import BlueprintError
from crewdash.base.run_context import install, run_llm
from crewdash.blueprints.base import PLACEHOLDER, BaseBlueprint, PinnedAgent
from crewdash.blueprints.projects.files import (
    Bundle,
    code_error,
    fingerprint,
    pack_bundle,
    unpack_bundle,
)
from crewdash.blueprints.projects.loader import Loaded, Runnable, import_project
from crewdash.blueprints.shape import CrewShape, crew_shape
from crewdash.providers.llm import LLMSettings

# --- probing: inputs and pinned models, before any run ---------------------------------------


class _Probe:
    """The model factory used while probing: every agent that asks for the run's model gets one
    of these, so the others are the agents that pin their own."""

    def __init__(self) -> None:
        self.made: list[int] = []

    def __call__(self) -> BaseLLM:
        from crewdash.providers.llm import build_llm

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
                raise code_error(root, exc, "building the crew") from None
            assert isinstance(crew, Crew)
            found: set[str] = set()
            for text in _texts(crew):
                if isinstance(text, str):
                    found.update(PLACEHOLDER.findall(text))
            defaults = {k: _scalar(v) for k, v in loaded.default_inputs.items()}
            inputs = {n: defaults.get(n, "") for n in sorted(found | defaults.keys())}
            required = frozenset(found)
            pins += _pins(crew, probe, "")
            shape: CrewShape | None = crew_shape(crew)
        else:
            if loaded.state is None:
                try:
                    flow = loaded.new()
                except Exception as exc:  # noqa: BLE001 - the project's own code
                    raise code_error(root, exc, "creating the flow") from None
                assert isinstance(flow, Flow)
                state = flow.state
                raw = state.model_dump() if isinstance(state, BaseModel) else dict(state)
                raw.pop("id", None)
            else:
                raw = loaded.state
            inputs = {k: _scalar(v) for k, v in raw.items()}
            required = loaded.required
            shape = loaded.declared_shape
            inner_shapes = []
            for build in loaded.inner_crews:
                try:
                    inner = build()
                except Exception:  # noqa: BLE001 - an inner crew may need the flow's state
                    continue
                pins += _pins(inner, probe, inner.name or "inner crew")
                inner_shapes.append(crew_shape(inner))
            if loaded.kind == "flow" and inner_shapes:  # its code decides which crews run
                largest = max(inner_shapes, key=lambda c: sum(len(t.text) for t in c.tasks))
                note = f"a Python Flow: one run of its largest of {len(inner_shapes)} inner crew(s)"
                shape = CrewShape(largest.tasks, steps_known=False, note=note)
            elif loaded.kind == "flow":
                shape = CrewShape((), steps_known=False, note="a Python Flow without inner crews")
    return ProjectBlueprint(
        name=name,
        kind=loaded.kind,
        root=str(root),
        fingerprint=fp,
        input_defaults=inputs,
        required_inputs=required,
        pinned=tuple(pins),
        shape=shape,
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
                loaded = import_project(root)
                if pack:
                    loaded.bundle = pack_bundle(root)
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


_received: dict[str, Loaded] = {}  # digest -> the project unpacked and imported here
_received_lock = threading.Lock()


def _receive(bundle: Bundle, name: str) -> Loaded:
    """A project sent from another process, imported once per version in this one."""
    with _received_lock:
        loaded = _received.get(bundle.digest)
        if loaded is None:
            loaded = _cached(unpack_bundle(bundle), name, pack=False)[0]
            _received[bundle.digest] = loaded
    return loaded


def received_projects() -> dict[str, int]:
    """Projects this process received (their folder here) and how many times each was
    imported: for tests and health checks of the workers."""
    with _received_lock:
        roots = [str(loaded.root.resolve()) for loaded in _received.values()]
    return {root: _imports[root] for root in roots}


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
    shape: CrewShape | None = None  # its model calls task by task, for a budget's estimate

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
