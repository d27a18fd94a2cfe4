"""The shared password's login as a signed, expiring cookie, so it survives a reload.

The cookie holds the user and the time of the login, signed with itsdangerous; it grants
nothing once older than the maximum age (checked here on the signed time, never trusting the
browser's expiry). The key is derived from the password (and `CREWDASH_COOKIE_SECRET` when set),
so changing the password invalidates every cookie. The derivation is scrypt, not a plain hash:
the cookie is readable by the page's JavaScript, and with a fast key a copied cookie would let a
weak password be guessed offline at billions a second, past the login guard. Anything that is
not a valid cookie, odd bytes included, reads as logged out; checking never raises.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

COOKIE_NAME = "crewdash_login"
DEFAULT_DAYS = 7.0
MAX_COOKIE_CHARS = 200  # a real one is ~50: anything longer is not ours
_SALT = "crewdash.login-cookie"
# scrypt at 16 MiB and ~40 ms once per process (cached): cheap for the server, costly per guess.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 2**20, "dklen": 32}


class CookieState(StrEnum):
    """What a request's login cookie says."""

    MISSING = "missing"
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"  # tampered, another password's, or not a login cookie at all


@lru_cache(maxsize=4)
def _key(password: str, secret: str) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=f"{_SALT}\0{secret}".encode("utf-8", "surrogatepass"),
        **_SCRYPT,
    )


class _Signer(TimestampSigner):
    """itsdangerous' timestamp signer on a clock tests can turn."""

    def __init__(self, key: bytes, clock: Callable[[], float]) -> None:
        super().__init__(key, salt=_SALT, digest_method=hashlib.sha256)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class LoginCookie:
    """Issues and checks the login cookie of one password; thread-safe (no state)."""

    def __init__(
        self,
        password: str,
        secret: str | None = None,
        max_age_s: float = DEFAULT_DAYS * 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not password:
            raise ValueError("a login cookie needs a password to derive its key from")
        self.max_age_s = max_age_s
        self._key = _key(password, secret or "")
        self._signer = _Signer(self._key, clock)

    def issue(self, user: str, at: float | None = None) -> str:
        """A cookie value logging `user` in from `at` (default: now) until the maximum age; the
        same time gives the same value, so a caller may keep the time instead of the value."""
        signer = self._signer if at is None else _Signer(self._key, lambda: at)
        return signer.sign(user).decode("ascii")

    def check(self, value: str | None, user: str) -> CookieState:
        """Whether `value` is a cookie this password issued to `user`, still young enough."""
        if not value:
            return CookieState.MISSING
        if len(value) > MAX_COOKIE_CHARS or not value.isascii():
            return CookieState.INVALID
        try:
            signed = self._signer.unsign(value, max_age=max(1, int(self.max_age_s)))
        except SignatureExpired:  # also a signing time in the future (a clock set back)
            return CookieState.EXPIRED
        except (BadSignature, ValueError):
            return CookieState.INVALID
        return CookieState.VALID if signed == user.encode() else CookieState.INVALID
