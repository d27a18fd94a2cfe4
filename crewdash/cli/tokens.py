"""`crewdash tokens create|list|revoke`: personal API tokens from a terminal, for automation.

The token is printed once, on its own line (for `$(...)`); only a digest of it is stored. The
terminal's user is `cli:<OS user>` in the audit log.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from typing import Any

from crewdash.base.errors import SettingsError
from crewdash.base.settings import load_settings
from crewdash.model.people import Person, TeamPolicy, cli_person
from crewdash.store.accounts import MAX_TOKEN_DAYS
from crewdash.store.history import Store


def terminal_person() -> Person:
    """Whoever runs this command: the OS user (a container may have no name for its uid)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return cli_person(name)


def _owner(email: str, name: str, policy: TeamPolicy) -> Person:
    email = email.strip()
    if not (0 < len(email) <= 320) or email.count("@") != 1 or any(c.isspace() for c in email):
        raise SettingsError(f"--user must be an e-mail address, got {email!r}")
    person = policy.person(email, name)
    if person is None:
        raise SettingsError(f"{email} is not allowed to use crewdash (CREWDASH_MEMBERS)")
    return person


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "never"


def cmd_tokens(args: argparse.Namespace) -> int:
    settings = load_settings(only={"DATABASE_URL", "CREWDASH_ADMINS", "CREWDASH_MEMBERS"})
    store = Store(settings.database_url)
    me = terminal_person()
    try:
        if args.action == "create":
            owner = _owner(
                args.user,
                args.name_of_user or "",
                TeamPolicy.parse(settings.admins, settings.members),
            )
            new = store.create_token(owner, args.name, args.expires_days)
            store.audit(me, "create token", new.info.id, detail=f"for {owner.id}: {args.name}")
            print(
                f"token {new.info.id} for {owner.id} ({new.info.name}); shown once:",
                file=sys.stderr,
            )
            print(new.token)
            return 0
        if args.action == "list":
            for info in store.tokens_of(args.user):
                if info.revoked_at:
                    state = "revoked " + _when(info.revoked_at)
                elif info.expired:
                    state = "expired " + _when(info.expires_at)
                else:
                    state = "active" + (f" until {_when(info.expires_at)}" * bool(info.expires_at))
                print(
                    f"{info.id}  {info.user_id}  {info.name!r}  created {_when(info.created_at)}"
                    f"  last used {_when(info.last_used_at)}  {state}"
                )
            return 0
        if store.revoke_token(args.token_id, me):
            store.audit(me, "revoke token", args.token_id)
            print(f"revoked {args.token_id}")
            return 0
        print(f"no active token {args.token_id!r}", file=sys.stderr)
        return 1
    finally:
        store.close()


def add_command(sub: Any) -> None:
    """The `tokens` subcommand, for `cli.build_parser`."""
    parser = sub.add_parser("tokens", help="personal API tokens: create, list, revoke")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new token for a user (printed once)")
    create.add_argument("--user", required=True, help="the owner's e-mail address")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--user-name", dest="name_of_user", help="the owner's name, for display")
    create.add_argument(
        "--expires-days",
        type=int,
        metavar="DAYS",
        help=f"valid for DAYS days (1 to {MAX_TOKEN_DAYS}); by default until revoked",
    )
    listing = actions.add_parser("list", help="tokens (never the tokens themselves)")
    listing.add_argument("--user", help="only this user's")
    revoke = actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    parser.set_defaults(func=cmd_tokens)
