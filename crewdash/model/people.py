"""Who does things in crewdash, and what each may do.

A person comes from the identity provider (their e-mail address and name), from a personal API
token (its owner), from `CREWDASH_API_TOKEN` (the admin `service`), from the shared password (the
one user `team`), from a terminal (`cli:<OS user>`), or nobody signs in at all (`anonymous`: the
one user of a dashboard without sign-in, who may do everything, as before accounts existed).

Roles come from settings (`CREWDASH_ADMINS`, `CREWDASH_MEMBERS`: e-mail addresses or `@domain`s):
members run batches and see the team's history, and cancel, resume and delete their own; admins
may do that to anyone's and read the audit log. With no member list, everyone the identity
provider signs in is a member.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"


@dataclass(frozen=True)
class Person:
    """One user: `id` is what records name them (an e-mail address, `service`, `team`,
    `cli:<user>`, `anonymous`); `name` is for display only."""

    id: str
    name: str = ""
    role: Role = Role.MEMBER

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def label(self) -> str:
        """How pages show them: the name and the id when they differ."""
        return f"{self.name} ({self.id})" if self.name and self.name != self.id else self.id

    def may_act_on(self, owner: str) -> bool:
        """Whether they may cancel, resume, re-run or delete what `owner` started (a batch from
        before accounts has no owner: an admin's business)."""
        return self.is_admin or (bool(owner) and owner == self.id)


ANONYMOUS = Person("anonymous", "anonymous", Role.ADMIN)  # no sign-in configured: one user
SERVICE = Person("service", "service token", Role.ADMIN)  # CREWDASH_API_TOKEN
TEAM = Person("team", "team", Role.MEMBER)  # everyone who knows the shared password


def cli_person(os_user: str) -> Person:
    """Whoever runs `python -m crewdash` in a terminal: the machine's own user, an admin (they
    could read the database directly anyway)."""
    return Person(f"cli:{os_user}", os_user, Role.ADMIN)


def _entries(text: str) -> tuple[str, ...]:
    return tuple(e.strip().casefold() for e in text.replace(";", ",").split(",") if e.strip())


def _matches(email: str, entry: str) -> bool:
    """`entry` is an address (exact, any case) or a domain (`@example.com` or `example.com`)."""
    address = email.strip().casefold()
    if "@" in entry and not entry.startswith("@"):
        return address == entry
    return address.rpartition("@")[2] == entry.lstrip("@") and "@" in address


@dataclass(frozen=True)
class TeamPolicy:
    """Who may sign in and who is an admin, from `CREWDASH_MEMBERS` and `CREWDASH_ADMINS`."""

    admins: tuple[str, ...] = ()
    members: tuple[str, ...] = ()

    @classmethod
    def parse(cls, admins: str = "", members: str = "") -> TeamPolicy:
        return cls(_entries(admins), _entries(members))

    def role_of(self, email: str) -> Role | None:
        """Their role, or None: not allowed in (a member list is set and does not name them).
        Admins are allowed whatever the member list says."""
        if any(_matches(email, e) for e in self.admins):
            return Role.ADMIN
        if not self.members or any(_matches(email, e) for e in self.members):
            return Role.MEMBER
        return None

    def person(self, email: str, name: str = "") -> Person | None:
        """The person an identity provider (or a token's owner) is, if allowed in."""
        role = self.role_of(email)
        return None if role is None else Person(email.strip(), name.strip(), role)
