import threading

from crewai_core import lock_store

from crewdash import locks


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
