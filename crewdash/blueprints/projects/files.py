"""A CrewAI project's folder, read without importing it: which files it has (their fingerprint
and content hash), its `pyproject.toml` and the kind it says it is, messages that name its files,
and the zip that carries one version of it to another machine (`Bundle`, capped at
`MAX_PROJECT_BYTES`)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import traceback
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crewdash.base.errors import BlueprintError

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
MAX_PROJECT_BYTES = 16 * 1024**2  # a project's files, for sending it to another machine


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


def rel_name(root: Path, path: str | Path | None) -> str:
    """A project's file as `<blueprint>/<path in the project>`, for messages."""
    if not path:
        return "?"
    try:
        return Path(path).resolve().relative_to(root.resolve().parent).as_posix()
    except ValueError:
        return Path(path).name


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def code_error(root: Path, exc: BaseException, doing: str) -> BlueprintError:
    """One line naming the project's file and line where `exc` was raised."""
    if isinstance(exc, SyntaxError):
        where = f"{rel_name(root, exc.filename)} line {exc.lineno}"
        return BlueprintError(f"{where}: syntax error: {exc.msg}")
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        name = rel_name(root, getattr(mark, "name", None)) if mark else "a YAML file"
        line = f" line {mark.line + 1}" if mark else ""
        return BlueprintError(f"{name}{line}: {getattr(exc, 'problem', None) or 'invalid YAML'}")
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if Path(f.filename).resolve().is_relative_to(root.resolve())
    ]
    where = f"{rel_name(root, frames[-1].filename)} line {frames[-1].lineno}: " if frames else ""
    if isinstance(exc, ModuleNotFoundError):
        return BlueprintError(
            f"{where}missing dependency {exc.name!r}: install it into crewdash's Python environment"
        )
    return BlueprintError(f"{where}{first_line(exc)} (while {doing})")


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


def pack_bundle(root: Path) -> Bundle:
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


def unpack_bundle(bundle: Bundle) -> Path:
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


def read_pyproject(root: Path) -> dict[str, Any]:
    """The project's `pyproject.toml`; a garbled one is a `BlueprintError` naming it."""
    from crewai_core.project import read_toml

    try:
        return read_toml(root / PROJECT_FILE)
    except Exception as exc:  # noqa: BLE001 - tomli's decode error, or an unreadable file
        raise BlueprintError(f"{root.name}/{PROJECT_FILE}: {first_line(exc)}") from None


def definition_path(root: Path, kind: str, data: dict[str, Any]) -> Path | None:
    """The declarative definition (`crew.jsonc`, `flow.yaml`) the pyproject names, if any."""
    from crewai_core.project import ProjectDefinitionError, configured_project_definition

    try:
        return configured_project_definition(kind, pyproject_data=data, project_root=root)
    except ProjectDefinitionError as exc:
        raise BlueprintError(f"{root.name}/{PROJECT_FILE}: {exc}") from None


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
