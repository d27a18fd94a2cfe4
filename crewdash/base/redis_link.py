"""The one Redis the rate governors share, with timeouts, and whether it answers now.

redis-py waits forever by default (no connect or read timeout) and retries a failed command
three times with backoff: a Redis that accepts connections but never answers held every model
call of the process, and the runner with them. Here every command has a short connect and read
timeout and no retry. The first command that fails marks the link down (one warning, in the log
and on the page's gauge); the governors then keep their windows in this process's memory. While
it is down, a probe in a thread of its own (at most every `PROBE_EVERY_S`, started by someone
asking, never waited for) sees Redis answer again, and the shared windows come back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from limits.storage import RedisStorage
from redis.backoff import NoBackoff
from redis.retry import Retry

from crewdash.base.settings import process_settings

log = logging.getLogger(__name__)

PROBE_EVERY_S = 3.0  # while Redis is down, at most one probe this often


def redis_timeout_s() -> float:
    """Seconds a Redis connect, or an answer, may take (`CREWDASH_REDIS_TIMEOUT`)."""
    return process_settings("CREWDASH_REDIS_TIMEOUT").redis_timeout


def client_options(timeout_s: float | None = None) -> dict[str, Any]:
    """Keyword arguments for `redis.Redis` / `redis.from_url`: connect and read timeouts, and
    no retries (redis-py's default of three with backoff turned one silent call into ~10 s)."""
    timeout = redis_timeout_s() if timeout_s is None else timeout_s
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }


def where(url: str) -> str:
    """Host and port of a Redis URL, for messages (never its password)."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
    except ValueError:
        return "REDIS_URL"


class RedisLink:
    """Shared rate windows in one Redis (`storage`), and `problem`: None while it answers, else
    why the governors govern this process alone."""

    def __init__(self, url: str, timeout_s: float | None = None) -> None:
        self.url = url
        self.where = where(url)
        self.storage = RedisStorage(url, **client_options(timeout_s))
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._next_probe = 0.0
        self._probing = False
        self.outages = 0  # how many times it went down (each one warned once)

    @property
    def problem(self) -> str | None:
        with self._lock:
            return self._problem

    def usable(self) -> bool:
        """True while Redis answers. While it is down: False at once, and a probe is started
        in the background when the last one is `PROBE_EVERY_S` old."""
        with self._lock:
            if self._problem is None:
                return True
            if self._probing or time.monotonic() < self._next_probe:
                return False
            self._probing = True
        threading.Thread(target=self._probe, name="crewdash-redis-probe", daemon=True).start()
        return False

    def failed(self, exc: BaseException) -> None:
        """A command failed or timed out: down until a probe is answered (warned once)."""
        problem = (
            f"Redis at {self.where} unreachable ({type(exc).__name__}): "
            "governing this process alone"
        )
        with self._lock:
            if self._problem is not None:
                return
            self._problem = problem
            self._next_probe = time.monotonic() + PROBE_EVERY_S
            self.outages += 1
        log.warning("rate governor: %s until it answers again", problem)

    def _probe(self) -> None:
        answered = self.storage.check()  # a PING under the same timeouts; False on any error
        with self._lock:
            self._probing = False
            self._next_probe = time.monotonic() + PROBE_EVERY_S
            came_back = answered and self._problem is not None
            if answered:
                self._problem = None
        if came_back:
            log.info("rate governor: Redis answers again; the windows are shared again")
