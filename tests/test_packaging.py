"""`pip install .` gives a working `crewdash` command away from the checkout.

The wheel is built offline (no build isolation: hatchling comes from requirements-dev.txt) into a
fresh virtualenv whose only link to this one is a .pth file for the dependencies; the package
itself, its blueprints, prices and migrations must come from the wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import site
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from crewdash.base.config import source_checkout

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # generous: each step is a few seconds on an idle machine


def _pins(name: str) -> dict[str, str]:
    """The exact pins of a requirements file, following `-r` includes."""
    pins: dict[str, str] = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(_pins(line[3:].strip()))
        elif line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{name}: {line} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def _declared(specs: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(s) for s in specs]
    return {canonicalize_name(r.name): r for r in reqs if canonicalize_name(r.name) != "crewdash"}


def test_the_pins_fall_within_the_declared_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    for file, specs in (
        ("requirements.txt", project["dependencies"]),
        ("requirements-ray.txt", project["dependencies"] + extras["ray"]),
        ("requirements-dev.txt", project["dependencies"] + extras["ray"] + extras["dev"]),
    ):
        pins, declared = _pins(file), _declared(specs)
        assert pins.keys() == declared.keys(), file
        for name, version in pins.items():
            assert declared[name].specifier.contains(version), (file, name, version)
    for module in ("tenacity", "portalocker"):  # imported by crewdash itself
        assert module in _pins("requirements.txt")
    assert project["scripts"] == {"crewdash": "crewdash.cli.main:main"}


def test_a_checkout_is_told_from_an_installed_package(tmp_path: Path) -> None:
    assert source_checkout(ROOT / "crewdash") == ROOT
    (tmp_path / "crewdash").mkdir()
    assert source_checkout(tmp_path / "crewdash") is None  # site-packages: no pyproject, no crews


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backend = importlib.util.find_spec("hatchling")
    if backend is None or backend.origin is None:
        message = "hatchling is not installed (requirements-dev.txt): cannot build the wheel"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("packaging") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(home), "platbase": str(home)}))
    # The dependencies (pip and hatchling included) from this environment, after the venv's own
    # site-packages; never the checkout itself.
    deps = [*site.getsitepackages(), str(Path(backend.origin).parents[1])]
    deps = [d for d in dict.fromkeys(deps) if Path(d).resolve() != ROOT]
    (purelib / "_crewdash_test_deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    _run(
        [
            str(home / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
        ],
        cwd=home.parent,
    )
    return home


def _env() -> dict[str, str]:
    """This environment without what would point the installed package back at the checkout or
    at another history."""
    drop = {"PYTHONPATH", "PYTHONHOME", "DATABASE_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CREWDASH_")}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{cmd}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_installed_package_carries_its_blueprints_prices_and_migrations(
    venv: Path, tmp_path: Path
) -> None:
    probe = (
        "import json, crewdash, crewdash.base.config as c, crewdash.store.history as s\n"
        "from crewdash.blueprints.catalog import builtin_blueprint\n"
        "from crewdash.model.pricing import price_for\n"
        "print(json.dumps({'package': crewdash.__file__, 'checkout': c.CHECKOUT,"
        " 'crews': str(c.CREWS_DIR), 'blueprints': [builtin_blueprint(n).name"
        " for n in ('research', 'timing')], 'price': price_for('gpt-4o-mini') is not None,"
        " 'migrations': sorted(p.name for p in (s.MIGRATIONS / 'versions').glob('*.py')),"
        " 'typed': (c.PACKAGE_DIR / 'py.typed').is_file(), 'history': s.DEFAULT_URL}))"
    )
    seen = json.loads(_run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path).stdout)
    assert Path(seen["package"]).is_relative_to(venv)
    assert seen["checkout"] is None and Path(seen["crews"]).is_relative_to(venv)
    assert seen["blueprints"] == ["research", "timing"] and seen["price"] and seen["typed"]
    assert "0001_initial.py" in seen["migrations"]
    assert seen["history"] == f"sqlite:///{tmp_path.resolve() / 'data' / 'crewdash.db'}"


def test_the_crewdash_command_runs_from_another_directory(venv: Path, tmp_path: Path) -> None:
    crewdash = str(venv / "bin" / "crewdash")
    usage = _run([crewdash, "--help"], cwd=tmp_path).stdout
    assert usage.startswith("usage: crewdash ") and re.search(
        r"\{run,blueprints,bench,demo-llm", usage
    )
    done = _run([crewdash, "run", "x", "--latency", "0", "--no-history"], cwd=tmp_path)
    assert "1/1 succeeded" in done.stdout
    assert not (tmp_path / "data").exists()
    done = _run([crewdash, "run", "y", "--latency", "0"], cwd=tmp_path)  # kept in ./data/
    assert "1/1 succeeded" in done.stdout
    assert (tmp_path / "data" / "crewdash.db").is_file()


def test_every_test_has_a_time_limit() -> None:
    """pytest-timeout is installed and configured: a test waiting on something that never comes
    fails alone rather than hanging CI until its overall limit."""
    import tomllib

    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(options["timeout"]) <= 900
    pins = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert any(line.startswith("pytest-timeout==") for line in pins)
    import pytest_timeout  # noqa: F401 - the plugin that reads the option
