"""Command line: run a batch from a terminal, or serve the demo model on its own.

crewdash run "topic one" "topic two" [--latency 1.0] [--json out.json]
crewdash run --n 50 --latency 1.0 --json bench-50.json
crewdash run "AI agents" --blueprint my_flow --input audience=CTOs --fan-out topic
crewdash blueprints
crewdash bench --backends local,ray --n 400 --latency 1.0 --json backends.json
crewdash demo-llm --port 8001 --profile hosted
crewdash resume BATCH_ID [--run-id RUN_ID] [--from-start RUN_ID]
crewdash delete BATCH_ID
crewdash experiment --variant name=fast,model=demo-fast --variant name=slow,model=demo-thorough \
    --judge "concrete and sourced" "topic one" "topic two" --json grid.json

`crewdash` is the installed command; `python -m crewdash` is the same from a checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from crewdash.base.config import DEFAULT_BLUEPRINT, DEFAULT_OPENAI_MODEL, outputs_dir
from crewdash.base.errors import CrewdashError, SettingsError
from crewdash.base.settings import load_settings
from crewdash.bench.backends import MAX_N as BACKENDS_MAX_N
from crewdash.bench.backends import compare_backends, parse_backends
from crewdash.bench.governor import run_limits_bench
from crewdash.bench.report import STRATEGY_INFO, BenchReport
from crewdash.bench.strategies import MAX_N, check_n, parse_strategies, run_sweep
from crewdash.blueprints.catalog import describe_blueprints, load_blueprint
from crewdash.cli.delete import add_command as add_delete_command
from crewdash.cli.experiments import add_parser as add_experiment_parser
from crewdash.cli.resume import add_command as add_resume_command
from crewdash.cli.tokens import add_command as add_tokens_command
from crewdash.cli.tokens import terminal_person
from crewdash.demo.profiles import PROFILE_KINDS, LatencyProfile, ProfileKind
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.budget import Budget, BudgetTooSmall, admits_none
from crewdash.engine.execution import Backend
from crewdash.engine.plans import RunSettings
from crewdash.engine.sheet_batches import SheetUpload
from crewdash.model.batch import BatchSnapshot
from crewdash.model.topics import parse_topics
from crewdash.present.batch_sheet import sheet_csv, sheet_xlsx
from crewdash.present.sheet_export import enriched_filename
from crewdash.providers.limits import ProviderLimits
from crewdash.providers.llm import PROVIDERS, LLMSettings, default_llm_settings
from crewdash.providers.preflight import preflight
from crewdash.runtime import Runtime, backend_from_env, demo_profile_from_env
from crewdash.schemas.reports import RunReport
from crewdash.sheets.mapping import MappedRow
from crewdash.sheets.sheet import Sheet
from crewdash.store.history import Store


def summary(snap: BatchSnapshot) -> dict[str, Any]:
    """The figures a run reports, as plain JSON-ready values (`schemas.reports.RunReport`)."""
    return RunReport.from_snapshot(snap, outputs_dir()).model_dump(mode="json")


def parse_inputs(pairs: Sequence[str], option: str = "--input") -> dict[str, str]:
    """`--input key=value` pairs (repeatable) as a mapping; a pair without `=` is refused."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{option} needs key=value, got {pair!r}")
        inputs[key.strip()] = value
    return inputs


def _profile(args: argparse.Namespace) -> LatencyProfile:
    base = demo_profile_from_env()
    if args.latency is None and args.profile is None:
        return base
    kind = cast(ProfileKind, args.profile or "fixed")
    seconds = base.seconds if args.latency is None else args.latency
    return LatencyProfile(
        kind=kind, seconds=seconds, seed=base.seed, tokens_per_s=base.tokens_per_s
    )


def sheet_upload(args: argparse.Namespace, inputs: dict[str, str]) -> SheetUpload:
    """`--sheet FILE [--sheet-name NAME] --map INPUT=COLUMN ...` as an upload; topics with it
    are refused (a sheet runs one crew per row)."""
    if args.topics or args.file or args.n:
        raise SettingsError("--sheet runs one crew per row of the sheet: give no topics with it")
    path = Path(args.sheet)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read --sheet {path}: {exc.strerror or exc}") from None
    columns = parse_inputs(args.map, "--map") or None
    return SheetUpload(data, path.name, args.sheet_name, columns, inputs)


def write_sheet(snap: BatchSnapshot, found: tuple[Sheet, tuple[MappedRow, ...]], out: Path) -> None:
    """The enriched sheet to `out`: .xlsx, else CSV (.csv, .tsv or anything else)."""
    sheet, rows = found
    if out.suffix.lower() == ".xlsx":
        sheet_xlsx(snap, sheet, rows, out)
    else:
        with out.open("w", encoding="utf-8", newline="") as handle:
            handle.writelines(sheet_csv(snap, sheet, rows))


def cmd_run(args: argparse.Namespace) -> int:
    inputs = parse_inputs(args.input)
    upload = sheet_upload(args, inputs) if args.sheet else None
    raw: list[str] = list(args.topics)
    if args.file:
        # utf-8-sig: a byte-order mark (Notepad writes one) is not part of the first topic
        raw += Path(args.file).read_text(encoding="utf-8-sig").splitlines()
    if args.n:
        raw += [f"topic {i + 1}" for i in range(args.n)]
    topics = parse_topics(raw or ["-"], max_topics=max(args.n or 0, 100))
    for note in topics.notes:
        print(note, file=sys.stderr)
    blueprint = load_blueprint(args.blueprint)  # a broken blueprint fails before anything starts
    if upload is None:
        if not raw:
            parse_topics(raw)  # no topics: its message
        blueprint.inputs_for(topics.items[0], inputs, args.fan_out)
    budget = (
        Budget(usd=args.budget_usd, tokens=args.budget_tokens)
        if args.budget_usd is not None or args.budget_tokens is not None
        else None
    )
    llm = default_llm_settings()
    if args.rate_limits:
        limits = ProviderLimits.parse(args.rate_limits)
        llm = replace(llm, requests_per_minute=limits.rpm, tokens_per_minute=limits.tpm)
    if budget is not None:
        budget.check_price(llm.model)  # a USD budget without a price: nothing starts
    preflight([llm])  # what cannot run is refused (exit 2), not started
    settings = RunSettings(llm=llm, max_concurrency=args.max_concurrency, budget=budget)
    profile = _profile(args)
    demo_limits = ProviderLimits.parse(args.demo_limits) if args.demo_limits else None
    backend = backend_from_env()  # CREWDASH_RUNNER: local or ray
    try:
        runtime = Runtime(
            settings,
            profile,
            None if args.no_history else Store(),
            backend=backend,
            demo_limits=demo_limits,
        )
    except BaseException:
        backend.close()
        raise
    try:
        settings = RunSettings(
            llm=replace(runtime.default_settings.llm, stream=not args.no_stream),
            max_concurrency=args.max_concurrency,
            budget=budget,
            response_cache=args.cache,
        )
        if budget is not None and upload is None:  # learned from the history; none: exit 2
            est = runtime.runner.estimate(
                blueprint, topics.items, settings, inputs=inputs, fan_out=args.fan_out
            )
            print(f"estimate: {est.describe()}; budget {budget.describe()}", file=sys.stderr)
            if why := admits_none(budget, est, settings.llm.model):
                raise BudgetTooSmall(why)
        if settings.llm.is_demo:
            runtime.warm_up().result(60)  # one-off process costs stay out of the timings
        if upload is not None:
            batch_id, plan = runtime.submit_sheet(
                blueprint, upload, settings, by=terminal_person(), source="cli"
            )
            print(f"{plan.sheet.filename}: {plan.sheet.detected}", file=sys.stderr)
            for note in plan.sheet.notes:
                print(note, file=sys.stderr)
            for row in plan.rows:
                if not row.runs:
                    print(f"row {row.number} skipped: {row.skipped}", file=sys.stderr)
            found = (plan.sheet, plan.rows)
        else:
            batch_id = runtime.runner.submit(
                blueprint,
                topics.items,
                settings,
                source="cli",
                inputs=inputs,
                fan_out=args.fan_out,
                by=terminal_person(),
            )
        batch = runtime.runner.batch(batch_id)
        reported: set[str] = set()
        while True:
            done = batch.wait(0.2)
            for crew in batch.snapshot().crews:
                if crew.state.final and crew.run_id not in reported:
                    reported.add(crew.run_id)
                    print(
                        f"{crew.state.value:>9}  {crew.duration or 0:6.2f} s  {crew.topic}",
                        file=sys.stderr,
                    )
            if done:
                break
        snap = batch.snapshot()
    finally:
        runtime.close()
    result = summary(snap)
    others = ", ".join(
        f"{n} {state.replace('_', ' ')}"
        for state, n in result["counts"].items()
        if state != "succeeded"
    )
    print(
        f"{result['state']}: {result['succeeded']}/{result['crews']} succeeded"
        + (f" ({others})" if others else "")
        + f" · wall {result['wall_s']:.2f} s · "
        f"slowest crew {result['slowest_crew_s']:.2f} s · sum {result['sum_crew_s']:.2f} s"
        + ("" if result["speedup"] is None else f" · speedup {result['speedup']:.1f}×")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if upload is not None:
        out = (
            Path(args.out)
            if args.out
            else Path(args.sheet).with_name(enriched_filename(upload.filename, "xlsx"))
        )
        write_sheet(snap, found, out)
        print(f"enriched sheet: {out}", file=sys.stderr)
    return 0 if result["state"] == "succeeded" else 1  # every topic answered, or not


def cmd_blueprints(args: argparse.Namespace) -> int:
    """Every blueprint on the search path with its kind and inputs, or why it is broken."""
    broken = 0
    for info in describe_blueprints():
        if info.blueprint is None:
            broken += 1
            print(f"{info.name:<24} {info.kind:<10} BROKEN: {info.error}")
            continue
        bp = info.blueprint
        shown = ", ".join(
            f"{k}={v!r}" if v else (f"{k} (required)" if k in bp.required else k)
            for k, v in bp.inputs.items()
        )
        print(f"{info.name:<24} {info.kind:<10} fan-out {bp.fan_out}; inputs: {shown or 'none'}")
        for pin in bp.pinned_agents:
            where = f" in {pin.where}" if pin.where else ""
            print(f"{'':<24} {'':<10} agent {pin.role!r}{where} keeps its own model {pin.model}")
    return 1 if broken else 0


def _bench_llm(args: argparse.Namespace, calls: int) -> LLMSettings:
    if args.provider == "demo":
        return LLMSettings()
    settings = LLMSettings(
        provider=args.provider,
        model=args.model or DEFAULT_OPENAI_MODEL,
        base_url=args.base_url,
        # OpenAI's key goes to OpenAI only, not to another provider's --base-url
        api_key=load_settings(only={"OPENAI_API_KEY"}).secret("OPENAI_API_KEY")
        if args.provider == "openai"
        else None,
    )
    if args.provider == "openai" and not settings.api_key:
        raise SettingsError("provider openai needs OPENAI_API_KEY in the environment")
    if not args.yes:
        raise SettingsError(
            f"this benchmark would make about {calls} calls to {settings.label}; "
            "add --yes to confirm"
        )
    return settings


def print_report(report: BenchReport) -> None:
    print(
        f"N={report.n} · one call L {report.latency_s:.2f} s ({report.profile}) · "
        f"framework CPU c {report.framework_cpu_per_crew_ms:.1f} ms/crew · "
        f"floor {report.floor_rule} {report.floor_s:.2f} s · sequential "
        f"{report.sequential_s:.2f} s{'' if report.sequential_measured else ' (estimated)'}"
    )
    header = f"{'strategy':<24}{'wall s':>9}{'speedup':>9}{'floor/wall':>11}{'peak':>6}  errors"
    print(header)
    print("-" * len(header))
    for r in report.results:
        wall = f"{r.wall_s:9.2f}" if r.wall_s is not None else f"{'-':>9}"
        speed = f"{r.speedup_vs_sequential:8.2f}×" if r.speedup_vs_sequential else f"{'-':>9}"
        eff = f"{r.efficiency_vs_floor:11.2f}" if r.efficiency_vs_floor else f"{'-':>11}"
        print(f"{r.strategy:<24}{wall}{speed}{eff}{r.peak_concurrency:6d}  {'; '.join(r.errors)}")
    lag = next((r.loop_lag_ms for r in report.results if r.loop_lag_ms), None)
    if lag:
        print(
            f"runner loop lag (100 ms ticker): p50 {lag['p50']} ms, p99 {lag['p99']} ms, "
            f"max {lag['max']} ms"
        )


def _make_backend(name: str, workers: int) -> Backend:
    """A backend as `CREWDASH_RUNNER=name` would give, with this many Ray workers."""
    env = {**os.environ, "CREWDASH_RUNNER": name, "CREWDASH_RAY_WORKERS": str(workers)}
    return backend_from_env(env)


def cmd_bench_backends(args: argparse.Namespace) -> int:
    report = compare_backends(
        args.n,
        args.latency,
        parse_backends(args.backends),
        lambda name: _make_backend(name, args.ray_workers),
        progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr),
    )
    at = f"wall @{args.latency:g} s"
    header = (
        f"{'backend':<9}{'procs':>6}{'N':>6}{'0-lat wall':>11}{'crews/s':>9}"
        f"{at:>12}{'bound':>8}{'wall/bound':>11}{'failed':>7}{'cpu s here':>11}{'cpu s wrk':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in report.results:
        print(
            f"{r.backend:<9}{r.processes:>6}{r.n:>6}{r.zero_latency_wall_s:>11.2f}"
            f"{r.crews_per_s:>9.1f}{r.wall_s:>12.2f}{r.bound_s:>8.2f}{r.wall_over_bound:>11.3f}"
            f"{r.failed:>7}{r.driver_cpu_s:>11.1f}"
            f"{'-' if r.worker_cpu_s is None else format(r.worker_cpu_s, '.1f'):>10}"
        )
    if report.throughput_ratio is not None:
        print(f"zero-latency throughput, ray / local: {report.throughput_ratio:.2f}×")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return 1 if any(r.failed for r in report.results) else 0


def cmd_bench_limits(args: argparse.Namespace) -> int:
    """The rate governor against emulated provider limits, and retries only, in one run."""
    report = run_limits_bench(
        args.n,
        ProviderLimits.parse(args.limits),
        args.latency,
        progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr),
        stream=not args.no_stream,
    )
    answers = "streamed" if report.stream else "whole answers"
    print(f"{report.limits.describe()} · one call {report.latency_s:g} s · N={args.n} · {answers}")
    header = (
        f"{'mode':<14}{'wall s':>8}{'bound s':>9}{'wall/bound':>11}{'calls':>7}{'tokens':>8}"
        f"{'429s':>6}{'429 %':>7}{'failed':>7}{'waits':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in report.results:
        print(
            f"{r.mode:<14}{r.wall_s:>8.2f}{r.bound_s:>9.2f}{r.wall_over_bound:>11.3f}{r.calls:>7}"
            f"{r.tokens:>8}{r.http_429:>6}{r.http_429_share:>7.1%}{r.failed:>7}"
            f"{r.governor_waits:>7}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    governed = next((r for r in report.results if r.mode == "governor"), None)
    return 1 if governed is not None and governed.failed else 0


def cmd_bench_stream(args: argparse.Namespace) -> int:
    """`bench --stream` (crewdash/bench/streaming.py), hosted profile unless `--profile`."""
    from crewdash.bench.streaming import bench_and_report

    base = demo_profile_from_env()
    kind = cast(ProfileKind, args.profile or "hosted")
    profile = LatencyProfile(
        kind=kind,
        seconds=args.latency,
        seed=base.seed,
        tokens_per_s=base.tokens_per_s or (40.0 if kind == "fixed" else None),
    )
    return bench_and_report(check_n(args.n), profile, args.json)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.stream:
        return cmd_bench_stream(args)
    if args.backends:
        return cmd_bench_backends(args)
    if args.limits:
        return cmd_bench_limits(args)
    strategies = parse_strategies(args.strategies)
    ns = [check_n(int(x)) for x in args.sweep.split(",")] if args.sweep else [check_n(args.n)]
    llm = _bench_llm(args, sum(ns) * len(strategies))
    profile = _profile(args)
    reports = run_sweep(
        ns,
        strategies,
        profile,
        llm,
        progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr),
    )
    for report in reports:
        print_report(report)
        print()
    if args.json:
        payload: Any = [r.to_json() for r in reports] if args.sweep else reports[0].to_json()
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    failed = any(not r.ok for report in reports for r in report.results)
    return 1 if failed else 0


def cmd_demo_llm(args: argparse.Namespace) -> int:
    limits = ProviderLimits.parse(args.limits) if args.limits else None
    server = DemoLLMServer(_profile(args), port=args.port, host=args.host, limits=limits).start()
    print(f"demo model ({server.profile.describe()}) at {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def build_parser(prog: str = "crewdash") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def demo_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--latency", type=float, help="demo model: seconds per call")
        p.add_argument("--profile", choices=PROFILE_KINDS, help="demo model latency profile")

    run = sub.add_parser("run", help="run one crew per topic and report the timings")
    run.add_argument("topics", nargs="*", help="topics (or use --file / --n)")
    run.add_argument("--file", help="a file with one topic per line")
    run.add_argument("--n", type=int, default=0, help="add N generated topics")
    run.add_argument("--blueprint", default=DEFAULT_BLUEPRINT)
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another input of the blueprint, the same for every crew (repeatable)",
    )
    run.add_argument(
        "--fan-out", metavar="NAME", help="the input each topic fills (default: topic)"
    )
    run.add_argument("--budget-usd", type=float, help="stop starting crews before this spend")
    run.add_argument("--budget-tokens", type=int, help="the same budget in tokens")
    run.add_argument(
        "--rate-limits", metavar="rpm=N,tpm=N", help="the rate governor's limits (else learned)"
    )
    run.add_argument(
        "--demo-limits", metavar="rpm=N,tpm=N", help="the demo model emulates these limits"
    )
    run.add_argument("--max-concurrency", type=int, default=100)
    run.add_argument("--json", help="write the figures to this JSON file")
    run.add_argument("--no-history", action="store_true", help="do not record the batch")
    run.add_argument(
        "--no-stream", action="store_true", help="whole answers, no streaming (no TTFT)"
    )
    run.add_argument("--cache", action="store_true", help="answer repeated calls from the cache")
    run.add_argument("--sheet", help="a CSV, TSV or .xlsx file: one crew per row")
    run.add_argument("--sheet-name", help="the workbook's sheet (default: the first)")
    run.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="INPUT=COLUMN",
        help="the column that fills an input (repeatable; default: the column of its name)",
    )
    run.add_argument("--out", help="where the enriched sheet goes (.xlsx or .csv)")
    demo_options(run)
    run.set_defaults(func=cmd_run)

    listing = sub.add_parser("blueprints", help="list the blueprints, their kinds and inputs")
    listing.set_defaults(func=cmd_blueprints)

    bench = sub.add_parser("bench", help="measure every way of running N crews side by side")
    bench.add_argument("--n", type=int, default=20, help=f"crews per strategy (1-{MAX_N})")
    bench.add_argument("--sweep", help="several N, comma-separated: wall time against N")
    bench.add_argument(
        "--strategies", default="all", help=f"all, or some of: {', '.join(STRATEGY_INFO)}"
    )
    bench.add_argument("--provider", default="demo", choices=PROVIDERS)
    bench.add_argument("--model", help="model name for a real provider")
    bench.add_argument("--base-url", help="base URL for an OpenAI-compatible provider")
    bench.add_argument("--yes", action="store_true", help="confirm calls to a real provider")
    bench.add_argument("--json", help="write the results to this JSON file")
    bench.add_argument(
        "--backends",
        help="compare runner backends instead of strategies: local,ray "
        f"(N up to {BACKENDS_MAX_N}; zero latency, then --latency)",
    )
    bench.add_argument(
        "--ray-workers", type=int, default=2, help="Ray worker processes (with --backends)"
    )
    bench.add_argument(
        "--limits",
        help="emulate a provider's limits (rpm=600,tpm=60000): the rate governor against "
        "retries only, same crews (the research blueprint)",
    )
    bench.add_argument(
        "--no-stream", action="store_true", help="with --limits: whole answers, not streamed"
    )
    bench.add_argument(
        "--stream",
        action="store_true",
        help="streaming instead: loop lag, wall streamed vs not, TTFT error at N=1 and --n, "
        "the Run page's live-section refresh (demo model, hosted profile unless --profile)",
    )
    demo_options(bench)
    bench.set_defaults(func=cmd_bench, latency=1.0)

    demo = sub.add_parser("demo-llm", help="serve the demo model on its own")
    demo.add_argument("--port", type=int, default=8001)
    demo.add_argument(
        "--host", default="127.0.0.1", help="0.0.0.0 to serve other machines (Ray workers)"
    )
    demo.add_argument("--limits", metavar="rpm=N,tpm=N", help="emulate a provider's limits")
    demo_options(demo)
    demo.set_defaults(func=cmd_demo_llm)
    add_resume_command(sub)
    add_delete_command(sub)
    add_tokens_command(sub)
    add_experiment_parser(sub, demo_options, _profile)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "crewdash") -> int:
    """The `crewdash` console script (pyproject.toml) and `python -m crewdash`."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (CrewdashError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
