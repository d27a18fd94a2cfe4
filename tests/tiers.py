"""The test tiers: each test is marked by what it starts, read from its code and its fixtures'.

`scripts/test.sh` runs the tests that start nothing of their own (the in-process tier) first,
alone and fail-fast, then the rest with pytest-xdist. A mark that someone has to remember is a
mark that gets forgotten, so `tests/conftest.py` puts the marks on here at collection: a test
whose code (or a fixture's, or a helper's in `tests/` that it calls) reaches one of the helpers
in `STARTERS`, or runs `python -m <one of SUBPROCESS_MODULES>`, gets that helper's mark.
Explicit marks (`long`, or `ray` on a test that starts Ray by other means) add to these.

It also puts each test in one xdist group (`--dist loadgroup` keeps a group on one worker):
- `ray` for the Ray tests: a cluster's teardown (`ray stop --force`) stops every Ray here;
- `postgresql` for the tests on the PostgreSQL server on 127.0.0.1:5432, one database for all;
- otherwise its module, so a module's module-scoped server starts once, not on both workers.
`mend_groups` makes pytest-xdist 3.8 honour these groups under this pytest (see there).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from tests import api_server, browser, llamacpp, ray_cluster

# The markers of the tiers outside the in-process one (registered in pyproject.toml).
TIERS = ("browser", "server", "ray", "model", "long")
# The helpers that start something real, and the tier each one puts a test in.
STARTERS: list[tuple[object, str]] = [
    (api_server.api_server, "server"),  # `uvicorn crewdash.api:app`
    (browser.serve, "server"),
    (browser.streamlit_app, "server"),  # `streamlit run app.py`
    (ray_cluster.ray_cluster, "ray"),  # `ray start`, and `ray stop --force` after
    (llamacpp.LlamaCppServer, "model"),  # llama.cpp with a real model
    (llamacpp.assemble_model, "model"),
]
# Fixtures that are a tier by themselves.
FIXTURES = {"browser": "browser"}  # Playwright's Chromium
# `python -m <module>` in a test's code: a real server, the CLI in its own process, a wheel build.
SUBPROCESS_MODULES = {"crewdash", "uvicorn", "streamlit", "pip", "venv"}
# A name that means the PostgreSQL server (tests/test_store.py's URL of it).
POSTGRES_NAMES = {"POSTGRES_URL"}


class _Reach:
    """What one function (or class) reaches: tier marks, PostgreSQL, fixtures asked for by name."""

    def __init__(self) -> None:
        self.marks: set[str] = set()
        self.fixtures: set[str] = set()  # `request.getfixturevalue("name")`

    def add(self, other: _Reach) -> None:
        self.marks |= other.marks
        self.fixtures |= other.fixtures


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple | frozenset | list):
        for item in value:
            yield from _strings(item)


def _ours(obj: object) -> bool:
    return str(getattr(obj, "__module__", "") or "").split(".")[0] == "tests"


def _functions(obj: object) -> Iterable[types.FunctionType]:
    """The Python functions behind a helper of `tests/`: a function (unwrapped from a fixture or
    a context manager), or a class's methods."""
    if isinstance(obj, type):
        return [f for v in vars(obj).values() for f in _functions(v)] if _ours(obj) else []
    wrapped = getattr(obj, "_get_wrapped_function", None)  # a pytest fixture definition
    if callable(wrapped):
        obj = wrapped()
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    if not callable(obj):
        return []
    obj = inspect.unwrap(obj)
    return [obj] if isinstance(obj, types.FunctionType) and _ours(obj) else []


class Scanner:
    """Reads test code once per function; `reach(obj)` is memoised (cycles end empty)."""

    def __init__(self) -> None:
        self._memo: dict[int, _Reach] = {}
        self._starters = {id(obj): mark for obj, mark in STARTERS}

    def reach(self, obj: object) -> _Reach:
        key = id(obj)
        if key in self._memo:
            return self._memo[key]
        found = self._memo[key] = _Reach()
        if key in self._starters:
            found.marks.add(self._starters[key])
            return found
        for func in _functions(obj):
            names: set[str] = set()
            strings: set[str] = set()
            for code in _codes(func.__code__):
                names.update(code.co_names)
                for const in code.co_consts:
                    strings.update(_strings(const))
            for name in names:
                value: Any = func.__globals__.get(name)
                if isinstance(value, list | tuple):  # a module's command template, say
                    strings.update(_strings(value))
                elif value is not None and value is not obj:
                    found.add(self.reach(value))
            if names & POSTGRES_NAMES:
                found.marks.add("postgresql")
            if "-m" in strings and strings & SUBPROCESS_MODULES:
                found.marks.add("server")
            if "getfixturevalue" in names:
                found.fixtures |= {s for s in strings if s.isidentifier()}
        return found


def marks_of(item: pytest.Item, scanner: Scanner) -> set[str]:
    """The tiers (and `postgresql`) a test reaches through its own code and its fixtures."""
    found = _Reach()
    function = getattr(item, "function", None)
    if function is not None:
        found.add(scanner.reach(function))
    manager = item.session._fixturemanager
    todo = list(getattr(item, "fixturenames", ())) + sorted(found.fixtures)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in FIXTURES:
            found.marks.add(FIXTURES[name])
        for fixturedef in manager.getfixturedefs(name, item) or ():
            reached = scanner.reach(fixturedef.func)
            found.marks |= reached.marks
            todo += [*fixturedef.argnames, *sorted(reached.fixtures)]
    return found.marks


def apply(items: list[pytest.Item]) -> None:
    """Mark every test with its tiers and put it in its xdist group."""
    scanner = Scanner()
    for item in items:
        reached = marks_of(item, scanner)
        for tier in TIERS:
            if tier in reached and item.get_closest_marker(tier) is None:
                item.add_marker(tier)
        if item.get_closest_marker("xdist_group") is not None:
            continue  # one group per test: xdist joins several into a new name
        if item.get_closest_marker("ray") is not None:
            group = "ray"
        elif "postgresql" in reached:
            group = "postgresql"
        elif item.get_closest_marker("browser") is not None:
            group = "browser"  # one Chromium at a time: two pages' redraws at once starve both
        else:
            module = getattr(item, "module", None)
            group = module.__name__.rsplit(".", 1)[-1] if module is not None else "default"
        item.add_marker(pytest.mark.xdist_group(group))


def mend_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker under `--dist loadgroup`, put the group on the test's id.

    xdist 3.8.0 tells its scheduler a test's group by appending `@group` to `item._nodeid`, a
    field pytest 9.2 no longer reads (its id is the structured `item._id`): the groups were
    silently ignored and tests of one group ran on both workers at once
    (pytest-dev/pytest-xdist#1386, open). This writes the same suffix on the id pytest reads,
    after xdist's own hook, and only where xdist's did not take: a fixed xdist makes it a no-op.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        suffix = f"@{'_'.join(names)}"
        if names and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)  # type: ignore[attr-defined]
