"""The embedded demo model: a real OpenAI-compatible HTTP server with simulated latency.

CrewAI reaches it through its ordinary OpenAI provider, so the product's real path (HTTP, JSON,
token usage) runs unchanged with no API key and no network. Answers are deterministic and
topic-aware; latency is seeded and shaped like a hosted API so concurrency is visible.

This module runs it (`DemoLLMServer`); its behaviour is in `profiles` (latency, injected
failures), `answers` (what it says), `app` (the routes) and `streaming` (SSE chunks).
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from crewdash.demo.app import create_app
from crewdash.demo.limits import LimitEmulator
from crewdash.demo.profiles import FailureRates, LatencyProfile
from crewdash.demo.stats import ServerStats
from crewdash.providers.limits import ProviderLimits


class DemoLLMServer:
    """Runs the demo model under uvicorn in a daemon thread of this process.

    It listens on 127.0.0.1 unless told otherwise: `host="0.0.0.0"` serves the Ray workers of
    a multi-machine cluster (`python -m crewdash demo-llm --host 0.0.0.0`).
    """

    def __init__(
        self,
        profile: LatencyProfile | None = None,
        port: int = 0,
        failures: FailureRates | None = None,
        host: str = "127.0.0.1",
        limits: ProviderLimits | None = None,
    ) -> None:
        self.host = host
        self.limits = limits or ProviderLimits()
        self.profile = profile or LatencyProfile()
        self.failures = failures or FailureRates()
        self.stats = ServerStats()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        app = create_app(self.profile, self.stats, self.failures, self.limits)
        self.app_limits: LimitEmulator | None = app.state.limits  # its counters, for benchmarks
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=30,
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            daemon=True,
            name="crewdash-demo-llm",
        )

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in /v1)."""
        host = socket.getfqdn() if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> DemoLLMServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo model server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> DemoLLMServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
