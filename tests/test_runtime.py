from pathlib import Path

import pytest

from crewdash.batch import CrewState
from crewdash.errors import SettingsError
from crewdash.runtime import Runtime, demo_profile_from_env
from tests.leaks import held, settled


def test_demo_profile_from_env() -> None:
    assert demo_profile_from_env({}).kind == "hosted"
    fixed = demo_profile_from_env({"CREWDASH_DEMO_LATENCY": "0.25"})
    assert (fixed.kind, fixed.seconds) == ("fixed", 0.25)
    slow = demo_profile_from_env({"CREWDASH_DEMO_PROFILE": "slow", "CREWDASH_DEMO_SEED": "3"})
    assert (slow.kind, slow.seed) == ("slow", 3)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CREWDASH_DEMO_PROFILE": "warp"}, "CREWDASH_DEMO_PROFILE must be one of"),
        ({"CREWDASH_DEMO_LATENCY": "soon"}, "CREWDASH_DEMO_LATENCY must be a number"),
        ({"CREWDASH_DEMO_LATENCY": "-2"}, "CREWDASH_DEMO_LATENCY"),
        ({"CREWDASH_MAX_CONCURRENCY": "0"}, "CREWDASH_MAX_CONCURRENCY must be between"),
        ({"CREWDASH_MAX_CONCURRENCY": "lots"}, "CREWDASH_MAX_CONCURRENCY must be a whole"),
        ({"CREWDASH_DEMO_SEED": "x"}, "CREWDASH_DEMO_SEED must be a whole number, got 'x'"),
        ({"CREWDASH_PRICES_FILE": "/no/such.yaml"}, "CREWDASH_PRICES_FILE: cannot read prices"),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    """Every setting error is a SettingsError: the entry points show those as one line."""
    with pytest.raises(SettingsError, match=message):
        Runtime.from_env(env)


def test_runtime_starts_the_demo_model_on_first_use_and_runs_a_batch() -> None:
    rt = Runtime.from_env({"CREWDASH_DEMO_LATENCY": "0.1", "CREWDASH_MAX_CONCURRENCY": "7"})
    try:
        assert rt.demo is None
        assert rt.runner.max_concurrency == 7
        rt.warm_up().result(30)
        assert rt.demo is not None and rt.demo.stats.requests == 1
        assert rt.runner.batch_ids() == []  # the warm-up is no one's batch
        batch_id = rt.runner.submit("timing", ["crew-1", "crew-2"], rt.default_settings)
        assert rt.runner.batch(batch_id).wait(30)
        snap = rt.runner.snapshot(batch_id)
        assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] * 2
        assert "Simulated" in snap.model_label
    finally:
        rt.close()
    assert rt.demo is None


def test_a_start_that_fails_after_the_runner_started_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_job_runner() -> None:
        raise RuntimeError("injected start failure")

    monkeypatch.setattr("crewdash.runtime.JobRunner", failing_job_runner)
    before = held()
    for _ in range(4):
        with pytest.raises(RuntimeError, match="injected start failure"):
            Runtime.from_env({"CREWDASH_DEMO_LATENCY": "0.1"})
    assert settled(before) == before


def test_a_runtime_with_a_users_crews_folder_warms_up_on_the_built_in_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine" / "config").mkdir(parents=True)
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path))
    rt = Runtime.from_env({"CREWDASH_DEMO_LATENCY": "0.1"})
    try:
        rt.warm_up().result(60)
        assert rt.demo is not None and rt.demo.stats.requests == 1
    finally:
        rt.close()
