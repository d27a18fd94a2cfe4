"""Start the real API under uvicorn on a free port, as `uvicorn crewdash.api:app` would run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from tests.browser import free_port, serve


@cache
def can_rename_host() -> bool:
    """Whether `unshare --uts` works here (root, or user namespaces): a server with a host
    name of its own, like a pod that replaced another one."""
    try:
        probe = subprocess.run(["unshare", "--uts", "hostname", "probe"], capture_output=True)
    except OSError:
        return False
    return probe.returncode == 0


@contextmanager
def api_server(workdir: Path, hostname: str | None = None, **env: str) -> Iterator[str]:
    """`uvicorn crewdash.api:app` on a free port with its own history database; with
    `hostname`, in a UTS namespace under that host name when this machine allows it."""
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
    if hostname and can_rename_host():
        command = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *command]
    defaults = {
        "DATABASE_URL": f"sqlite:///{workdir / 'history.db'}",
        "CREWDASH_DEMO_LATENCY": "0.2",
    }
    with serve(command, "/healthz", port, workdir / "api.log", {**defaults, **env}) as url:
        yield url
