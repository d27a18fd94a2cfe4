import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from crewdash.base.errors import SettingsError
from crewdash.demo.profiles import LatencyProfile
from crewdash.engine.plans import RunSettings
from crewdash.model.batch import Batch, CrewState
from crewdash.runtime import Liveness, Runtime, demo_profile_from_env, liveness_from_env
from crewdash.store.history import Store
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
        ({"CREWDASH_OWNER_LEASE_S": "soon"}, "CREWDASH_OWNER_LEASE_S must be a number"),
        ({"CREWDASH_OWNER_HEARTBEAT_S": "0"}, "CREWDASH_OWNER_HEARTBEAT_S must be between"),
        ({"CREWDASH_OWNER_HEARTBEAT_S": "nan"}, "CREWDASH_OWNER_HEARTBEAT_S must be between"),
        ({"CREWDASH_OWNER_LEASE_S": "8"}, r"LEASE_S must be at least twice .*HEARTBEAT_S \(5 s\)"),
        (
            {"CREWDASH_OWNER_HEARTBEAT_S": "1", "CREWDASH_OWNER_LEASE_S": "inf"},
            "CREWDASH_OWNER_LEASE_S must be at least twice",
        ),
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


def test_owner_lease_settings() -> None:
    assert liveness_from_env({}) == Liveness(heartbeat_s=5.0, lease_s=30.0)
    short = {"CREWDASH_OWNER_HEARTBEAT_S": "0.5", "CREWDASH_OWNER_LEASE_S": "2"}
    assert liveness_from_env(short) == Liveness(heartbeat_s=0.5, lease_s=2.0)


def heartbeat_at(store: Store, owner: Store) -> float:
    with store.engine.connect() as conn:
        stamp = conn.execute(
            text("select heartbeat_at from owners where id = :o"), {"o": owner.owner_id}
        ).scalar()
    assert stamp is not None, "the owner has no heartbeat row"
    return float(stamp)


def test_heartbeat_keeps_this_server_alive_and_sweeps_a_dead_servers_batch(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    liveness = Liveness(heartbeat_s=0.1, lease_s=1.0)
    rt = Runtime(
        RunSettings(max_concurrency=4),
        LatencyProfile(kind="fixed", seconds=4.0),
        Store(url),
        liveness=liveness,
    )
    other = Store(url)  # another server on the same database, silent after its first batch
    try:
        assert rt.store is not None
        dead = Batch("dead", "timing", ["a", "b"], model_label="demo", max_concurrency=2)
        dead.mark_running(dead.run_ids[0])
        other.create_batch(dead.snapshot())
        other.save_crew("dead", dead.crew(dead.run_ids[0]))
        mine = rt.runner.submit("timing", ["slower than the lease"], rt.default_settings)
        first_beat = heartbeat_at(other, rt.store)
        killed = time.time()
        deadline = killed + 30
        while not (saved := rt.store.load("dead")) or not saved.done:  # type: ignore[union-attr]
            assert time.time() < deadline, "the dead server's batch stayed open"
            time.sleep(0.05)
        swept_after = time.time() - killed
        assert [c.state for c in saved.crews] == [CrewState.INTERRUPTED] * 2
        assert heartbeat_at(other, rt.store) > first_beat  # renewed while it runs
        assert other.interrupt_orphans(liveness.lease_s) == 0  # rt's batch: alive, left alone
        assert rt.runner.batch(mine).wait(30)
        assert rt.runner.snapshot(mine).crews[0].state is CrewState.SUCCEEDED
    finally:
        other.close()
        rt.close()
    # the bound: lease + one heartbeat after the last sign of life, with room for a busy machine
    assert swept_after < liveness.lease_s + liveness.heartbeat_s + 5
    reader = Store(url)
    try:
        with reader.engine.connect() as conn:  # the clean exit gave the lease up
            assert conn.execute(text("select max(heartbeat_at) from owners")).scalar() == 0.0
    finally:
        reader.close()


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
    monkeypatch.setenv("CREWDASH_DEMO_LATENCY", "0.1")
    rt = Runtime.from_env()  # this environment, read once
    try:
        rt.warm_up().result(60)
        assert rt.demo is not None and rt.demo.stats.requests == 1
    finally:
        rt.close()


def test_a_runtime_reads_the_settings_once_and_its_layers_use_them_while_it_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`from_env` reads the environment once; the calls that take no argument (a model call's
    timeout, the prices, the outputs folder) use what it read until it closes, then read the
    environment themselves again."""
    import crewdash.base.settings as settings_module
    import crewdash.runtime as runtime_module
    from crewdash.base.config import outputs_dir
    from crewdash.base.settings import installed_settings
    from crewdash.model.pricing import prices
    from crewdash.providers.llm import LLMSettings

    reads: list[object] = []
    real = settings_module.load_settings

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(settings_module, "load_settings", counted)
    monkeypatch.setattr(runtime_module, "load_settings", counted)
    env = {
        "CREWDASH_DEMO_LATENCY": "0.05",
        "CREWDASH_LLM_TIMEOUT": "12",
        "CREWDASH_OUTPUTS_DIR": str(tmp_path / "outputs"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'history.db'}",
    }
    rt = Runtime.from_env(env)
    try:
        assert reads == [None]  # every variable, once
        assert installed_settings() is rt.settings
        monkeypatch.setenv("CREWDASH_LLM_TIMEOUT", "99")  # too late for this process
        assert LLMSettings().timeout_s == 12
        assert rt.default_settings.llm.timeout_s == 12
        assert outputs_dir() == tmp_path / "outputs"
        assert "gpt-4o" in prices()
        batch_id = rt.runner.submit("timing", ["once"], rt.default_settings)
        assert rt.runner.batch(batch_id).wait(30)
        assert rt.runner.snapshot(batch_id).crews[0].state is CrewState.SUCCEEDED
        assert reads == [None]  # a batch, its model calls and prices read nothing again
    finally:
        rt.close()
    assert installed_settings() is None
    assert LLMSettings().timeout_s == 99  # no runtime: the environment, as before
