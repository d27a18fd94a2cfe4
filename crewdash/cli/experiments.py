"""`crewdash experiment`: the same topics through several variants at once, from a terminal.

crewdash experiment --variant name=fast,model=demo-fast --variant name=thorough,model=demo-thorough
    [--judge "rubric"] [--cache] "topic one" "topic two" --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crewdash.demo.profiles import LatencyProfile
from crewdash.engine.plans import RunSettings
from crewdash.experiments.spec import build_spec, parse_variant
from crewdash.present.experiment_exports import cell_text
from crewdash.providers.llm import default_llm_settings
from crewdash.schemas.experiments import ExperimentDetail
from crewdash.store.history import Store


def cmd_experiment(args: argparse.Namespace) -> int:
    from crewdash.runtime import Runtime, backend_from_env

    raw: list[str] = list(args.topics)
    if args.file:
        raw += Path(args.file).read_text(encoding="utf-8-sig").splitlines()
    variants = [parse_variant(text) for text in args.variant]
    spec, notes = build_spec(
        raw,
        variants,
        rubric=args.judge,
        cache=args.cache,
        max_concurrency=args.max_concurrency,
    )
    for note in notes:
        print(note, file=sys.stderr)
    settings = RunSettings(llm=default_llm_settings(), max_concurrency=args.max_concurrency)
    backend = backend_from_env()
    try:
        store = None if args.no_history else Store()
        runtime = Runtime(settings, args.profile_of(args), store, backend=backend)
    except BaseException:
        backend.close()
        raise
    try:
        if settings.llm.is_demo:
            runtime.warm_up().result(60)  # one-off process costs stay out of the timings
        experiment_id = runtime.experiments.start(spec, settings.llm, source="cli")
        print(f"experiment {experiment_id}: {len(spec.topics)} topics × "
              f"{len(spec.variants)} variants", file=sys.stderr)  # fmt: skip
        grid = runtime.experiments.wait(experiment_id, args.timeout)
    finally:
        runtime.close()
    detail = ExperimentDetail.from_grid(grid)
    for cell in grid.cells:
        print(f"{cell.variant:>12}  {cell_text(cell)}  {cell.topic}", file=sys.stderr)
    print(f"{'variant':<14}{'success':>8}{'median s':>10}{'p95 s':>8}{'tokens':>8}"
          f"{'cost $':>12}{'score':>7}")  # fmt: skip
    for v in detail.variants:
        print(
            f"{v.name:<14}{v.success_rate:>8.0%}{_n(v.median_latency_s, 2):>10}"
            f"{_n(v.p95_latency_s, 2):>8}{v.tokens:>8}{_n(v.cost_usd, 6):>12}"
            f"{_n(v.mean_score, 2):>7}"
        )
    if grid.cache_hits:
        print(f"{grid.cache_hits} calls served from the cache, ${grid.saved_usd:.6f} saved")
    if args.json:
        payload: dict[str, Any] = detail.model_dump(mode="json")
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    failed = any(c.state != "succeeded" for c in grid.cells)
    return 1 if failed or not grid.done else 0


def _n(value: float | None, places: int) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def add_parser(
    sub: Any,
    demo_options: Callable[[argparse.ArgumentParser], None],
    profile_of: Callable[[argparse.Namespace], LatencyProfile],
) -> argparse.ArgumentParser:
    """The `experiment` subcommand on the CLI's subparsers; `demo_options` and `profile_of`
    are the run command's demo model options and how it reads them."""
    exp: argparse.ArgumentParser = sub.add_parser(
        "experiment", help="run the same topics through 2 to 6 variants at once, side by side"
    )
    exp.add_argument("topics", nargs="*", help="topics (or use --file)")
    exp.add_argument("--file", help="a file with one topic per line")
    exp.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEYS",
        help="name=...,provider=...,model=...,temperature=...,blueprint=... (2 to 6 times)",
    )
    exp.add_argument("--judge", metavar="RUBRIC", help="score every answer against this rubric")
    exp.add_argument("--cache", action="store_true", help="answer repeated calls from the cache")
    exp.add_argument("--max-concurrency", type=int, default=100)
    exp.add_argument("--timeout", type=float, default=1800, help="give up waiting after N s")
    exp.add_argument("--json", help="write the grid (cells[] and variants[]) to this JSON file")
    exp.add_argument("--no-history", action="store_true", help="do not record the experiment")
    demo_options(exp)
    exp.set_defaults(func=cmd_experiment, profile_of=profile_of)
    return exp
