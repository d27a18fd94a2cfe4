"""One submission, one batch: a key a client sends with a submission (the page mints one per
form, an API client sends `Idempotency-Key`), remembered with the batch it started, so the same
submission sent twice (a double click, Ctrl+Enter then Run, a client's retry) starts one batch
and the repeat gets that batch's id.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable

from crewdash.base.errors import CrewdashError

MAX_KEY_CHARS = 200
KEYS_KEPT = 10_000  # the oldest keys are forgotten past this many
KEY_PATTERN = rf"^[!-~]{{1,{MAX_KEY_CHARS}}}$"  # printable ASCII, no spaces: fits a header


class IdempotencyKeyError(CrewdashError, ValueError):
    """A key reused for a different request, or a key that is no key."""


class IdempotencyKeys:
    """Key -> the id it started, for the last `KEYS_KEPT` keys; thread-safe. A repeat that
    arrives while the first is still starting waits for it and gets the same id."""

    def __init__(self, kept: int = KEYS_KEPT) -> None:
        self._kept = kept
        self._lock = threading.Lock()
        self._done: OrderedDict[str, tuple[str, str]] = OrderedDict()  # key -> (fingerprint, id)
        self._starting: dict[str, threading.Event] = {}

    @staticmethod
    def check(key: str) -> str:
        if not re.fullmatch(KEY_PATTERN, key):
            raise IdempotencyKeyError(
                f"an idempotency key is 1 to {MAX_KEY_CHARS} printable ASCII characters, "
                "without spaces"
            )
        return key

    def once(self, key: str, fingerprint: str, start: Callable[[], str]) -> str:
        """The id `start()` gave for `key` the first time; `start` runs at most once per key.
        The same key with another `fingerprint` (another request) is refused."""
        self.check(key)
        while True:
            with self._lock:
                if key in self._done:
                    seen, found = self._done[key]
                    if seen != fingerprint:
                        raise IdempotencyKeyError(
                            "this idempotency key was already used for a different request "
                            f"(it started {found}); send a new key"
                        )
                    return found
                waiting = self._starting.get(key)
                if waiting is None:
                    started = self._starting[key] = threading.Event()
                    break
            waiting.wait()  # the first one is starting: its id, or its failure frees the key
        try:
            result = start()
        except BaseException:
            with self._lock:
                del self._starting[key]
            started.set()
            raise
        with self._lock:
            del self._starting[key]
            self._done[key] = (fingerprint, result)
            while len(self._done) > self._kept:
                self._done.popitem(last=False)
        started.set()
        return result

    def forget(self, result: str) -> None:
        """Forget the keys that started `result` (a deleted batch): a repeat starts afresh
        instead of answering an id that no longer leads anywhere."""
        with self._lock:
            for key in [k for k, (_, found) in self._done.items() if found == result]:
                del self._done[key]
