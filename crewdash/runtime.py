"""The process-wide service: the runner, the demo model (started on demand) and the defaults.

The UI wraps `Runtime.from_env` in `st.cache_resource`; the CLI and tests build their own.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future

from crewdash.batch import BatchSnapshot
from crewdash.blueprints import load_blueprint
from crewdash.config import DEFAULT_MAX_CONCURRENCY, env_float, env_int, silence_telemetry
from crewdash.demo_llm import PROFILE_KINDS, DemoLLMServer, FailureRates, LatencyProfile
from crewdash.errors import SettingsError, UnknownBatchError
from crewdash.jobs import JobRunner
from crewdash.llm import LLMSettings, build_llm, default_llm_settings
from crewdash.runner import Runner, RunSettings
from crewdash.store import Store

silence_telemetry()
# CrewAI warns on every call to a model it has no tokenizer for (the demo model); noise for users.
logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)


def freeze_heap() -> None:
    """Move everything alive now out of the garbage collector's reach.

    After start-up the heap holds hundreds of thousands of long-lived objects (CrewAI, pydantic
    schemas); a full collection scanning them stopped every thread for ~190 ms in the middle of
    a 100-crew batch. Frozen objects are never scanned again, and that pause drops to ~25 ms.
    """
    gc.collect()
    gc.freeze()


def demo_profile_from_env(env: Mapping[str, str] | None = None) -> LatencyProfile:
    """`CREWDASH_DEMO_PROFILE` (fixed|hosted|slow), `CREWDASH_DEMO_LATENCY`, `CREWDASH_DEMO_SEED`.

    A latency given alone means a fixed profile.
    """
    env = os.environ if env is None else env
    latency = env_float("CREWDASH_DEMO_LATENCY", None, env)
    seed = env_int("CREWDASH_DEMO_SEED", 7, env)
    kind = env.get("CREWDASH_DEMO_PROFILE", "").strip() or (
        "hosted" if latency is None else "fixed"
    )
    if kind not in PROFILE_KINDS:
        raise SettingsError(f"CREWDASH_DEMO_PROFILE must be one of {', '.join(PROFILE_KINDS)}")
    try:
        return LatencyProfile(kind=kind, seconds=1.0 if latency is None else latency, seed=seed)
    except ValueError as exc:
        raise SettingsError(f"CREWDASH_DEMO_LATENCY: {exc}") from None


class Runtime:
    """Everything one process shares between sessions; thread-safe."""

    def __init__(
        self,
        default_settings: RunSettings,
        demo_profile: LatencyProfile,
        store: Store | None = None,
        demo_failures: FailureRates | None = None,
    ) -> None:
        self.default_settings = default_settings
        self.demo_profile = demo_profile
        self.store = store
        self.interrupted_at_start = store.interrupt_orphans() if store is not None else 0
        self.demo_failures = demo_failures or FailureRates()
        self._demos: dict[tuple[LatencyProfile, FailureRates], DemoLLMServer] = {}
        self._demo_lock = threading.Lock()
        self.runner = Runner(
            max_concurrency=default_settings.max_concurrency,
            demo_base_url=self.demo_base_url,
            store=store,
        )
        self.jobs = JobRunner()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runtime:
        env = os.environ if env is None else env
        limit = env_int("CREWDASH_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY, env)
        if not 1 <= limit <= 1000:
            raise SettingsError("CREWDASH_MAX_CONCURRENCY must be between 1 and 1000")
        settings = RunSettings(llm=default_llm_settings(env), max_concurrency=limit)
        profile = demo_profile_from_env(env)
        try:
            failures = FailureRates.parse(env.get("CREWDASH_DEMO_FAILURES", ""), profile.seed)
        except ValueError as exc:
            raise SettingsError(f"CREWDASH_DEMO_FAILURES: {exc}") from None
        return cls(settings, profile, Store(env.get("DATABASE_URL") or None), failures)

    def snapshot(self, batch_id: str) -> BatchSnapshot:
        """A batch from this process's runner (live), else from the history database."""
        try:
            return self.runner.snapshot(batch_id)
        except UnknownBatchError:
            saved = self.store.load(batch_id) if self.store is not None else None
            if saved is None:
                raise
            return saved

    def warm_up(self) -> Future[None]:
        """Run one throw-away crew against the demo model in the background, then freeze the heap.

        A process's first crew pays ~1 s of one-off costs (imports, pydantic schema building);
        paying it at start keeps it out of the first batch's timings. Its events belong to no
        batch, so nothing shows up in any page.
        """
        crew = load_blueprint("timing").build(build_llm(LLMSettings(), self.demo_base_url()))

        async def warm() -> None:
            await crew.akickoff(inputs={"topic": "warm-up"})
            freeze_heap()

        return asyncio.run_coroutine_threadsafe(warm(), self.runner.loop)

    @property
    def demo(self) -> DemoLLMServer | None:
        """The default demo model server, if it has started."""
        return self._demos.get((self.demo_profile, self.demo_failures))

    def demo_base_url(
        self, profile: LatencyProfile | None = None, failures: FailureRates | None = None
    ) -> str:
        """The URL of a demo model with this behaviour (the defaults if not given), started on
        first use: one small server per behaviour, so sessions can pick their own."""
        key = (profile or self.demo_profile, failures or self.demo_failures)
        with self._demo_lock:
            if key not in self._demos:
                self._demos[key] = DemoLLMServer(key[0], failures=key[1]).start()
            return self._demos[key].base_url

    def close_at_exit(self) -> None:
        """Close (crews still running become interrupted in the store) when the process exits.

        Registered with `threading`'s exit hooks, which run in reverse order before the
        interpreter joins executor threads: a plain `atexit` hook would only run after every
        in-flight LLM call had returned, long after a SIGTERM.
        """
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(self.close)
        else:  # pragma: no cover - other Python implementations
            atexit.register(self.close)

    def close(self) -> None:
        self.runner.close()
        if self.store is not None:
            self.store.close()
        with self._demo_lock:
            for server in self._demos.values():
                server.stop()
            self._demos.clear()
