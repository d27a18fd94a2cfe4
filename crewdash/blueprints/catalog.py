"""The search path: which blueprints exist, loaded by name. A name is a YAML crew (`base`) or a
CrewAI project (`projects`); a name in two folders with different files is refused."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crewdash.base.config import CREWS_DIR, crews_path
from crewdash.base.errors import BlueprintError
from crewdash.blueprints.base import BaseBlueprint, Blueprint, read_yaml, validate_blueprint
from crewdash.blueprints.projects.blueprint import load_project
from crewdash.blueprints.projects.files import content_hash, is_project, project_kind_hint

CrewsDirs = Path | Sequence[Path] | None


def _folders(crews_dir: CrewsDirs) -> list[Path]:
    if crews_dir is None:
        return crews_path()
    return [crews_dir] if isinstance(crews_dir, Path) else list(crews_dir)


def _is_blueprint(folder: Path) -> bool:

    return is_project(folder) or (folder / "config").is_dir()


def _same_files(homes: Sequence[Path]) -> bool:
    """Whether every copy of a blueprint has the same files (a copy of a built-in is no clash)."""

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

    if is_project(homes[0]):
        return load_project(homes[0], name)
    agents = read_yaml(homes[0] / "config" / "agents.yaml")
    tasks = read_yaml(homes[0] / "config" / "tasks.yaml")
    validate_blueprint(name, agents, tasks)
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
