"""Who calls the API, what they may do, and the routes of people: `/me`, `/tokens`, `/audit`.

Every request but the health check and the docs is made by one `Person`
(`crewdash.model.people`): the service token (`CREWDASH_API_TOKEN`) is the admin `service`; a
personal token (`cdt_…`, made on the account page or by `python -m crewdash tokens create`) is
its owner, with the role `CREWDASH_ADMINS` / `CREWDASH_MEMBERS` give them today. Whenever any
sign-in is configured (a service token, the dashboard's password, an identity provider in
`.streamlit/secrets.toml`, or any personal token in the database), a call without a token is a
401 that says why; with none, every caller is `anonymous`, who may do everything, as before.

Acting on a batch someone else started (cancel, resume, delete) needs an admin: a member gets a
403.
Every such action, allowed or not, is written to the audit log.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from crewdash.api.context import runtime_of
from crewdash.base.settings import Settings
from crewdash.model.people import ANONYMOUS, SERVICE, Person, TeamPolicy
from crewdash.model.spend import day_start, month_start
from crewdash.schemas.common import PROBLEMS
from crewdash.schemas.people import (
    AuditOut,
    Me,
    MySpend,
    SpendOut,
    TokenCreated,
    TokenOut,
    TokenRequest,
)
from crewdash.store.accounts import TOKEN_PREFIX

# Open without a token: the health check and the documentation.
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
TOKENS_SEEN_FOR_S = 2.0  # how long "is there any personal token?" is remembered
# Where Streamlit reads its secrets from (the project's folder, then the user's).
SECRETS_FILES = (Path(".streamlit/secrets.toml"), Path.home() / ".streamlit/secrets.toml")

CallNext = Callable[[Request], Awaitable[Response]]


def identity_provider_configured(files: Sequence[Path] = SECRETS_FILES) -> bool:
    """Whether the dashboard signs people in through an identity provider (`[auth]` in
    Streamlit's secrets): read as TOML, without Streamlit (the core never imports it)."""
    for path in files:
        try:
            if "auth" in tomllib.loads(path.read_text(encoding="utf-8")):
                return True
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # the dashboard says what is wrong with it; here it signs no one in
    return False


def _bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer …` header, as the bytes sent (UTF-8)."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    return given.encode("latin-1").decode("utf-8", "surrogateescape")


@dataclass
class Access:
    """What the API knows of sign-in, read once at start-up: the service token, whether the
    dashboard signs people in, and the team's roles."""

    service_token: str | None = None
    signs_in: bool = False  # a password or an identity provider on the dashboard
    policy: TeamPolicy = field(default_factory=TeamPolicy)
    _tokens_seen: tuple[float, bool] = (0.0, False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        return cls(
            service_token=settings.secret("CREWDASH_API_TOKEN"),
            signs_in=bool(settings.secret("CREWDASH_PASSWORD")) or identity_provider_configured(),
            policy=TeamPolicy.parse(settings.admins, settings.members),
        )

    async def _any_personal_token(self, request: Request) -> bool:
        at, seen = self._tokens_seen
        if time.monotonic() - at < TOKENS_SEEN_FOR_S:
            return seen
        store = runtime_of(request).store
        seen = store is not None and await asyncio.to_thread(store.has_tokens)
        self._tokens_seen = (time.monotonic(), seen)
        return seen

    async def person(self, request: Request) -> Person | str:
        """Who makes this request, or why it is refused (a 401's reason)."""
        given = _bearer(request.headers.get("authorization", ""))
        if given is None:
            if self.service_token or self.signs_in or await self._any_personal_token(request):
                return (
                    "missing bearer token: send Authorization: Bearer <your personal token, or "
                    "CREWDASH_API_TOKEN>"
                )
            return ANONYMOUS
        if self.service_token and hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"),
            self.service_token.encode("utf-8", "surrogateescape"),
        ):
            return SERVICE
        store = runtime_of(request).store
        if not given.startswith(TOKEN_PREFIX) or store is None:
            return "wrong bearer token"
        info, why = await asyncio.to_thread(store.token_owner, given)
        if info is None:
            return why
        person = self.policy.person(info.user_id, info.user_name)
        if person is None:
            return f"{info.user_id} is no longer allowed to use crewdash (CREWDASH_MEMBERS)"
        return person

    def middleware(self) -> Callable[[Request, CallNext], Awaitable[Response]]:
        """Put the caller on `request.state.person`, or answer 401 with the reason."""

        async def identify(request: Request, call_next: CallNext) -> Response:
            if request.url.path in OPEN_PATHS:
                return await call_next(request)
            who = await self.person(request)
            if isinstance(who, str):
                return JSONResponse(
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                    content={"detail": who},
                )
            request.state.person = who
            return await call_next(request)

        return identify


def person_of(request: Request) -> Person:
    """The caller (`Access.middleware` put them there)."""
    person: Person = getattr(request.state, "person", ANONYMOUS)
    return person


async def audit(
    request: Request, action: str, obj: str = "", outcome: str = "ok", detail: str = ""
) -> None:
    """Write one action of the caller to the audit log (nothing without a history database)."""
    store = runtime_of(request).store
    if store is not None:
        await asyncio.to_thread(store.audit, person_of(request), action, obj, outcome, detail)


async def may_act_on(request: Request, owner: str, action: str, obj: str) -> None:
    """A 403 (written to the audit log) unless the caller may `action` what `owner` started."""
    who = person_of(request)
    if not who.may_act_on(owner):
        await audit(request, action, obj, "denied", f"started by {owner or 'nobody known'}")
        raise HTTPException(
            status_code=403,
            detail=f"{who.id} may not {action} {obj}: it was started by "
            f"{owner or 'someone before accounts existed'}; ask them or an admin",
        )


router = APIRouter()


@router.get("/me", response_model=Me, responses=PROBLEMS)
async def me(request: Request) -> Me:
    """Who the API takes the caller for, their role, and their spend today and this month."""
    who, runtime = person_of(request), runtime_of(request)
    if runtime.store is None:
        return Me.of(who)
    today, month = await asyncio.gather(
        asyncio.to_thread(runtime.store.spend_of, who.id, day_start()),
        asyncio.to_thread(runtime.store.spend_of, who.id, month_start()),
    )
    return Me.of(who, MySpend.of(who.id, today, month, runtime.spend_cap))


@router.get("/spend", response_model=list[SpendOut], responses=PROBLEMS)
async def spend(
    request: Request,
    period: Literal["today", "month"] = Query(default="today", description="a UTC day or month"),
) -> list[SpendOut]:
    """Everyone's spend today or this month, the biggest first (admins only)."""
    if not person_of(request).is_admin:
        raise HTTPException(403, "everyone's spend is for admins (CREWDASH_ADMINS); see /me")
    store = runtime_of(request).store
    if store is None:
        return []
    since = day_start() if period == "today" else month_start()
    spent = await asyncio.to_thread(store.spend_by_user, since)
    ranked = sorted(spent.items(), key=lambda kv: (-kv[1].usd, -kv[1].tokens, kv[0]))
    return [SpendOut.of(user, s) for user, s in ranked]


def _personal(request: Request) -> Person:
    who = person_of(request)
    if who.id in (ANONYMOUS.id, SERVICE.id) or runtime_of(request).store is None:
        raise HTTPException(
            status_code=403,
            detail="personal tokens belong to a person: sign in on the dashboard's account "
            "page, or run `python -m crewdash tokens create --user EMAIL --name NAME`"
            if runtime_of(request).store is not None
            else "personal tokens need the history database (DATABASE_URL)",
        )
    return who


@router.get("/tokens", response_model=list[TokenOut], responses=PROBLEMS)
async def list_tokens(request: Request) -> list[TokenOut]:
    """The caller's tokens (an admin: everyone's), newest first; never the tokens themselves."""
    who = person_of(request)
    store = runtime_of(request).store
    if store is None:
        return []
    rows = await asyncio.to_thread(store.tokens_of, None if who.is_admin else who.id)
    return [TokenOut.of(r) for r in rows]


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=PROBLEMS)
async def create_token(request: Request, body: TokenRequest) -> TokenCreated:
    """A new personal token for the caller: the answer holds it this once."""
    who = _personal(request)
    store = runtime_of(request).store
    assert store is not None  # _personal
    new = await asyncio.to_thread(store.create_token, who, body.name, body.expires_in_days)
    await audit(request, "create token", new.info.id, detail=new.info.name)
    return TokenCreated.of(new)


@router.delete("/tokens/{token_id}", status_code=204, responses=PROBLEMS)
async def revoke_token(request: Request, token_id: str) -> Response:
    """Revoke one of the caller's tokens (an admin: anyone's); 404 if there is none to."""
    store = runtime_of(request).store
    if store is None or len(token_id) > 16:
        raise HTTPException(404, f"no active token {token_id!r} of yours")
    if not await asyncio.to_thread(store.revoke_token, token_id, person_of(request)):
        await audit(request, "revoke token", token_id, "failed", "no such active token")
        raise HTTPException(404, f"no active token {token_id!r} of yours")
    await audit(request, "revoke token", token_id)
    return Response(status_code=204)


@router.get("/audit", response_model=list[AuditOut], responses=PROBLEMS)
async def audit_log(
    request: Request,
    limit: int = Query(default=200, ge=1, le=5000),
    user: str | None = Query(default=None, max_length=320),
    action: str | None = Query(default=None, max_length=40),
) -> list[AuditOut]:
    """The audit log, newest first (admins only): who did what, to what, and how it ended."""
    if not person_of(request).is_admin:
        raise HTTPException(403, "the audit log is for admins (CREWDASH_ADMINS)")
    store = runtime_of(request).store
    if store is None:
        return []
    rows = await asyncio.to_thread(store.audit_log, limit, user, action)
    return [AuditOut.of(r) for r in rows]
