"""Start the real API under uvicorn on a free port, as `uvicorn crewdash.api:app` would run:
one for a test that needs a server of its own, or the session's shared one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import pytest

from tests.broken_projects import write_broken_projects
from tests.browser import free_port, serve

PROJECTS = Path(__file__).resolve().parent / "projects"


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


@dataclass(frozen=True)
class SharedAPI:
    """The session's API server: its URL, its working folder (its history is `history.db` in
    it) and the folder its crews write their files to."""

    url: str
    workdir: Path
    outputs: Path


@pytest.fixture(scope="session")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedAPI]:
    """One `uvicorn crewdash.api:app` for the API-shaped tests that need nothing of their own,
    instead of a cold start per module: the default demo latency, the test projects (and broken
    ones) on its search path. A test that needs other settings, an empty or a PostgreSQL
    history, or a server it may stop, starts its own with `api_server`."""
    workdir = tmp_path_factory.mktemp("shared-api")
    write_broken_projects(workdir / "broken")
    env = {
        "CREWDASH_CREWS_DIR": f"{PROJECTS}{os.pathsep}{workdir / 'broken'}",
        "CREWDASH_OUTPUTS_DIR": str(workdir / "outputs"),
    }
    with api_server(workdir, **env) as url:
        # one crew first, as the Ray tests' warm_up does: CrewAI's one-off costs in a new
        # process stay out of the timings of whichever test comes first
        httpx.post(f"{url}/research", json={"topics": ["warm-up"]}, timeout=120).raise_for_status()
        yield SharedAPI(url, workdir, workdir / "outputs")
