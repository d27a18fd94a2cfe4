"""Shared fixtures: a real demo model server over HTTP and runners wired to it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from crewdash.config import silence_telemetry

silence_telemetry()
# Every runtime the tests build keeps its history in a throw-away SQLite file, never in data/.
_HISTORY = tempfile.mkdtemp(prefix="crewdash-test-")
os.environ["DATABASE_URL"] = f"sqlite:///{_HISTORY}/history.db"

from crewdash.batch import BatchSnapshot  # noqa: E402
from crewdash.demo_llm import DemoLLMServer, LatencyProfile  # noqa: E402
from crewdash.runner import Runner  # noqa: E402
from tests.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

LATENCY = 0.5


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
