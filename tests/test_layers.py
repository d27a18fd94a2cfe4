"""The layers know nothing above them: an import graph read from the source (AST), so a new
import that breaks a layer fails here instead of turning up as a cycle or a slow page later."""

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import crewdash

CORE = Path(crewdash.__file__).parent


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every import in `path`, at any depth (name None for `import m`)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
            # `from crewdash import pricing` imports the module crewdash.model.pricing
            found += [(f"{node.module}.{alias.name}", None) for alias in node.names]
    return found


# Every package of the core by rank: a module imports only its own package or a lower rank.
RANKS = {
    "base": 0,
    "model": 1,
    "sheets": 1,
    "providers": 2,
    "store": 2,
    "blueprints": 3,
    "demo": 3,
    "engine": 4,
    "experiments": 5,
    "runtime": 6,
    "schemas": 7,
    "bench": 7,
    "present": 8,
    "api": 9,
    "cli": 9,
}
# The real provider path never runs the demo model: only these may import `demo`.
MAY_IMPORT_DEMO = {"demo", "experiments", "runtime", "bench", "cli"}


def _package(module: str) -> str:
    """`crewdash.engine.backends.ray` -> `engine`; the face and `__main__` are `crewdash`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else "crewdash"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(CORE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _graph() -> dict[str, set[str]]:
    """Which modules of the core each module imports (at any depth: a lazy import counts)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for module, _ in _imports(path):
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module != name and module.startswith("crewdash."):
                targets.add(module)
        graph[name] = targets
    return graph


def test_every_package_of_the_core_has_a_rank() -> None:
    packages = {_package(m) for m in _modules()} - {"crewdash"}
    assert packages == set(RANKS)


def test_a_module_imports_only_its_own_package_or_a_lower_layer() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _package(module) in RANKS
        for target in targets
        if _package(target) != _package(module)
        and RANKS[_package(target)] >= RANKS[_package(module)]
    ]
    assert upward == []


def test_only_the_root_benchmarks_cli_and_experiments_import_the_demo_model() -> None:
    offenders = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _package(target) == "demo" and _package(module) not in MAY_IMPORT_DEMO
    ]
    assert offenders == []


def test_the_core_has_no_import_loop() -> None:
    graph = _graph()
    graph.pop("crewdash", None)  # the face loads its public names lazily, on first use
    sorter = TopologicalSorter({m: t - {"crewdash"} for m, t in graph.items()})
    try:
        sorter.prepare()
    except CycleError as exc:
        pytest.fail(f"import loop: {' -> '.join(exc.args[1])}")


def test_importing_errors_imports_nothing_else_of_crewdash() -> None:
    code = (
        "import sys, crewdash.base.errors; "
        "print(sorted(m for m in sys.modules if m.startswith('crewdash')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "['crewdash', 'crewdash.base', 'crewdash.base.errors']"


def test_no_module_imports_a_private_name_of_another() -> None:
    roots = [CORE, CORE.parent / "ui", CORE.parent / "pages"]
    offenders = [
        f"{path.relative_to(CORE.parent)}: from {module} import {name}"
        for root in roots
        for path in sorted(root.rglob("*.py"))
        for module, name in _imports(path)
        if module.startswith("crewdash")
        and name
        and name.startswith("_")
        and not name.startswith("__")
    ]
    assert offenders == []


def test_only_ui_polling_polls_in_a_fragment() -> None:
    """One "poll in a fragment until done" loop (ui/polling.py), not a copy per page."""
    app = CORE.parent
    polling = [
        str(path.relative_to(app))
        for path in sorted([*app.glob("ui/*.py"), *app.glob("pages/*.py"), app / "app.py"])
        if "run_every" in path.read_text(encoding="utf-8")
    ]
    assert polling == ["ui/polling.py"]
