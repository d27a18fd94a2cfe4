"""`crewdash resume BATCH_ID`: resume a batch's interrupted crews here and report."""

from __future__ import annotations

import argparse
from typing import Any

from crewdash.engine.resume import resume
from crewdash.model.batch import CrewState
from crewdash.runtime import Runtime


def cmd_resume(args: argparse.Namespace) -> int:
    """`crewdash resume BATCH_ID`: resume here, wait for the crews, report. Exit 0 when every
    crew resumed succeeded and none waits for a re-run decision, 1 otherwise."""
    runtime = Runtime.from_env()
    try:
        outcome = resume(runtime, args.batch_id, args.run_id or None, args.from_start or ())
        print(outcome.describe(), flush=True)
        for offer in outcome.offers:
            print(f"  re-run from the start? {offer.run_id} ({offer.topic}): {offer.problem}")
        if outcome.offers:
            ids = " ".join(f"--from-start {o.run_id}" for o in outcome.offers)
            print(f"  to re-run them: crewdash resume {args.batch_id} {ids}")
        if not outcome.resumed:
            return 1
        batch = runtime.runner.batch(args.batch_id)
        batch.wait()
        chosen = {p.run_id for p in outcome.resumed}
        crews = [c for c in batch.snapshot().crews if c.run_id in chosen]
        for crew in crews:
            kept = sum(1 for t in crew.tasks if t.restored)
            print(f"  {crew.run_id} {crew.state.value}: {crew.topic} ({kept} tasks restored)")
        ok = all(c.state is CrewState.SUCCEEDED for c in crews)
        return 0 if ok and not outcome.offers else 1
    finally:
        runtime.close()


def add_command(sub: Any) -> None:
    """The `resume` subcommand, for `cli.build_parser`."""
    parser = sub.add_parser(
        "resume", help="resume a batch's interrupted crews from their last checkpoints"
    )
    parser.add_argument("batch_id")
    parser.add_argument(
        "--run-id", action="append", help="only this crew (repeatable; default: every one)"
    )
    parser.add_argument(
        "--from-start",
        action="append",
        help="re-run this crew from the start (one offered a re-run; repeatable)",
    )
    parser.set_defaults(func=cmd_resume)
