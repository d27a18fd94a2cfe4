"""A sentinel API key goes through a whole batch (a failing call included) and is then looked
for everywhere crewdash writes: the database files, the logs and every export."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crewdash.demo.server import DemoLLMServer
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.present.exports import FORMATS, export
from crewdash.providers.llm import LLMSettings
from crewdash.store.history import Store

SENTINEL = "sk-SENTINEL-4f1c9e2a7b"


def test_a_key_never_lands_in_the_database_logs_or_exports(
    demo_server: DemoLLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "history.db"
    store = Store(f"sqlite:///{db}")
    runner = Runner(store=store)
    settings = RunSettings(
        llm=LLMSettings(
            provider="openai_compatible",
            model="crewdash-demo",
            base_url=demo_server.base_url,
            api_key=SENTINEL,
        )
    )
    try:
        batch_id = runner.submit("timing", ["fine", "broken [demo:fail-401]"], settings)
        assert runner.batch(batch_id).wait(60)
        snap = runner.snapshot(batch_id)
    finally:
        runner.close()
        store.close()
    assert [c.state.value for c in snap.crews] == ["succeeded", "failed"]
    assert snap.crews[1].error == "The API key was rejected (401): check the key for this provider."
    assert "SENTINEL" not in repr(settings)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("history.db")]
    assert files
    for path in files:
        assert SENTINEL.encode() not in path.read_bytes(), path.name
    assert SENTINEL not in caplog.text
    for fmt in FORMATS:
        assert SENTINEL not in export(snap, fmt)
