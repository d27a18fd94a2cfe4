"""Personal API tokens and the audit log in the history store, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from crewdash.base.errors import SettingsError
from crewdash.model.people import Person, Role
from crewdash.store.accounts import LAST_USED_EVERY_S
from crewdash.store.history import Store
from tests.test_store import postgres_url, store  # noqa: F401 - both databases

ANN = Person("ann@example.com", "Ann")
BOB = Person("bob@example.com", "Bob")
BOSS = Person("boss@example.com", "Boss", Role.ADMIN)


@pytest.fixture()
def accounts(store: Store) -> Store:  # noqa: F811 - the fixture of tests/test_store.py
    store.forget_people()
    return store


def test_a_token_is_shown_once_stored_as_a_digest_and_finds_its_owner(accounts: Store) -> None:
    assert not accounts.has_tokens()
    new = accounts.create_token(ANN, "  nightly report ")
    assert new.token.startswith(f"cdt_{new.info.id}_") and len(new.token) > 40
    assert new.info.name == "nightly report" and new.info.user_id == ANN.id
    with accounts.engine.connect() as conn:
        stored = " ".join(str(v) for v in conn.execute(text("select * from api_tokens")).one())
    assert new.token not in stored and new.token.split("_")[2] not in stored
    assert accounts.has_tokens()
    info, why = accounts.token_owner(new.token)
    assert info is not None and why == "" and info.user_id == ANN.id
    (listed,) = accounts.tokens_of(ANN.id)
    assert listed.last_used_at is not None and listed.active


def test_wrong_unknown_and_revoked_tokens_say_why(accounts: Store) -> None:
    new = accounts.create_token(ANN, "ci")
    assert accounts.token_owner("nope") == (None, "not a crewdash token")
    assert accounts.token_owner(f"cdt_{new.info.id}_wrong-secret") == (None, "unknown token")
    assert accounts.token_owner("cdt_zz\x00_x") == (None, "not a crewdash token")
    assert not accounts.revoke_token(new.info.id, BOB)  # not Bob's
    assert not accounts.revoke_token("ab\x00", ANN)  # odd bytes: no such token, on either DB
    assert accounts.revoke_token(new.info.id, ANN)
    assert not accounts.revoke_token(new.info.id, ANN)  # once
    assert accounts.token_owner(new.token) == (None, "this token was revoked")
    assert not accounts.has_tokens()
    other = accounts.create_token(BOB, "bob's")
    assert accounts.revoke_token(other.info.id, BOSS)  # an admin revokes anyone's
    assert {t.user_id for t in accounts.tokens_of()} == {ANN.id, BOB.id}


def test_last_use_is_written_at_most_once_a_minute(accounts: Store) -> None:
    new = accounts.create_token(ANN, "busy client")
    accounts.token_owner(new.token)
    (first,) = accounts.tokens_of(ANN.id)
    accounts.token_owner(new.token)
    (second,) = accounts.tokens_of(ANN.id)
    assert first.last_used_at == second.last_used_at
    with accounts.engine.begin() as conn:  # a minute ago
        conn.execute(
            text("update api_tokens set last_used_at = :at"),
            {"at": time.time() - LAST_USED_EVERY_S - 1},
        )
    accounts.token_owner(new.token)
    (third,) = accounts.tokens_of(ANN.id)
    assert third.last_used_at is not None and third.last_used_at > time.time() - 5


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "needs a name"), ("x" * 101, "at most 100"), ("two\nlines", "one line")],
)
def test_a_bad_token_name_is_refused_with_a_reason(
    accounts: Store, name: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        accounts.create_token(ANN, name)


def test_the_audit_log_keeps_every_action_storably_newest_first(accounts: Store) -> None:
    accounts.audit(ANN, "run", "batch aaa", detail="3 crews")
    accounts.audit(BOB, "cancel", "batch aaa", "denied", "started by ann\x00@example.com")
    accounts.audit(BOSS, "cancel", "batch aaa")
    log = accounts.audit_log()
    assert [(e.user_id, e.action, e.outcome) for e in log] == [
        (BOSS.id, "cancel", "ok"),
        (BOB.id, "cancel", "denied"),
        (ANN.id, "run", "ok"),
    ]
    assert log[1].detail == "started by ann\ufffd@example.com"  # a NUL, on either database
    assert [e.action for e in accounts.audit_log(user_id=ANN.id)] == ["run"]
    assert len(accounts.audit_log(action="cancel", limit=1)) == 1
    assert accounts.audit_log(action="run\x00", user_id="ann\x00") == []  # no 500 on PostgreSQL


def test_an_expired_token_says_so_and_no_longer_counts_as_sign_in(accounts: Store) -> None:
    new = accounts.create_token(ANN, "a week", expires_in_days=7)
    assert new.info.expires_at == pytest.approx(new.info.created_at + 7 * 86_400)
    assert accounts.token_owner(new.token)[0] is not None and accounts.has_tokens()
    with accounts.engine.begin() as conn:  # a week later
        conn.execute(text("update api_tokens set expires_at = :t"), {"t": time.time() - 1})
    info, why = accounts.token_owner(new.token)
    assert info is None and why.startswith("this token expired on ") and "UTC" in why
    assert not accounts.has_tokens()
    (listed,) = accounts.tokens_of(ANN.id)
    assert listed.expired and not listed.active
    for days in (0, -1, 3_651):
        with pytest.raises(SettingsError, match="1 to 3650 days"):
            accounts.create_token(ANN, "bad", expires_in_days=days)
