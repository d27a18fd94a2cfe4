"""Password guessing, slowed down and then locked out: per browser session and per client
address, in one process-wide object, so opening a new session from the same address starts no
fresh count.

The first `FREE_TRIES` wrong passwords cost nothing; each further one makes the next try wait
twice as long (1 s, 2 s, 4 s… up to `MAX_DELAY_S`); after `LOCK_AFTER` the key is locked for
`LOCK_S`. A try while a key waits is refused without being checked, even with the right
password. A right password clears the counts of its keys; counts are forgotten after `FORGET_S`
without a wrong try.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_TRIES = 5
LOCK_AFTER = 10
BASE_DELAY_S = 1.0
MAX_DELAY_S = 30.0
LOCK_S = 300.0
FORGET_S = 900.0
KEYS_KEPT = 100_000


@dataclass
class _Tries:
    wrong: int = 0
    last: float = 0.0
    allowed_at: float = 0.0  # no try before this time


class LoginGuard:
    """Wrong-password counts per key (e.g. `session:<id>`, `address:<ip>`); thread-safe."""

    def __init__(
        self,
        free_tries: int = FREE_TRIES,
        lock_after: int = LOCK_AFTER,
        base_delay_s: float = BASE_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
        lock_s: float = LOCK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_tries = free_tries
        self.lock_after = lock_after
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.lock_s = lock_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tries: OrderedDict[str, _Tries] = OrderedDict()

    def _live(self, key: str, now: float) -> _Tries | None:
        tries = self._tries.get(key)
        if tries is not None and now - tries.last > max(FORGET_S, self.lock_s):
            del self._tries[key]
            return None
        return tries

    def wait_s(self, *keys: str) -> float:
        """Seconds before any of these keys may try again (0: now)."""
        now = self._clock()
        with self._lock:
            waits = [t.allowed_at - now for k in keys if (t := self._live(k, now)) is not None]
        return max([0.0, *waits])

    def locked(self, *keys: str) -> bool:
        """Whether one of the keys has reached the lockout (not only a delay)."""
        now = self._clock()
        with self._lock:
            return any(
                t.wrong >= self.lock_after and t.allowed_at > now
                for k in keys
                if (t := self._live(k, now)) is not None
            )

    def failed(self, *keys: str) -> float:
        """Count a wrong password for every key; the seconds before the next try."""
        now = self._clock()
        with self._lock:
            for key in keys:
                tries = self._live(key, now) or _Tries()
                tries.wrong += 1
                tries.last = now
                if tries.wrong >= self.lock_after:
                    tries.allowed_at = now + self.lock_s
                elif tries.wrong >= self.free_tries:
                    delay = self.base_delay_s * 2 ** (tries.wrong - self.free_tries)
                    tries.allowed_at = now + min(self.max_delay_s, delay)
                self._tries[key] = tries
                self._tries.move_to_end(key)
            while len(self._tries) > KEYS_KEPT:
                self._tries.popitem(last=False)
        return self.wait_s(*keys)

    def succeeded(self, *keys: str) -> None:
        """The right password: these keys start afresh."""
        with self._lock:
            for key in keys:
                self._tries.pop(key, None)
