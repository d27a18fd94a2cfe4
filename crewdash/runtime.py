"""The process-wide service: the runner, the demo model (started on demand) and the defaults.

The composition root: `Runtime.from_env` reads the settings once (`load_settings`), hands typed
parts of them down (run settings, demo profile, liveness, backend, store URL) and installs them
for the lower layers' calls that take no argument (`crewdash.base.settings.install_settings`)
while the runtime lives. The UI wraps `Runtime.from_env` in `st.cache_resource`; the CLI and
tests build their own.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from crewdash.base.config import (
    quiet_crewai_logs,
)
from crewdash.base.errors import (
    BatchRunningError,
    SettingsError,
    UnknownBatchError,
    describe_error,
)
from crewdash.base.settings import (
    Settings,
    default_of,
    install_settings,
    installed_settings,
    load_settings,
    process_settings,
)
from crewdash.blueprints.base import BaseBlueprint
from crewdash.blueprints.catalog import builtin_blueprint, load_blueprint
from crewdash.demo.profiles import FailureRates, LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.execution import Backend, CrewJob, LocalBackend, blueprint_builder, freeze_heap
from crewdash.engine.jobs import JobRunner
from crewdash.engine.plans import RunSettings
from crewdash.engine.resume import auto_resume
from crewdash.engine.runner import Runner
from crewdash.engine.sheet_batches import SheetPlan, SheetUpload, plan_sheet
from crewdash.experiments.runner import Experiments
from crewdash.experiments.store import StoredResponses
from crewdash.model.batch import Batch, BatchSnapshot, CrewSnapshot
from crewdash.model.people import Person, TeamPolicy
from crewdash.model.pricing import check_prices_file
from crewdash.model.spend import Spend, SpendCap, day_start
from crewdash.providers.limits import ProviderLimits
from crewdash.providers.llm import LLMSettings, default_llm_settings
from crewdash.providers.response_cache import install_store, installed_store
from crewdash.sheets.mapping import InputMap, MappedRow, rows_to_inputs
from crewdash.sheets.reader import read_sheet
from crewdash.sheets.sheet import Sheet
from crewdash.store.history import Store
from crewdash.store.owners import DEFAULT_LEASE_S
from crewdash.store.sheets import StoredSheet

quiet_crewai_logs()
log = logging.getLogger(__name__)


def demo_profile_from_env(env: Mapping[str, str] | None = None) -> LatencyProfile:
    """`CREWDASH_DEMO_PROFILE` (fixed|hosted|slow), `CREWDASH_DEMO_LATENCY`, `CREWDASH_DEMO_SEED`
    and `CREWDASH_DEMO_TOKENS_PER_S` of `env` (default: this process's environment)."""
    return demo_profile_of(
        load_settings(
            env,
            only={
                "CREWDASH_DEMO_LATENCY",
                "CREWDASH_DEMO_SEED",
                "CREWDASH_DEMO_PROFILE",
                "CREWDASH_DEMO_TOKENS_PER_S",
            },
        )
    )


def demo_profile_of(settings: Settings) -> LatencyProfile:
    """The demo model's latency profile; a latency given alone means a fixed profile."""
    latency, seed = settings.demo_latency, settings.demo_seed
    kind = settings.demo_profile or ("hosted" if latency is None else "fixed")
    try:
        return LatencyProfile(
            kind=kind,
            seconds=1.0 if latency is None else latency,
            seed=seed,
            tokens_per_s=settings.demo_tokens_per_s,
        )
    except ValueError as exc:
        raise SettingsError(f"CREWDASH_DEMO_LATENCY: {exc}") from None


def backend_from_env(env: Mapping[str, str] | None = None) -> Backend:
    """`CREWDASH_RUNNER`: `local` (the default) or `ray` (`RAY_ADDRESS`, `CREWDASH_RAY_WORKERS`).

    A Ray backend that cannot start raises; it never quietly becomes a local one.
    """
    settings = load_settings(env, only={"CREWDASH_RUNNER"})
    if settings.runner == "ray":  # Ray's own variables are read, and checked, for Ray only
        settings = load_settings(
            env, only={"CREWDASH_RUNNER", "RAY_ADDRESS", "CREWDASH_RAY_WORKERS"}
        )
    return backend_for(settings)


def backend_for(settings: Settings) -> Backend:
    """The backend `settings.runner` names (see `backend_from_env`)."""
    if settings.runner == "local":
        return LocalBackend()
    from crewdash.engine.backends.ray import RayBackend, RaySettings

    return RayBackend(RaySettings.from_settings(settings))


@dataclass(frozen=True)
class Liveness:
    """How a server shows the store it is alive: a heartbeat every `heartbeat_s`. A server
    silent for `lease_s` is presumed dead; every server sweeps the store at each heartbeat, so a
    dead server's unfinished batches become interrupted within `lease_s + heartbeat_s`."""

    heartbeat_s: float = default_of("CREWDASH_OWNER_HEARTBEAT_S")
    lease_s: float = DEFAULT_LEASE_S

    def __post_init__(self) -> None:
        if not 0.05 <= self.heartbeat_s <= 3600:
            raise SettingsError("CREWDASH_OWNER_HEARTBEAT_S must be between 0.05 and 3600 seconds")
        if not 2 * self.heartbeat_s <= self.lease_s <= 86_400:
            raise SettingsError(
                "CREWDASH_OWNER_LEASE_S must be at least twice CREWDASH_OWNER_HEARTBEAT_S "
                f"({self.heartbeat_s:g} s) and at most 86400 seconds, got {self.lease_s:g}"
            )


def liveness_from_env(env: Mapping[str, str] | None = None) -> Liveness:
    """`CREWDASH_OWNER_HEARTBEAT_S` (5) and `CREWDASH_OWNER_LEASE_S` (30)."""
    return liveness_of(
        load_settings(env, only={"CREWDASH_OWNER_HEARTBEAT_S", "CREWDASH_OWNER_LEASE_S"})
    )


def liveness_of(settings: Settings) -> Liveness:
    """The heartbeat and lease of `settings`."""
    return Liveness(settings.owner_heartbeat_s, settings.owner_lease_s)


class Heartbeat:
    """A daemon thread that renews this process's lease and sweeps the store for batches of
    servers whose lease ran out (killed, or their pod replaced); a failing database is logged
    and tried again at the next beat."""

    def __init__(self, store: Store, liveness: Liveness) -> None:
        self.store = store
        self.liveness = liveness
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crewdash-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.liveness.heartbeat_s):
            self.beat()

    def beat(self) -> None:
        try:
            if not self.store.beat():
                log.error(
                    "this server's heartbeat was late by more than %g s: other servers presumed "
                    "it dead and marked its running batches interrupted",
                    self.liveness.lease_s,
                )
            ended = self.store.interrupt_orphans(self.liveness.lease_s)
        except Exception as exc:  # noqa: BLE001 - the next beat tries again
            log.warning("heartbeat: the history database failed: %s", describe_error(exc))
            return
        if ended:
            log.warning("%d crews of stopped servers were marked interrupted", ended)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


async def _ignore(_: CrewSnapshot) -> None:
    """A `started` callback for crews nobody watches."""


def warm_up(runner: Runner, demo_url: str) -> Future[None]:
    """Run one throw-away crew in each backend process, then freeze this process's heap.

    A process's first crew pays ~1 s of one-off costs (imports, pydantic schema building);
    paying it at start keeps it out of the first batch's timings. Its events belong to no
    batch, so nothing shows up in any page.
    """
    backend = runner.backend
    builder = blueprint_builder(builtin_blueprint("timing"), LLMSettings(), demo_url)

    async def warm_one(n: int) -> None:
        batch = Batch("warm-up", "timing", ["warm-up"], model_label="", max_concurrency=1)
        job = CrewJob(
            batch.run_ids[0], "warm-up", builder, {"topic": f"warm-up {n}"}, LLMSettings(), 60
        )
        await backend.run(batch, job, _ignore)

    async def warm() -> None:
        await asyncio.gather(*(warm_one(n) for n in range(backend.processes)))
        freeze_heap()

    return asyncio.run_coroutine_threadsafe(warm(), runner.loop)


SHEETS_KEPT = 8  # sheets read back from the history, kept in memory for their exports


class Runtime:
    """Everything one process shares between sessions; thread-safe.

    `settings`, when given (`from_env` gives what it read), are installed for the lower layers'
    calls that take no argument while this runtime lives; without them those calls read the
    environment themselves (`crewdash.base.settings.process_settings`).
    """

    def __init__(
        self,
        default_settings: RunSettings,
        demo_profile: LatencyProfile,
        store: Store | None = None,
        demo_failures: FailureRates | None = None,
        backend: Backend | None = None,
        liveness: Liveness | None = None,
        demo_limits: ProviderLimits | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.default_settings = default_settings
        self.demo_profile = demo_profile
        self.store = store
        self.settings = settings
        self.liveness = liveness or (
            liveness_of(settings) if settings is not None else liveness_from_env()
        )
        self.demo_failures = demo_failures or FailureRates()
        self.demo_limits = demo_limits or ProviderLimits()
        self._demos: dict[tuple[LatencyProfile, FailureRates, ProviderLimits], DemoLLMServer] = {}
        self._demo_lock = threading.Lock()
        self._sheets: dict[str, tuple[Sheet, tuple[MappedRow, ...]]] = {}  # newest last
        self._sheets_lock = threading.Lock()
        self._heartbeat: Heartbeat | None = None
        self.auto_resumed: list[str] = []  # what CREWDASH_AUTO_RESUME resumed at start, said
        try:
            if settings is not None:  # read once, at start: the calls below ask for them
                install_settings(settings)
            if store is not None:  # alive before the first batch, and the dead ones ended at once
                store.beat()
                store.interrupt_orphans(self.liveness.lease_s)
            self.runner = Runner(
                max_concurrency=default_settings.max_concurrency,
                demo_base_url=self.demo_base_url,
                store=store,
                backend=backend,
                spend_cap=self.spend_cap,
            )
            self.jobs = JobRunner()
            self.experiments = Experiments(
                self.runner, store, default_settings.llm, self.demo_base_url
            )
            self._responses = StoredResponses(store) if store is not None else None
            install_store(self._responses)  # crews that opt in share it, in every process
            self._heartbeat = Heartbeat(store, self.liveness) if store is not None else None
        except BaseException:
            self._abandon(backend)
            raise

    @property
    def team(self) -> TeamPolicy:
        """Who may sign in and who is an admin (`CREWDASH_MEMBERS`, `CREWDASH_ADMINS`)."""
        if self.settings is None:
            return TeamPolicy()
        return TeamPolicy.parse(self.settings.admins, self.settings.members)

    @property
    def spend_cap(self) -> SpendCap:
        """Each person's daily cap (`CREWDASH_DAILY_CAP_USD`, `CREWDASH_DAILY_CAP_TOKENS`; a
        runtime built without settings, as the CLI's, reads them from the environment)."""
        settings = self.settings or process_settings(
            "CREWDASH_DAILY_CAP_USD", "CREWDASH_DAILY_CAP_TOKENS"
        )
        return SpendCap(settings.daily_cap_usd, settings.daily_cap_tokens)

    def spend_today(self, user_id: str) -> Spend:
        """What `user_id` has spent today (UTC), with running batches at least at their
        estimate; nothing without a store."""
        return self.store.spend_of(user_id, day_start()) if self.store else Spend()

    def _abandon(self, backend: Backend | None) -> None:
        """Undo a start that failed half-way: the runner's thread, the backend, the store."""
        if hasattr(self, "runner"):
            self.close()  # the runner closes the backend
            return
        self._uninstall()
        if backend is not None:
            backend.close()
        if self.store is not None:
            self.store.close()

    def _uninstall(self) -> None:
        """Take this runtime's settings back, unless another runtime installed its own since."""
        if self.settings is not None and installed_settings() is self.settings:
            install_settings(None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runtime:
        """A runtime from `env` (default: this process's environment), read once here."""
        every = load_settings(env)  # every variable checked at start, one line for a bad one
        defaults = RunSettings(
            llm=default_llm_settings(every), max_concurrency=every.max_concurrency
        )
        profile = demo_profile_of(every)
        liveness = liveness_of(every)
        try:
            failures = FailureRates.parse(every.demo_failures, profile.seed)
        except ValueError as exc:
            raise SettingsError(f"CREWDASH_DEMO_FAILURES: {exc}") from None
        try:
            limits = ProviderLimits.parse(every.demo_limits)
        except SettingsError as exc:
            raise SettingsError(f"CREWDASH_DEMO_LIMITS: {exc}") from None
        check_prices_file(every.prices_file)
        backend = backend_for(every)  # first: a wrong cluster address fails before anything
        try:
            store = Store(every.database_url)
        except BaseException:
            backend.close()
            raise
        # closes both on failure
        runtime = cls(defaults, profile, store, failures, backend, liveness, limits, every)
        if every.auto_resume:
            runtime.resume_interrupted()
        return runtime

    def resume_interrupted(self) -> None:
        """Resume, once, the interrupted crews of batches whose server is gone (and say so)."""
        self.auto_resumed = [o.describe() for o in auto_resume(self)]

    def snapshot(self, batch_id: str) -> BatchSnapshot:
        """A batch from this process's runner (live), else from the history database."""
        try:
            return self.runner.snapshot(batch_id)
        except UnknownBatchError:
            saved = self.store.load(batch_id) if self.store is not None else None
            if saved is None:
                raise
            return saved

    def delete_batch(self, batch_id: str) -> int:
        """Delete an ended batch everywhere: the database, its crews' files, the runner's and
        the experiments' memory. Returns how many crews it had. `BatchRunningError` while it
        runs, or while this process's judge still scores it (an experiment)."""
        if self.experiments.judging(batch_id):
            raise BatchRunningError(
                batch_id, "is still being judged: wait for its last scores, then delete it"
            )
        crews = self.runner.delete(batch_id)
        self.experiments.forget(batch_id)
        return crews

    def submit_sheet(
        self,
        blueprint: BaseBlueprint | str,
        upload: SheetUpload,
        settings: RunSettings,
        *,
        by: Person | None = None,
        source: str = "page",
    ) -> tuple[str, SheetPlan]:
        """Start one crew per runnable row of an uploaded sheet; the file and its map are kept
        with the batch, so its enriched sheet can be rebuilt from the history. `SheetError` (or
        a budget's or a cap's refusal) before anything starts."""
        bp = load_blueprint(blueprint) if isinstance(blueprint, str) else blueprint
        sheet = read_sheet(upload.data, upload.filename, upload.sheet_name)
        plan = plan_sheet(bp, sheet, upload.input_map(bp, sheet), settings)
        skipped = f"; {plan.skipped} row(s) skipped" if plan.skipped else ""
        batch_id = self.runner.submit_plans(
            plan.plans,
            settings,
            notes=(f"{sheet.filename}: {sheet.detected}{skipped}", *sheet.notes),
            source=source,
            label=bp.name,
            kind=bp.kind,
            resumable=bp,
            by=by,
        )
        stored = StoredSheet(
            upload.filename,
            sheet.sheet_name,
            upload.data,
            dict(plan.input_map.columns),
            dict(plan.input_map.values),
            tuple(sorted(bp.required)),
        )
        if self.store is not None:
            self.store.save_sheet(batch_id, stored)
        self._keep_sheet(batch_id, sheet, plan.rows)
        return batch_id, plan

    def sheet_of(self, batch_id: str) -> tuple[Sheet, tuple[MappedRow, ...]] | None:
        """The sheet batch `batch_id` ran from and its rows as inputs (None: typed topics),
        from memory, else read again from the history's copy of the file."""
        with self._sheets_lock:
            if batch_id in self._sheets:
                return self._sheets[batch_id]
        stored = self.store.sheet_of(batch_id) if self.store is not None else None
        if stored is None:
            return None
        sheet = read_sheet(stored.data, stored.filename, stored.sheet_name)
        input_map = InputMap(stored.columns, stored.values)
        rows = rows_to_inputs(sheet, input_map, stored.required)
        self._keep_sheet(batch_id, sheet, rows)
        return sheet, rows

    def _keep_sheet(self, batch_id: str, sheet: Sheet, rows: tuple[MappedRow, ...]) -> None:
        """Remember a sheet batch's sheet for its exports (the newest `SHEETS_KEPT`)."""
        with self._sheets_lock:
            self._sheets[batch_id] = (sheet, rows)
            while len(self._sheets) > SHEETS_KEPT:
                self._sheets.pop(next(iter(self._sheets)))

    def warm_up(self) -> Future[None]:
        """Warm the runner's backend up against the default demo model, in the background."""
        return warm_up(self.runner, self.demo_base_url())

    @property
    def demo(self) -> DemoLLMServer | None:
        """The default demo model server, if it has started."""
        return self._demos.get((self.demo_profile, self.demo_failures, self.demo_limits))

    def demo_base_url(
        self,
        profile: LatencyProfile | None = None,
        failures: FailureRates | None = None,
        limits: ProviderLimits | None = None,
    ) -> str:
        """The URL of a demo model with this behaviour (the defaults if not given), started on
        first use: one small server per behaviour, so sessions can pick their own."""
        key = (
            profile or self.demo_profile,
            failures or self.demo_failures,
            limits or self.demo_limits,
        )
        with self._demo_lock:
            if key not in self._demos:
                self._demos[key] = DemoLLMServer(key[0], failures=key[1], limits=key[2]).start()
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
        self._uninstall()
        if installed_store() is getattr(self, "_responses", None):
            install_store(None)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self.store is not None:
            try:
                self.store.release()
            except Exception as exc:  # noqa: BLE001 - the lease then runs out by itself
                log.warning("could not release this server's lease: %s", describe_error(exc))
            self.store.close()
        with self._demo_lock:
            for server in self._demos.values():
                server.stop()
            self._demos.clear()
