"""The layers know nothing above them: an import graph read from the source (AST), so a new
import that breaks a layer fails here instead of turning up as a cycle or a slow page later."""

import ast
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
            # `from crewdash import pricing` imports the module crewdash.pricing
            found += [(f"{node.module}.{alias.name}", None) for alias in node.names]
    return found


def _crewdash_modules_imported_by(name: str) -> set[str]:
    return {m for m, _ in _imports(CORE / f"{name}.py") if m.startswith("crewdash.")}


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("batch", {"pricing"}),
        ("charts", {"bench", "runner", "store", "demo_llm"}),
        ("bench_report", {"bench", "runner", "store", "demo_llm", "llm"}),
        ("retries", {"events"}),
    ],
)
def test_a_layer_does_not_import_what_sits_above_it(module: str, forbidden: set[str]) -> None:
    imported = {m.split(".")[1] for m in _crewdash_modules_imported_by(module)}
    assert imported & forbidden == set(), f"crewdash/{module}.py imports {imported & forbidden}"


def test_no_module_imports_a_private_name_of_another() -> None:
    roots = [CORE, CORE.parent / "ui", CORE.parent / "pages"]
    offenders = [
        f"{path.relative_to(CORE.parent)}: from {module} import {name}"
        for root in roots
        for path in sorted(root.glob("*.py"))
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
