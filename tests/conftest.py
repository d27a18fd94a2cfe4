"""Shared fixtures (a real demo model server over HTTP and runners wired to it, one API server
for the session), and the tiers: every test is marked by what it starts (tests/tiers.py)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

import crewdash  # noqa: F401 - switches CrewAI's telemetry off before crewai loads

# Every runtime the tests build keeps its history in a throw-away SQLite file, never in data/.
_HISTORY = tempfile.mkdtemp(prefix="crewdash-test-")
os.environ["DATABASE_URL"] = f"sqlite:///{_HISTORY}/history.db"
# The suite's baseline is the embedded default (the demo model), whatever the developer's shell
# holds: a provider key there makes that provider the default (unreachable offline). Tests of a
# server with a key in its environment set one on purpose (`openai_env`, `[env-key]`).
for _variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
    os.environ.pop(_variable, None)

from crewdash.demo.profiles import LatencyProfile  # noqa: E402
from crewdash.demo.server import DemoLLMServer  # noqa: E402
from crewdash.engine.runner import Runner  # noqa: E402
from crewdash.model.batch import BatchSnapshot  # noqa: E402
from tests import tiers  # noqa: E402
from tests.api_server import shared_api  # noqa: E402, F401 - a fixture for every module
from tests.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

LATENCY = 0.5


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers it too; this keeps --strict-markers happy under `-p no:xdist`
    config.addinivalue_line("markers", "xdist_group(name): run on the worker of its group")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects and xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tiers.apply(items)


@pytest.hookimpl(tryfirst=True)  # after xdist marked the groups, before it sends the ids
def pytest_collection_finish(session: pytest.Session) -> None:
    tiers.mend_groups(session.config, session.items)


def finish(runner: Runner, batch_id: str, timeout: float = 60) -> BatchSnapshot:
    """Wait for a batch to end (failing the test if it does not) and return its snapshot."""
    assert runner.batch(batch_id).wait(timeout), "batch did not finish"
    return runner.snapshot(batch_id)


@pytest.fixture(scope="session")
def demo_server() -> Iterator[DemoLLMServer]:
    """The project's demo model at a fixed latency, shared by the tests of a session."""
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=LATENCY)) as server:
        yield server


@pytest.fixture()
def runner(demo_server: DemoLLMServer) -> Iterator[Runner]:
    r = Runner(max_concurrency=32, demo_base_url=lambda: demo_server.base_url)
    yield r
    r.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium through Playwright (fails, not skips, in CI without it)."""
    executable = chromium_path()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


SERVER_OPENAI_KEY = "sk-SERVER-openai-env"


@pytest.fixture(params=["no-env-key", "env-key"])
def openai_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test without and with `OPENAI_API_KEY` (and `OPENAI_BASE_URL`) in the server's
    environment: crewdash's transport must not depend on them (issue 20, item 13)."""
    if request.param == "env-key":
        monkeypatch.setenv("OPENAI_API_KEY", SERVER_OPENAI_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    else:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return str(request.param)
