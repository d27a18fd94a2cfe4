"""Each pitfall demo measures what it claims (against the real demo model, short latency)."""

import os

import pytest

from crewdash.bench.pitfalls import DEMOS, TITLES, PitfallResult, run_pitfalls


@pytest.fixture(scope="module")
def results() -> dict[str, PitfallResult]:
    return {r.key: r for r in run_pitfalls(latency=0.4)}


def number(text: str) -> float:
    return float(text.split()[0])


def test_every_demo_ran_with_a_title(results: dict[str, PitfallResult]) -> None:
    assert list(results) == list(DEMOS)
    assert all(r.title == TITLES[k] and r.finding and r.figures for k, r in results.items())


def test_shared_agent_breaks_crews(results: dict[str, PitfallResult]) -> None:
    r = results["shared_agent"].figures
    assert r["fresh: crews that succeeded"] == "4 of 4"
    assert r["fresh: prompts naming another crew's topic"] == "0"
    assert r["shared: crews that succeeded"] != "4 of 4" or not r[
        "shared: prompts naming another crew's topic"
    ].startswith("0")
    assert "already running" in (results["shared_agent"].error or "")


def test_asyncio_run_inside_a_loop_shows_the_real_error(results: dict[str, PitfallResult]) -> None:
    r = results["asyncio_run"]
    assert r.error == "RuntimeError: asyncio.run() cannot be called from a running event loop"
    assert r.figures["fix: answer"] == "crew-0 done"


def test_sync_for_each_is_serial(results: dict[str, PitfallResult]) -> None:
    r = results["sync_for_each"].figures
    assert r["sync: peak concurrent calls"] == "1" and r["async: peak concurrent calls"] == "4"
    assert number(r["sync: wall"]) > 2 * number(r["async: wall"])


def test_default_executor_caps_concurrency(results: dict[str, PitfallResult]) -> None:
    r = results["default_executor"].figures
    cap = min(32, (os.cpu_count() or 1) + 4)
    assert r["default executor threads here"] == str(cap)
    assert int(r["default: peak concurrent calls"]) <= cap < 12
    assert r["sized: peak concurrent calls"] == "12"


def test_for_each_async_loses_everything_the_runner_keeps_the_rest(
    results: dict[str, PitfallResult],
) -> None:
    r = results["for_each_failure"]
    assert r.figures["kickoff_for_each_async: results returned"] == "0 of 4"
    assert r.figures["crewdash runner: results kept"] == "3 of 4"
    assert "400" in (r.error or "")


def test_file_lock_polling_spreads_starts(results: dict[str, PitfallResult]) -> None:
    r = results["file_lock"].figures
    assert number(r["default lock: first-to-last call start"]) > number(
        r["crewdash lock: first-to-last call start"]
    )


def test_unknown_demo_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown pitfall nope"):
        run_pitfalls(["nope"])
