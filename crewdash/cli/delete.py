"""`crewdash delete BATCH_ID`: delete an ended batch and everything of it, from a terminal.

The terminal's user (`cli:<OS user>`, an admin: they could edit the database anyway) is the one
the audit log names. A batch still running is refused (exit 2): cancel it first.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from crewdash.base.errors import BatchRunningError
from crewdash.cli.tokens import terminal_person
from crewdash.model.batch import check_batch_id
from crewdash.runtime import Runtime


def cmd_delete(args: argparse.Namespace) -> int:
    """Exit 0 once deleted; 2 (with the reason) for an unknown batch, one still running, or one
    the terminal's user may not delete."""
    check_batch_id(args.batch_id)  # no odd bytes reach the database
    me = terminal_person()
    target = f"batch {args.batch_id}"
    runtime = Runtime.from_env()
    try:
        snap = runtime.snapshot(args.batch_id)
        store = runtime.store
        if not me.may_act_on(snap.created_by):
            if store is not None:
                store.audit(me, "delete", target, "denied", f"started by {snap.created_by}")
            print(f"error: {me.id} may not delete {target}", file=sys.stderr)
            return 2
        try:
            crews = runtime.delete_batch(args.batch_id)
        except BatchRunningError as exc:
            if store is not None:
                store.audit(me, "delete", target, "refused", str(exc))
            raise
        if store is not None:
            store.audit(me, "delete", target, detail=f"{crews} crews")
        print(f"deleted {target} ({snap.blueprint}, {crews} crew{'' if crews == 1 else 's'})")
        return 0
    finally:
        runtime.close()


def add_command(sub: Any) -> None:
    """The `delete` subcommand, for `cli.build_parser`."""
    parser = sub.add_parser(
        "delete", help="delete an ended batch: its crews, spans, checkpoints and files"
    )
    parser.add_argument("batch_id")
    parser.set_defaults(func=cmd_delete)
