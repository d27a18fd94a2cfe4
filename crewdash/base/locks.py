"""A faster backend for CrewAI's named locks, installed through CrewAI's own hook.

Every kickoff writes its task outputs to a SQLite file under a named lock. CrewAI's default
backend is a `portalocker` file lock that, when contended, polls every 0.25 s: crews started from
threads (`kickoff_async`, `kickoff_for_each_async`) then start a quarter second apart. Here
threads of one process queue on an in-process lock (woken at once, no polling), and only the
holder takes the file lock, polling every 5 ms, so other processes stay excluded as before.

It is installed with `REDIS_URL` set too. CrewAI would then lock through Redis, with a client
that has no timeouts, on every kickoff and on the runner's event loop: a Redis that accepted
connections and never answered froze every crew, cancel and shutdown, and a closed port failed
every crew. The locks guard files on this machine (CrewAI's task-output store), which a file
lock guards as well, so Redis stays out of them; should CrewAI's default come back (the Pitfalls
page measures it), its Redis client has crewdash's timeouts.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from hashlib import md5

import portalocker
import redis
from crewai_core import lock_store

from crewdash.base.redis_link import client_options

FILE_LOCK_POLL_S = 0.005

_guard = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}


def _thread_lock(name: str) -> threading.Lock:
    with _guard:
        return _thread_locks.setdefault(name, threading.Lock())


@contextmanager
def named_lock(name: str, *, timeout: float = 120.0) -> Iterator[None]:
    """Hold CrewAI's lock `name`: first among this process's threads, then among processes."""
    local = _thread_lock(name)
    if not local.acquire(timeout=timeout):
        raise portalocker.exceptions.LockException(f"timed out waiting for lock {name!r}")
    try:
        digest = md5(name.encode(), usedforsecurity=False).hexdigest()
        path = os.path.join(tempfile.gettempdir(), f"crewai:{digest}.lock")
        with portalocker.Lock(path, timeout=timeout, check_interval=FILE_LOCK_POLL_S):
            yield
    finally:
        local.release()


@lru_cache(maxsize=1)
def _crewai_redis() -> redis.Redis:
    """CrewAI's own Redis client (`REDIS_URL` as CrewAI read it), with timeouts."""
    if lock_store._REDIS_URL is None:
        raise ValueError("REDIS_URL environment variable is not set")
    return redis.Redis.from_url(lock_store._REDIS_URL, **client_options())


def install() -> None:
    """Make CrewAI use `named_lock`, with or without `REDIS_URL`."""
    lock_store.set_lock_backend(named_lock)
    lock_store._redis_connection = _crewai_redis  # only used while CrewAI's default is back


def uninstall() -> None:
    """Back to CrewAI's default (the Pitfalls page measures both)."""
    lock_store.set_lock_backend(None)
