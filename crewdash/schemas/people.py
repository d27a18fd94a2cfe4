"""The people routes' wire models: who a caller is, personal API tokens, the audit log."""

from __future__ import annotations

from pydantic import Field

from crewdash.model.people import Person
from crewdash.schemas.common import StoredText, WireModel
from crewdash.store.accounts import MAX_TOKEN_NAME, AuditEntry, NewToken, TokenInfo


class Me(WireModel):
    """The caller as the API sees them."""

    id: str = Field(description="an e-mail address, service, team, anonymous or cli:<user>")
    name: str
    role: str = Field(description="member or admin")

    @classmethod
    def of(cls, person: Person) -> Me:
        return cls(id=person.id, name=person.name, role=person.role.value)


class TokenRequest(WireModel):
    name: StoredText = Field(min_length=1, max_length=MAX_TOKEN_NAME, description="what it is for")


class TokenOut(WireModel):
    """A personal API token as its owner sees it in a list: never the token itself."""

    id: str
    name: str
    user: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @classmethod
    def of(cls, info: TokenInfo) -> TokenOut:
        return cls(
            id=info.id,
            name=info.name,
            user=info.user_id,
            created_at=info.created_at,
            last_used_at=info.last_used_at,
            revoked_at=info.revoked_at,
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
