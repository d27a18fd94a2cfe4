"""Start the real API under uvicorn on a free port, as `uvicorn crewdash.api:app` would run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.browser import free_port, serve


@contextmanager
def api_server(workdir: Path, **env: str) -> Iterator[str]:
    """`uvicorn crewdash.api:app` on a free port with its own history database."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "crewdash.api:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    defaults = {
        "DATABASE_URL": f"sqlite:///{workdir / 'history.db'}",
        "CREWDASH_DEMO_LATENCY": "0.2",
    }
    with serve(command, "/healthz", port, workdir / "api.log", {**defaults, **env}) as url:
        yield url
