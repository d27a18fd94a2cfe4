import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from crewai_core import lock_store

from crewdash.base import locks

ROOT = Path(__file__).resolve().parent.parent


def test_installed_as_crewais_lock_backend() -> None:
    assert lock_store._backend is locks.named_lock


def test_named_lock_excludes_threads_and_lets_other_names_through() -> None:
    inside: list[str] = []
    overlaps: list[int] = []
    guard = threading.Lock()

    def work(name: str) -> None:
        for _ in range(20):
            with locks.named_lock(name):
                with guard:
                    inside.append(name)
                    overlaps.append(inside.count(name))
                with guard:
                    inside.remove(name)

    threads = [threading.Thread(target=work, args=(f"n{i % 2}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1 and len(overlaps) == 120


def test_crewai_uses_it() -> None:
    with lock_store.lock("crewdash-test"):
        assert locks._thread_lock("crewdash-test").locked()
    assert not locks._thread_lock("crewdash-test").locked()


def test_with_redis_url_set_crewai_locks_stay_crewdashs_and_its_client_has_timeouts() -> None:
    """A process started with `REDIS_URL` (here a server that accepts and never answers): the
    lock backend is crewdash's, so a kickoff's lock never waits on Redis, and CrewAI's own
    client (used only while its default backend is back) has connect and read timeouts."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    script = (
        "import json, time\n"
        "from crewai_core import lock_store\n"
        "from crewdash.base import locks\n"
        "import crewdash.engine.execution  # a process that runs crews: locks installed\n"
        "started = time.monotonic()\n"
        "with lock_store.lock('kickoff'):\n"
        "    pass\n"
        "kwargs = lock_store._redis_connection().connection_pool.connection_kwargs\n"
        "print(json.dumps({'ours': lock_store._backend is locks.named_lock,\n"
        "    'lock_s': time.monotonic() - started, 'timeout': kwargs.get('socket_timeout'),\n"
        "    'connect_timeout': kwargs.get('socket_connect_timeout')}))\n"
    )
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/11"}
    env["PYTHONPATH"] = str(ROOT)
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
        )
    finally:
        silent.close()
        for conn in held:
            conn.close()
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ours"] and result["lock_s"] < 1.0
    assert result["timeout"] == result["connect_timeout"] == 1.5
