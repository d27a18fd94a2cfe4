"""A Redis that is silent, down, or goes away and comes back never holds crews, cancel or
shutdown: each process governs alone with one warning, and shares its windows again when Redis
answers. Real sockets: a server that accepts and never answers, a closed port, and a TCP proxy
of the test's own in front of the real Redis, stopped and started again."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from crewai_core import lock_store

from crewdash.base import locks
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import CrewState
from crewdash.providers.governor.core import GovernorState
from crewdash.providers.governor.registry import governor_states, redis_problem
from crewdash.providers.llm import LLMSettings
from tests.browser import free_port
from tests.conftest import finish

ROOT = Path(__file__).resolve().parent.parent

REDIS_PORT = 6379
REDIS_DB = 11  # this module's own database on the shared Redis
# A limit the demo never reaches, so every model call asks the governor's windows (in Redis).
SETTINGS = RunSettings(llm=LLMSettings(requests_per_minute=6000))
TOPICS = [f"topic {i}" for i in range(20)]
PROMPT_S = 5.0  # "promptly": cancel and shutdown, generous for a busy 2-core machine


class SilentServer:
    """Accepts every connection and never answers (nor closes)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.sock.close()
        self._thread.join(5)
        for conn in self.held:
            conn.close()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


class RedisProxy:
    """A TCP proxy to the real Redis on a port of its own; `stop` closes the port and cuts every
    connection (Redis unreachable), `start` opens the same port again; while `silent` it keeps
    every connection and accepts new ones, but passes nothing on (Redis hung)."""

    def __init__(self) -> None:
        self.port = closed_port()
        self.silent = False
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._sock,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=5)
                upstream.settimeout(None)
            except OSError:
                return
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.silent:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept: no connection after this
            self._sock.close()
            self._sock = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


@pytest.fixture()
def redis_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Point this process at a Redis as a server started with `REDIS_URL` would be: the
    variable set, CrewAI's lock store as it reads it at import, crewdash's locks installed."""

    def point(url: str) -> None:
        monkeypatch.setenv("REDIS_URL", url)
        monkeypatch.setattr(lock_store, "_REDIS_URL", url)
        cached = getattr(lock_store._redis_connection, "cache_clear", None)
        if callable(cached):
            cached()
        lock_store.set_lock_backend(None)
        locks.install()

    yield point
    monkeypatch.delenv("REDIS_URL", raising=False)
    lock_store.set_lock_backend(None)
    locks.install()


@pytest.fixture()
def redis_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every Redis command this process sends (observed, not
    changed), to show none runs on the runner's event loop thread."""
    names: list[str] = []
    for method in ("connect", "send_packed_command"):
        original = getattr(redis.connection.AbstractConnection, method)

        def observed(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            names.append(threading.current_thread().name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(redis.connection.AbstractConnection, method, observed)
    return names


def _warnings(caplog: pytest.LogCaptureFixture, port: int) -> list[str]:
    """Warnings about the Redis on `port` (governors of earlier tests, on other ports, may
    warn about theirs when the gauges read them)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and f"127.0.0.1:{port}" in r.getMessage()
    ]


def _governor(server: DemoLLMServer) -> GovernorState:
    return next(g for g in governor_states() if g.name == server.base_url)


def _first_batch(runner: Runner, server: DemoLLMServer) -> dict[str, float]:
    """20 crews all succeed; figures: their wall time and the longest governor wait."""
    started = time.monotonic()
    snap = finish(runner, runner.submit("research", TOPICS, SETTINGS), timeout=120)
    wall = time.monotonic() - started
    assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] * len(TOPICS), [
        c.error for c in snap.crews
    ]
    waits = [sp.duration or 0.0 for c in snap.crews for sp in c.spans if sp.kind == "governor"]
    return {"wall_s": wall, "longest_governor_wait_s": max(waits, default=0.0)}


def _later_batch_cancel_and_close(runner: Runner) -> dict[str, float]:
    """A later batch starts; cancelling it and closing the runner are prompt."""
    batch_id = runner.submit("research", TOPICS[:4], SETTINGS)
    deadline = time.monotonic() + 60
    while runner.snapshot(batch_id).count(CrewState.QUEUED) == 4:
        assert time.monotonic() < deadline, "the later batch never started"
        time.sleep(0.02)
    started = time.monotonic()
    runner.cancel(batch_id)
    cancel_s = time.monotonic() - started
    snap = finish(runner, batch_id, timeout=30)
    assert all(c.state.final for c in snap.crews)
    assert cancel_s < PROMPT_S, f"cancel took {cancel_s:.1f} s"
    started = time.monotonic()
    runner.close()
    close_s = time.monotonic() - started
    assert close_s < PROMPT_S, f"close took {close_s:.1f} s"
    return {"cancel_s": cancel_s, "close_s": close_s}


def _governing_alone_with_one_warning(
    server: DemoLLMServer, caplog: pytest.LogCaptureFixture, port: int
) -> None:
    state = _governor(server)
    assert not state.shared and state.redis_problem is not None
    assert f"Redis at 127.0.0.1:{port} unreachable" in state.redis_problem
    assert "governing this process alone" in state.redis_problem
    assert len(_warnings(caplog, port)) == 1, _warnings(caplog, port)  # the log


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_a_silent_or_closed_redis_degrades_to_governing_alone(
    kind: str,
    redis_env: Callable[[str], None],
    redis_threads: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    silent = SilentServer() if kind == "silent" else None
    port = silent.port if silent else closed_port()
    redis_env(f"redis://127.0.0.1:{port}/{REDIS_DB}")
    try:
        with DemoLLMServer(LatencyProfile(kind="fixed", seconds=1.0)) as server:
            runner = Runner(max_concurrency=32, demo_base_url=lambda: server.base_url)
            try:
                figures = _first_batch(runner, server)
                _governing_alone_with_one_warning(server, caplog, port)
                figures |= _later_batch_cancel_and_close(runner)
            finally:
                runner.close()
            _governing_alone_with_one_warning(server, caplog, port)  # still one, after more calls
    finally:
        if silent:
            silent.close()
    assert redis_threads, "the governor never asked Redis"
    assert "crewdash-runner" not in redis_threads  # never on the runner's event loop
    print(f"\n{kind} Redis: {figures}")


@pytest.mark.parametrize("outage", ["closed", "silent"])
def test_redis_going_away_and_coming_back(
    outage: str,
    redis_env: Callable[[str], None],
    redis_threads: list[str],
    caplog: pytest.LogCaptureFixture,
    ci: bool,
) -> None:
    direct = redis.Redis(port=REDIS_PORT, db=REDIS_DB, socket_timeout=2)
    try:
        direct.ping()
    except redis.RedisError:
        if ci:
            pytest.fail("Redis is not running on 127.0.0.1:6379 (CI needs it)")
        pytest.skip("no Redis on 127.0.0.1:6379")
    caplog.set_level(logging.WARNING)
    proxy = RedisProxy()
    proxy.start()
    port = proxy.port
    redis_env(f"redis://127.0.0.1:{port}/{REDIS_DB}")
    try:
        with DemoLLMServer(LatencyProfile(kind="fixed", seconds=1.0)) as server:
            runner = Runner(max_concurrency=32, demo_base_url=lambda: server.base_url)
            try:
                _first_batch(runner, server)  # shared through Redis
                assert _governor(server).shared and not _warnings(caplog, port)

                if outage == "closed":
                    proxy.stop()  # Redis unreachable mid-run
                else:
                    proxy.silent = True  # Redis hung mid-run, its connections open
                figures = _first_batch(runner, server)
                _governing_alone_with_one_warning(server, caplog, port)

                if outage == "closed":  # back: shared again after a probe (a few seconds)
                    proxy.start()
                else:
                    proxy.silent = False
                back_at = time.time()
                deadline = time.monotonic() + 30
                while not _governor(server).shared:
                    assert time.monotonic() < deadline, "Redis answered; the windows stayed local"
                    time.sleep(0.1)
                figures["comeback_s"] = time.time() - back_at
                _first_batch(runner, server)
                assert _governor(server).redis_problem is None
                # the calls after the comeback are in Redis's windows again
                stamps = [
                    float(stamp)
                    for key in direct.keys("LIMITS:*")
                    if direct.type(key) == b"list"
                    for stamp in direct.lrange(key, 0, -1)
                ]
                assert stamps and max(stamps) > back_at
                figures |= _later_batch_cancel_and_close(runner)
            finally:
                runner.close()
        assert len(_warnings(caplog, port)) == 1, _warnings(caplog, port)  # one outage
    finally:
        proxy.stop()
        direct.close()
    assert redis_threads and "crewdash-runner" not in redis_threads
    print(f"\nRedis {outage} and back: {figures}")


def test_the_run_page_shows_one_warning_while_redis_is_down(
    redis_env: Callable[[str], None],
) -> None:
    from tests.apptest import click, quick_demo, start
    from ui.session import runtime

    redis_env(f"redis://127.0.0.1:{closed_port()}/{REDIS_DB}")
    fixture = quick_demo("3")  # a fresh runtime: a demo model (and governor) of its own
    next(fixture)
    try:
        at = start()
        at.sidebar.number_input(key="sidebar.rpm").set_value(6000)
        at.text_area(key="run.topics").input("alpha\nbeta\ngamma")
        click(at, "Run")
        assert not at.exception
        batch_id = at.session_state["run.batch_id"]
        deadline = time.monotonic() + 30
        while redis_problem() is None:
            assert time.monotonic() < deadline, "the governor never met the closed port"
            time.sleep(0.05)
        at.run()
        assert not runtime().snapshot(batch_id).done  # the live section, with the gauges
        shown = [w.value for w in at.warning if "Redis" in w.value]
        assert len(shown) == 1 and "governing this process alone" in shown[0], shown
        snap = finish(runtime().runner, batch_id, timeout=60)
        assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] * 3
    finally:
        next(fixture, None)


def test_the_api_server_started_with_a_silent_redis_runs_cancels_and_stops(
    tmp_path: Path,
) -> None:
    """The issue's report as it was met: `uvicorn crewdash.api:app` with `REDIS_URL` at a
    server that accepts and never answers (and limits, so every call asks the governor)."""
    silent = SilentServer()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "REDIS_URL": f"redis://127.0.0.1:{silent.port}/{REDIS_DB}",
        "CREWDASH_RATE_LIMITS": "rpm=6000",
        "CREWDASH_DEMO_LATENCY": "1.0",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'history.db'}",
    }
    command = [sys.executable, "-m", "uvicorn", "crewdash.api:app", "--port", str(port)]
    log_path = tmp_path / "api.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as api:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the API did not start"
                try:
                    if api.get("/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            first = api.post("/batches", json={"topics": TOPICS, "blueprint": "research"})
            assert first.status_code == 202, first.text
            body = _api_wait(api, first.json()["batch_id"], lambda b: b["done"])
            assert [c["state"] for c in body["crews"]] == ["succeeded"] * len(TOPICS)
            later = api.post("/batches", json={"topics": TOPICS[:4], "blueprint": "research"})
            later_id = later.json()["batch_id"]
            _api_wait(api, later_id, lambda b: any(c["state"] != "queued" for c in b["crews"]))
            started = time.monotonic()
            cancel = api.post(f"/batches/{later_id}/cancel")
            cancel_s = time.monotonic() - started
            assert cancel.status_code == 200 and cancel_s < PROMPT_S, (cancel.text, cancel_s)
        started = time.monotonic()
        proc.terminate()
        proc.wait(30)
        stop_s = time.monotonic() - started
        assert stop_s < 2 * PROMPT_S, f"shutdown took {stop_s:.1f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        silent.close()
    warned = [line for line in log_path.read_text().splitlines() if "unreachable" in line]
    assert len(warned) == 1, warned
    print(f"\nAPI with a silent Redis: cancel {cancel_s:.2f} s, shutdown {stop_s:.2f} s")


def _api_wait(api: httpx.Client, batch_id: str, until: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + 120
    while True:
        body = api.get(f"/batches/{batch_id}").json()
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
