"""People on the real API (`uvicorn crewdash.api:app`), on SQLite and PostgreSQL: personal
tokens made by `python -m crewdash tokens create`, who may act on whose batch, the audit log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from crewdash.model.people import Person
from crewdash.store.history import Store
from tests.api_server import api_server
from tests.test_store import postgres_url  # noqa: F401 - a schema of its own in PostgreSQL

ROOT = Path(__file__).resolve().parent.parent
TEAM = {"CREWDASH_ADMINS": "boss@example.com", "CREWDASH_MEMBERS": "@example.com"}


def make_token(database: str, user: str, name: str = "t") -> str:
    """`python -m crewdash tokens create` against `database`: the token it prints."""
    made = subprocess.run(
        [sys.executable, "-m", "crewdash", "tokens", "create", "--user", user, "--name", name],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database, **TEAM},
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def until(check: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
    else:  # the module's schema: its batches, tokens and audit log start empty for each test
        url = request.getfixturevalue("postgres_url")
        store = Store(url)
        try:
            store.delete_all()
            store.forget_people()
        finally:
            store.close()
        yield url


def test_members_act_on_their_own_batches_admins_on_anyones_and_all_is_audited(
    tmp_path: Path, database: str
) -> None:
    env = {**TEAM, "DATABASE_URL": database, "CREWDASH_DEMO_LATENCY": "3"}
    with (
        api_server(tmp_path, **env) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        # no sign-in configured and no token yet: one anonymous user, as before accounts
        anonymous = client.get("/me").json()
        assert {k: anonymous[k] for k in ("id", "name", "role")} == {
            "id": "anonymous",
            "name": "anonymous",
            "role": "admin",
        }
        ann, bob, boss = (make_token(database, f"{u}@example.com") for u in ("ann", "bob", "boss"))
        # now every call needs a token (the API looks again within 2 s)
        until(lambda: client.get("/batches").status_code == 401, "a token became required")
        refused = client.get("/batches")
        assert "missing bearer token" in refused.json()["detail"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/me", headers=auth(ann)).json()["role"] == "member"
        assert client.get("/me", headers=auth(boss)).json()["role"] == "admin"

        batch = client.post(
            "/batches", json={"topics": ["a1", "a2"], "blueprint": "timing"}, headers=auth(ann)
        )
        assert batch.status_code == 202, batch.text
        batch_id = batch.json()["batch_id"]
        detail = client.get(f"/batches/{batch_id}", headers=auth(bob)).json()
        assert detail["created_by"] == "ann@example.com"  # the team sees each other's
        for path in (f"/batches/{batch_id}/cancel", f"/batches/{batch_id}/resume"):
            denied = client.post(path, headers=auth(bob))
            assert denied.status_code == 403, denied.text
            assert "started by ann@example.com" in denied.json()["detail"]
        crew = detail["crews"][0]["run_id"]
        denied = client.post(f"/batches/{batch_id}/crews/{crew}/cancel", headers=auth(bob))
        assert denied.status_code == 403
        assert client.post(f"/batches/{batch_id}/cancel", headers=auth(boss)).status_code == 200
        listed = client.get("/batches", headers=auth(ann)).json()
        assert [b["created_by"] for b in listed if b["batch_id"] == batch_id] == ["ann@example.com"]

        assert client.get("/audit", headers=auth(ann)).status_code == 403
        log = client.get("/audit", headers=auth(boss)).json()
        seen = [(e["user"], e["action"], e["object"], e["outcome"]) for e in reversed(log)]
        target = f"batch {batch_id}"
        assert ("ann@example.com", "run", target, "ok") in seen
        assert ("bob@example.com", "cancel", target, "denied") in seen
        assert ("bob@example.com", "resume", target, "denied") in seen
        assert ("boss@example.com", "cancel", target, "ok") in seen
        assert seen.index(("ann@example.com", "run", target, "ok")) < seen.index(
            ("boss@example.com", "cancel", target, "ok")
        )


def wait_for_done(client: httpx.Client, batch_id: str, token: str) -> None:
    """Until the batch's `done` server-sent event."""
    path = f"/batches/{batch_id}/events?chunks=false"
    with client.stream("GET", path, headers=auth(token)) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("event:") and line.split(":", 1)[1].strip() == "done":
                return
    raise AssertionError(f"batch {batch_id} sent no done event")


def test_members_delete_their_own_ended_batches_admins_anyones_and_all_is_audited(
    tmp_path: Path, database: str
) -> None:
    env = {**TEAM, "DATABASE_URL": database, "CREWDASH_OUTPUTS_DIR": str(tmp_path / "outputs")}
    with (
        api_server(tmp_path, **env) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        ann, bob, boss = (make_token(database, f"{u}@example.com") for u in ("ann", "bob", "boss"))
        # held running until cancelled: the demo model waits 120 s before its first token
        started = client.post(
            "/batches",
            json={"topics": ["held [demo:wait=120]"], "blueprint": "timing"},
            headers=auth(ann),
        )
        assert started.status_code == 202, started.text
        held = started.json()["batch_id"]
        denied = client.delete(f"/batches/{held}", headers=auth(bob))
        assert denied.status_code == 403, denied.text
        assert "bob@example.com may not delete" in denied.json()["detail"]
        running = client.delete(f"/batches/{held}", headers=auth(ann))
        assert running.status_code == 409, running.text
        assert "cancel it first" in running.json()["detail"]
        assert client.get(f"/batches/{held}", headers=auth(ann)).status_code == 200
        assert client.post(f"/batches/{held}/cancel", headers=auth(ann)).status_code == 200
        assert client.delete(f"/batches/{held}", headers=auth(ann)).status_code == 204
        for gone in (
            client.get(f"/batches/{held}", headers=auth(ann)),
            client.delete(f"/batches/{held}", headers=auth(ann)),
            client.get(f"/batches/{held}/events", headers=auth(ann)),
        ):
            assert gone.status_code == 404, gone.text

        started = client.post(
            "/batches", json={"topics": ["bob's"], "blueprint": "timing"}, headers=auth(bob)
        )
        bobs = started.json()["batch_id"]
        wait_for_done(client, bobs, bob)
        assert client.delete(f"/batches/{bobs}", headers=auth(boss)).status_code == 204
        assert client.get(f"/batches/{bobs}", headers=auth(bob)).status_code == 404
        listed = {b["batch_id"] for b in client.get("/batches", headers=auth(boss)).json()}
        assert not {held, bobs} & listed

        for odd in ("%00", "c0ffee00%0000", "%ED%A0%80", "c0ffee%C0%80", "x" * 300):
            refused = client.delete(f"/batches/{odd}", headers=auth(boss))
            assert refused.status_code == 404, (odd, refused.text)

        log = client.get("/audit", headers=auth(boss), params={"action": "delete"}).json()
        seen = [(e["user"], e["object"], e["outcome"]) for e in reversed(log)]
        assert seen == [
            ("bob@example.com", f"batch {held}", "denied"),
            ("ann@example.com", f"batch {held}", "refused"),
            ("ann@example.com", f"batch {held}", "ok"),
            ("boss@example.com", f"batch {bobs}", "ok"),
        ]


def test_personal_tokens_are_made_used_listed_and_revoked_through_the_api(
    tmp_path: Path, database: str
) -> None:
    env = {**TEAM, "DATABASE_URL": database, "CREWDASH_API_TOKEN": "service-secret"}
    with (
        api_server(tmp_path, **env) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert client.get("/me", headers=auth("service-secret")).json()["id"] == "service"
        # the service is no person: it makes no personal token for itself
        assert (
            client.post("/tokens", json={"name": "x"}, headers=auth("service-secret")).status_code
            == 403
        )
        ann = make_token(database, "ann@example.com", "first")
        made = client.post("/tokens", json={"name": "laptop"}, headers=auth(ann))
        assert made.status_code == 201, made.text
        second, info = made.json()["token"], made.json()["info"]
        assert info["user"] == "ann@example.com" and info["name"] == "laptop"
        assert client.get("/me", headers=auth(second)).json()["id"] == "ann@example.com"
        mine = client.get("/tokens", headers=auth(ann)).json()
        assert {t["name"] for t in mine} == {"first", "laptop"}
        assert all("token" not in t for t in mine)
        assert next(t for t in mine if t["name"] == "laptop")["last_used_at"] is not None
        bad = client.post("/tokens", json={"name": "nul\u0000"}, headers=auth(ann))
        assert bad.status_code == 422  # the same answer on either database
        assert client.delete(f"/tokens/{info['id']}", headers=auth(ann)).status_code == 204
        gone = client.get("/me", headers=auth(second))
        assert gone.status_code == 401 and gone.json()["detail"] == "this token was revoked"
        assert client.delete(f"/tokens/{info['id']}", headers=auth(ann)).status_code == 404
        wrong = client.get("/me", headers=auth(ann[:-3] + "xyz"))
        assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown token"
        # a token of someone the settings no longer let in (made before the lists changed)
        store = Store(database)
        try:
            eve = store.create_token(Person("eve@evil.com"), "old").token
        finally:
            store.close()
        refused = client.get("/me", headers=auth(eve))
        assert refused.status_code == 401 and "no longer allowed" in refused.json()["detail"]
        log = client.get("/audit", headers=auth("service-secret")).json()
        assert {(e["user"], e["action"]) for e in log} >= {
            ("ann@example.com", "create token"),
            ("ann@example.com", "revoke token"),
        }


def test_the_cli_refuses_a_user_the_settings_do_not_let_in(tmp_path: Path) -> None:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "crewdash",
            "tokens",
            "create",
            "--user",
            "eve@evil.com",
            "--name",
            "x",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}", **TEAM},
        timeout=120,
    )
    assert made.returncode != 0 and made.stdout == ""
    assert "eve@evil.com is not allowed" in made.stderr and "Traceback" not in made.stderr


def test_a_daily_cap_refuses_a_batch_past_what_is_left_and_everyone_sees_their_spend(
    tmp_path: Path, database: str
) -> None:
    """The demo model at a made-up $1,000 per million tokens (about $0.41 a crew estimated)
    under a $1.00 daily cap: one crew runs, ten more are refused with a 429 until tomorrow
    (at least $1.40 even once the estimate has learned from the first crew)."""
    prices = tmp_path / "prices.yaml"
    prices.write_text("crewdash-demo: {input: 1000, output: 1000}\n")
    env = {
        **TEAM,
        "DATABASE_URL": database,
        "CREWDASH_API_TOKEN": "service-secret",
        "CREWDASH_PRICES_FILE": str(prices),
        "CREWDASH_DAILY_CAP_USD": "1",
        "CREWDASH_DEMO_LATENCY": "0.2",
    }
    with (
        api_server(tmp_path, **env) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        ann, bob = (make_token(database, f"{u}@example.com") for u in ("ann", "bob"))
        first = client.post("/batches", json={"topics": ["one"]}, headers=auth(ann))
        assert first.status_code == 202, first.text
        ten = [f"topic {i}" for i in range(10)]
        more = client.post("/batches", json={"topics": ten}, headers=auth(ann))
        assert more.status_code == 429, more.text
        detail = more.json()["detail"]
        assert (
            detail.startswith("this batch is estimated at $") and "left of your daily cap" in detail
        )
        assert 0 < int(more.headers["retry-after"]) <= 86_400
        # Bob has a cap of his own
        assert (
            client.post("/batches", json={"topics": ["b1"]}, headers=auth(bob)).status_code == 202
        )
        me = client.get("/me", headers=auth(ann)).json()["spend"]
        assert me["cap_usd"] == 1.0 and me["today"]["batches"] == 1
        assert 0 < me["today"]["usd"] <= 0.5 and me["left_usd"] == pytest.approx(
            1.0 - me["today"]["usd"], abs=1e-6
        )
        assert me["month"]["usd"] >= me["today"]["usd"]
        assert client.get("/spend", headers=auth(ann)).status_code == 403
        everyone = client.get("/spend?period=month", headers=auth("service-secret")).json()
        assert {s["user"] for s in everyone} == {"ann@example.com", "bob@example.com"}
        refused = client.get(
            "/audit", params={"user": "ann@example.com"}, headers=auth("service-secret")
        ).json()
        assert any(e["outcome"] == "refused" and "daily cap" in e["detail"] for e in refused)


def test_an_expired_token_is_a_401_that_says_when_it_expired(tmp_path: Path, database: str) -> None:
    env = {**TEAM, "DATABASE_URL": database}
    with (
        api_server(tmp_path, **env) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        ann = make_token(database, "ann@example.com")
        made = client.post(
            "/tokens", json={"name": "a day", "expires_in_days": 1}, headers=auth(ann)
        )
        assert made.status_code == 201, made.text
        info = made.json()["info"]
        assert info["expires_at"] == pytest.approx(info["created_at"] + 86_400)
        short = made.json()["token"]
        assert client.get("/me", headers=auth(short)).status_code == 200
        never = client.post("/tokens", json={"name": "x", "expires_in_days": 0}, headers=auth(ann))
        assert never.status_code == 422
        store = Store(database)
        try:  # a day later
            with store.engine.begin() as conn:
                conn.execute(
                    text("update api_tokens set expires_at = :t where id = :i"),
                    {"t": time.time() - 1, "i": info["id"]},
                )
        finally:
            store.close()
        expired = client.get("/me", headers=auth(short))
        assert expired.status_code == 401
        assert expired.json()["detail"].startswith("this token expired on ")
