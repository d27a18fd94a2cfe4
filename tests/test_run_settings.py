"""A batch's run settings serialise themselves both ways: what the record keeps for a resume
(`RunSettings.to_dict`) is what the resume reads back (`RunSettings.from_dict`), budget included,
API key never."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import pytest

from crewdash.blueprints.catalog import load_blueprint
from crewdash.engine.budget import Budget
from crewdash.engine.checkpoints import record_batch
from crewdash.engine.plans import RunSettings
from crewdash.engine.resume import _settings
from crewdash.model.batch import Batch
from crewdash.providers.llm import LLMSettings
from crewdash.store.history import Store

KEY = "sk-NEVER-STORED-1234"


def every_field_set(budget: Budget) -> RunSettings:
    """Settings with no field at its default, so a field the round trip drops shows."""
    llm = LLMSettings(
        provider="openai_compatible",
        model="local-model",
        base_url="http://127.0.0.1:9/v1",
        api_key=KEY,
        temperature=0.3,
        max_tokens=321,
        timeout_s=12.5,
        requests_per_minute=60,
        tokens_per_minute=9000,
        governor=False,
        retry_tries=3,
        retry_seconds=40.0,
        stream=False,
    )
    return RunSettings(
        llm=llm, max_concurrency=7, crew_timeout_s=90.0, budget=budget, response_cache=True
    )


@pytest.mark.parametrize("budget", [Budget(usd=0.25), Budget(tokens=12_000)], ids=["usd", "tokens"])
def test_run_settings_round_trip_every_field_but_the_key(budget: Budget) -> None:
    settings = every_field_set(budget)
    for field in fields(LLMSettings):  # the fixture really sets every field
        assert getattr(settings.llm, field.name) != field.default, field.name
    stored = json.dumps(settings.to_dict())  # JSON-ready: what the record holds
    assert KEY not in stored
    back = RunSettings.from_dict(json.loads(stored))
    assert back == replace(settings, llm=replace(settings.llm, api_key=None))
    assert back.budget == budget


def test_the_dict_names_every_field() -> None:
    """A field added to RunSettings or LLMSettings is stored too (or this fails)."""
    data = every_field_set(Budget(usd=1.0)).to_dict()
    assert set(data) == {f.name for f in fields(RunSettings)}
    assert set(data["llm"]) == {f.name for f in fields(LLMSettings)} - {"api_key"}
    assert data["budget"] == {"usd": 1.0, "tokens": None}


def test_a_record_written_before_budgets_and_the_cache_reads_back_with_their_defaults() -> None:
    old = {"llm": {"provider": "demo", "model": "crewdash-demo"}, "max_concurrency": 4}
    back = RunSettings.from_dict({**old, "crew_timeout_s": None})
    assert (back.budget, back.response_cache, back.max_concurrency) == (None, False, 4)
    assert back.llm == LLMSettings()


def test_a_resume_reads_back_what_the_batch_recorded_budget_included(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        settings = every_field_set(Budget(tokens=5_000))
        batch = Batch("b" * 12, "timing", ["one"], model_label="m", max_concurrency=7)
        store.create_batch(batch.snapshot(), "cli")  # the record sits beside the history row
        record_batch(store, batch.batch_id, load_blueprint("timing"), settings.to_dict())
        fallback = RunSettings()
        back = _settings(store, batch.batch_id, fallback)
        assert back == replace(settings, llm=replace(settings.llm, api_key=None))
        assert _settings(store, "c" * 12, fallback) is fallback  # nothing recorded
    finally:
        store.close()


def test_a_reopened_batch_keeps_its_budget() -> None:
    batch = Batch("b1", "timing", ["one"], model_label="demo", max_concurrency=1, budget_usd=0.5)
    again = Batch.reopen(batch.snapshot(), {})
    assert (again.snapshot().budget_usd, again.snapshot().budget_tokens) == (0.5, None)
