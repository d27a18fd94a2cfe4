"""People in the history database: personal API tokens and the audit log.

A token is shown once, when it is made (`cdt_<id>_<secret>`); the database keeps its id (to
find it), a SHA-256 digest (compared in constant time) and who owns it, never the token. Its
last use is written at most once a minute, so a busy client does not write on every call. It may
expire (a call with it is then a 401 that says so). The audit log holds one row per action: time,
who, what, on what, and how it ended.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crewdash.base.errors import SettingsError
from crewdash.model.people import Person
from crewdash.model.storable import check_storable
from crewdash.store.tables import ApiTokenRow, AuditRow

TOKEN_PREFIX = "cdt_"
LAST_USED_EVERY_S = 60.0  # a token's last use is written at most this often
MAX_TOKEN_NAME = 100
MAX_TOKEN_DAYS = 3_650  # a token lives at most ten years (or until revoked)
MAX_AUDIT_DETAIL = 2_000


@dataclass(frozen=True)
class TokenInfo:
    """A token as its owner sees it in a list: never the token itself."""

    id: str
    name: str
    user_id: str
    user_name: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    expires_at: float | None = None  # None: never

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired


@dataclass(frozen=True)
class NewToken:
    info: TokenInfo
    token: str  # shown once, then only its digest remains


@dataclass(frozen=True)
class AuditEntry:
    at: float
    user_id: str
    action: str
    object: str
    outcome: str
    detail: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _info(row: ApiTokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        user_id=row.user_id,
        user_name=row.user_name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
    )


def token_name(name: str) -> str:
    """A token's name as given, or `SettingsError` saying what is wrong with it."""
    name = name.strip()
    if not name:
        raise SettingsError("a token needs a name (what it is for, e.g. 'nightly report')")
    if len(name) > MAX_TOKEN_NAME:
        raise SettingsError(f"a token's name is at most {MAX_TOKEN_NAME} characters")
    if any(ord(c) < 32 for c in name):
        raise SettingsError("a token's name must be one line of text")
    check_storable(name, "the token's name")
    return name


class Accounts:
    """The store's people side: `Store` is one."""

    engine: Engine

    # --- personal API tokens ------------------------------------------------------------------

    def create_token(
        self, owner: Person, name: str, expires_in_days: int | None = None
    ) -> NewToken:
        """A new token for `owner`, named `name`, valid for `expires_in_days` (None: until
        revoked); the token is in the answer and nowhere else."""
        name = token_name(name)
        if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
            raise SettingsError(f"a token expires in 1 to {MAX_TOKEN_DAYS} days (or never)")
        now = time.time()
        check_storable(owner.id, "the user")
        token_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        row = ApiTokenRow(
            id=token_id,
            digest=_digest(token),
            user_id=owner.id,
            user_name=owner.name,
            name=name,
            created_at=now,
            last_used_at=None,
            revoked_at=None,
            expires_at=None if expires_in_days is None else now + expires_in_days * 86_400,
        )
        with Session(self.engine) as session, session.begin():
            session.add(row)
            info = _info(row)
        return NewToken(info, token)

    def tokens_of(self, user_id: str | None = None) -> list[TokenInfo]:
        """`user_id`'s tokens (None: everyone's), newest first, revoked ones included."""
        query = select(ApiTokenRow).order_by(ApiTokenRow.created_at.desc())
        if user_id is not None:
            query = query.where(ApiTokenRow.user_id == user_id)
        with Session(self.engine) as session:
            return [_info(row) for row in session.scalars(query)]

    def revoke_token(self, token_id: str, by: Person) -> bool:
        """Revoke one token of `by`'s own (an admin: anyone's); False if there is no such
        active token they may revoke."""
        if unstorable_id(token_id):
            return False  # no id of ours (a NUL would be a 500 on PostgreSQL)
        query = (
            update(ApiTokenRow)
            .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
        if not by.is_admin:
            query = query.where(ApiTokenRow.user_id == by.id)
        with Session(self.engine) as session, session.begin():
            return bool(session.execute(query).rowcount)  # type: ignore[attr-defined]

    def token_owner(self, token: str) -> tuple[TokenInfo | None, str]:
        """The active token `token` is, and "" ; or None and why not (for a 401's reason)."""
        prefix, _, rest = token.partition("_")
        token_id = rest.partition("_")[0]
        if f"{prefix}_" != TOKEN_PREFIX or not token_id or unstorable_id(token_id):
            return None, "not a crewdash token"
        with Session(self.engine) as session:
            row = session.get(ApiTokenRow, token_id)
            if row is None or not hmac.compare_digest(row.digest, _digest(token)):
                return None, "unknown token"
            if row.revoked_at is not None:
                return None, "this token was revoked"
            info = _info(row)
        now = time.time()
        if info.expires_at is not None and now >= info.expires_at:
            ended = datetime.fromtimestamp(info.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            return None, f"this token expired on {ended}; make a new one on the account page"
        if info.last_used_at is None or now - info.last_used_at >= LAST_USED_EVERY_S:
            with Session(self.engine) as session, session.begin():
                session.execute(
                    update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=now)
                )
        return info, ""

    def has_tokens(self) -> bool:
        """Whether any personal token is active (the API then asks every caller for one)."""
        with Session(self.engine) as session:
            query = select(func.count()).where(
                ApiTokenRow.revoked_at.is_(None),
                or_(ApiTokenRow.expires_at.is_(None), ApiTokenRow.expires_at > time.time()),
            )
            return bool(session.scalar(query.select_from(ApiTokenRow)))

    # --- the audit log ------------------------------------------------------------------------

    def audit(
        self, who: Person, action: str, obj: str = "", outcome: str = "ok", detail: str = ""
    ) -> None:
        """Record one action of `who` (its text cleaned so any database stores it)."""
        row = AuditRow(
            at=time.time(),
            user_id=_clean(who.id)[:320],
            action=action[:40],
            object=_clean(obj)[:200],
            outcome=outcome[:20],
            detail=_clean(detail)[:MAX_AUDIT_DETAIL],
        )
        with Session(self.engine) as session, session.begin():
            session.add(row)

    def audit_log(
        self, limit: int = 200, user_id: str | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        """The latest entries, newest first, optionally of one user or one action."""
        query = select(AuditRow).order_by(AuditRow.at.desc(), AuditRow.id.desc())
        if user_id is not None:
            query = query.where(AuditRow.user_id == _clean(user_id))
        if action is not None:
            query = query.where(AuditRow.action == _clean(action))
        with Session(self.engine) as session:
            return [
                AuditEntry(r.at, r.user_id, r.action, r.object, r.outcome, r.detail)
                for r in session.scalars(query.limit(limit))
            ]

    def forget_people(self) -> None:
        """Every token and audit entry (tests and `delete_all`)."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(ApiTokenRow))
            session.execute(delete(AuditRow))


def unstorable_id(token_id: str) -> bool:
    """A token id is hex; anything else is no token of ours (and never reaches the database)."""
    return not (len(token_id) <= 16 and all(c in "0123456789abcdef" for c in token_id))


def _clean(text: str) -> str:
    """A NUL or lone surrogate becomes U+FFFD: the audit log keeps what happened, storably."""
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)
