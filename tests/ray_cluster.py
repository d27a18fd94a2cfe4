"""A real two-node Ray cluster on 127.0.0.1, started with Ray's own CLI as an operator would."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.browser import free_port

RAY = str(Path(sys.executable).with_name("ray"))
AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


def _ray(*args: str) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


@contextmanager
def ray_cluster() -> Iterator[str]:
    """`ray start --head` plus a second node joining it, two logical CPUs each; yields RAY_ADDRESS.

    With token authentication, as Ray recommends: every node and every driver (this process,
    and the API and dashboard servers the tests start, which inherit its environment) share
    the token through `RAY_AUTH_MODE` and `RAY_AUTH_TOKEN`. Teardown is `ray stop --force`,
    which stops every Ray on this machine: run these tests where no other Ray matters (CI).
    """
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats"]
    saved = {k: os.environ.get(k) for k in AUTH}
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    try:
        _ray("start", "--head", f"--port={port}", "--include-dashboard=false", *common)
        _ray("start", f"--address={address}", *common)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
