"""The core package stays importable without Streamlit: CLI, API and tests depend on it."""

import ast
import subprocess
import sys
from pathlib import Path

import crewdash

CORE = Path(crewdash.__file__).parent


def test_no_module_in_the_core_imports_streamlit() -> None:
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]  # type: ignore[misc]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []


def test_importing_the_whole_core_does_not_load_streamlit() -> None:
    modules = sorted(p.stem for p in CORE.glob("*.py") if p.stem not in {"__main__"})
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('crewdash.' + m if m != '__init__' "
        "else 'crewdash')\n"
        "assert 'streamlit' not in sys.modules, 'streamlit was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CORE.parent)
