"""Password guessing is slowed down, then locked out, per session and per client address
(issue 20, item 17): the guard's rule on a clock the test turns, and the login form through
Streamlit's AppTest, where a new session from the same address is still held back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from crewdash.base.login_guard import LoginGuard
from tests.apptest import APP
from ui.session import login_guard, runtime

PASSWORD = "guard-pw-17"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_free_tries_then_a_growing_wait_then_a_lockout() -> None:
    clock = Clock()
    guard = LoginGuard(clock=clock)
    keys = ("session:a", "address:10.0.0.1")
    waits = []
    for _ in range(10):
        assert guard.wait_s(*keys) == 0  # each try is made once the wait is over
        waits.append(guard.failed(*keys))
        clock.now += waits[-1]
    assert waits[:4] == [0, 0, 0, 0]
    assert waits[4:9] == [1, 2, 4, 8, 16]  # doubling after the free tries
    assert waits[9] == 300  # locked out
    clock.now -= 300
    assert guard.locked(*keys) and guard.locked("address:10.0.0.1")
    assert guard.wait_s("address:10.0.0.1", "session:new") == 300  # a new session: still held
    assert guard.wait_s("address:10.0.0.2") == 0  # another address is not
    clock.now += 301
    assert guard.wait_s(*keys) == 0 and not guard.locked(*keys)
    guard.succeeded(*keys)
    assert guard.failed(*keys) == 0  # a right password started the count afresh


def test_counts_are_forgotten_after_a_quiet_while() -> None:
    clock = Clock()
    guard = LoginGuard(clock=clock)
    for _ in range(6):
        clock.now += guard.failed("address:x")
    clock.now += 3600
    assert guard.failed("address:x") == 0


@pytest.fixture()
def password(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CREWDASH_PASSWORD", PASSWORD)
    monkeypatch.setenv("CREWDASH_DEMO_LATENCY", "0.05")
    login_guard.clear()
    runtime.clear()
    yield
    login_guard.clear()
    runtime().close()
    runtime.clear()


def attempt(at: AppTest, typed: str) -> list[str]:
    at.text_input(key="auth.password").input(typed)
    at.button(key="FormSubmitter:auth.form-Enter").click().run()
    assert not at.exception
    return [e.value for e in at.error]


def logged_in(at: AppTest) -> bool:
    return bool(at.session_state["auth.ok"]) if "auth.ok" in at.session_state else False


def test_the_login_form_holds_guessers_back_across_sessions(password: None) -> None:
    guard = login_guard()  # the one the sessions share
    guard.base_delay_s = 8.0  # a first wait long enough to open a second session in
    first = AppTest.from_file(APP, default_timeout=30)
    first.run()
    for _ in range(4):
        assert attempt(first, "wrong") == ["Wrong password."]
    fifth = attempt(first, "wrong")
    assert fifth[0].startswith("Wrong password. Too many wrong passwords: try again in")
    # during the wait even the right password is not checked
    assert "Too many wrong passwords" in attempt(first, PASSWORD)[0]
    assert not logged_in(first)
    # a new browser session from the same address is held back too
    second = AppTest.from_file(APP, default_timeout=30)
    second.run()
    assert "Too many wrong passwords" in attempt(second, PASSWORD)[0]
    assert not logged_in(second)
    deadline = time.monotonic() + 30
    while guard.wait_s("address:localhost") > 0:  # the rest of the 8 s
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert attempt(second, PASSWORD) == []
    assert logged_in(second)
