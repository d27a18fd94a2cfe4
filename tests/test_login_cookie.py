"""The shared password's login cookie (the "team" issue): a valid one logs in until its maximum
age; an expired, tampered, foreign or garbage one reads as logged out, never as an exception."""

from __future__ import annotations

import random
import string

import pytest

from crewdash.base.login_cookie import COOKIE_NAME, CookieState, LoginCookie

DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def cookie(
    password: str = "pw", secret: str | None = None, clock: Clock | None = None
) -> LoginCookie:
    return LoginCookie(password, secret, max_age_s=7 * DAY, clock=clock or Clock())


def test_a_fresh_cookie_logs_its_user_in_until_its_maximum_age() -> None:
    clock = Clock()
    login = cookie(clock=clock)
    value = login.issue("team")
    assert COOKIE_NAME == "crewdash_login"
    assert value.isascii() and ";" not in value and " " not in value and len(value) < 80
    assert login.check(value, "team") is CookieState.VALID
    clock.now += 7 * DAY - 1
    assert login.check(value, "team") is CookieState.VALID
    clock.now += 2
    assert login.check(value, "team") is CookieState.EXPIRED


def test_a_login_time_gives_the_same_cookie_each_time() -> None:
    clock = Clock()
    login = cookie(clock=clock)
    at = clock.now - 60
    assert login.issue("team", at) == login.issue("team", at) != login.issue("team")
    clock.now = at + 7 * DAY + 1
    assert login.check(login.issue("team", at), "team") is CookieState.EXPIRED


def test_a_cookie_signed_in_the_future_is_expired_not_valid() -> None:
    clock = Clock()
    value = cookie(clock=clock).issue("team")
    clock.now -= 3600  # the server's clock set back
    assert cookie(clock=clock).check(value, "team") is CookieState.EXPIRED
    absurd = LoginCookie("pw", clock=lambda: 1e16).issue("team")  # past any datetime
    assert cookie(clock=clock).check(absurd, "team") in (CookieState.EXPIRED, CookieState.INVALID)


def test_another_password_or_secret_invalidates_every_cookie() -> None:
    value = cookie("old password").issue("team")
    assert cookie("old password").check(value, "team") is CookieState.VALID
    assert cookie("new password").check(value, "team") is CookieState.INVALID
    assert cookie("old password", "a secret").check(value, "team") is CookieState.INVALID
    with_secret = cookie("old password", "a secret").issue("team")
    assert cookie("old password", "a secret").check(with_secret, "team") is CookieState.VALID
    assert cookie("old password", "another").check(with_secret, "team") is CookieState.INVALID


def test_a_tampered_cookie_is_invalid() -> None:
    login = cookie()
    value = login.issue("team")
    user, stamp, signature = value.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    later = LoginCookie("pw", max_age_s=7 * DAY, clock=lambda: 1_900_000_000.0).issue("team")
    for tampered in (
        f"{user}.{stamp}.{flipped}",
        f"admin.{stamp}.{signature}",
        f"{user}.{later.split('.')[1]}.{signature}",  # a later time under the old signature
        f"{user}.{stamp}",
        value + "x",
        value.upper(),
    ):
        assert login.check(tampered, "team") is CookieState.INVALID, tampered
    assert login.check(login.issue("someone"), "team") is CookieState.INVALID


def test_no_cookie_is_missing() -> None:
    assert cookie().check(None, "team") is CookieState.MISSING
    assert cookie().check("", "team") is CookieState.MISSING


@pytest.mark.parametrize(
    "garbage",
    [
        ".",
        "..",
        "team..",
        "team.!!!.!!!",
        "team.AAAAAAAAAAAAAAAAAAAAAAAA.x",  # a timestamp past any datetime
        "\x00\x01\x02",
        "é.ü.ß",
        "\udcff",  # a lone surrogate
        "team.\ud800.x",
        "x" * 10_000,
        "%7B%22user%22%3A%22team%22%7D",
    ],
)
def test_garbage_is_invalid_and_never_an_exception(garbage: str) -> None:
    assert cookie().check(garbage, "team") is CookieState.INVALID


def test_random_bytes_are_never_valid_and_never_raise() -> None:
    login = cookie()
    rng = random.Random(7)
    alphabet = string.printable + "".join(map(chr, range(0x80, 0x100)))
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 80)))
        assert login.check(value, "team") is CookieState.INVALID


def test_a_password_is_required() -> None:
    with pytest.raises(ValueError):
        LoginCookie("")
