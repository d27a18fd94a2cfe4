"""The people routes' wire models: who a caller is, personal API tokens, the audit log."""

from __future__ import annotations

from pydantic import Field

from crewdash.model.people import Person
from crewdash.model.spend import Spend, SpendCap
from crewdash.schemas.common import StoredText, WireModel
from crewdash.store.accounts import MAX_TOKEN_DAYS, MAX_TOKEN_NAME, AuditEntry, NewToken, TokenInfo


class SpendOut(WireModel):
    """One person's spend over a period (UTC), running batches at least at their estimate."""

    user: str
    usd: float = Field(description="US dollars on models with a price")
    unpriced_tokens: int = Field(description="tokens on models without a price")
    tokens: int = Field(description="all tokens")
    batches: int

    @classmethod
    def of(cls, user: str, spend: Spend) -> SpendOut:
        return cls(
            user=user,
            usd=round(spend.usd, 6),
            unpriced_tokens=spend.unpriced_tokens,
            tokens=spend.tokens,
            batches=spend.batches,
        )


class MySpend(WireModel):
    """The caller's spend today and this month (UTC), their daily cap and what is left today."""

    today: SpendOut
    month: SpendOut
    cap_usd: float | None = Field(description="the daily cap on priced models (None: none)")
    cap_tokens: int | None = Field(description="the daily cap on unpriced models (None: none)")
    left_usd: float | None
    left_tokens: int | None

    @classmethod
    def of(cls, user: str, today: Spend, month: Spend, cap: SpendCap) -> MySpend:
        left_usd, left_tokens = cap.left(today)
        return cls(
            today=SpendOut.of(user, today),
            month=SpendOut.of(user, month),
            cap_usd=cap.usd,
            cap_tokens=cap.tokens,
            left_usd=None if left_usd is None else round(left_usd, 6),
            left_tokens=left_tokens,
        )


class Me(WireModel):
    """The caller as the API sees them, and their spend."""

    id: str = Field(description="an e-mail address, service, team, anonymous or cli:<user>")
    name: str
    role: str = Field(description="member or admin")
    spend: MySpend | None = Field(default=None, description="None without a history database")

    @classmethod
    def of(cls, person: Person, spend: MySpend | None = None) -> Me:
        return cls(id=person.id, name=person.name, role=person.role.value, spend=spend)


class TokenRequest(WireModel):
    name: StoredText = Field(min_length=1, max_length=MAX_TOKEN_NAME, description="what it is for")
    expires_in_days: int | None = Field(
        default=None, ge=1, le=MAX_TOKEN_DAYS, description="None: valid until revoked"
    )


class TokenOut(WireModel):
    """A personal API token as its owner sees it in a list: never the token itself."""

    id: str
    name: str
    user: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    expires_at: float | None = Field(description="None: never")

    @classmethod
    def of(cls, info: TokenInfo) -> TokenOut:
        return cls(
            id=info.id,
            name=info.name,
            user=info.user_id,
            created_at=info.created_at,
            last_used_at=info.last_used_at,
            revoked_at=info.revoked_at,
            expires_at=info.expires_at,
        )


class TokenCreated(WireModel):
    """A new token: `token` is shown this once; only a digest of it is stored."""

    token: str
    info: TokenOut

    @classmethod
    def of(cls, new: NewToken) -> TokenCreated:
        return cls(token=new.token, info=TokenOut.of(new.info))


class AuditOut(WireModel):
    """One entry of the audit log."""

    at: float
    user: str
    action: str
    object: str
    outcome: str = Field(description="ok, denied or failed")
    detail: str

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        return cls(
            at=entry.at,
            user=entry.user_id,
            action=entry.action,
            object=entry.object,
            outcome=entry.outcome,
            detail=entry.detail,
        )
