from pathlib import Path

import pytest

from crewdash.base.errors import SettingsError
from crewdash.model.batch import Batch, TokenUsage
from crewdash.model.pricing import Price, batch_cost, cost, crew_cost, price_for, prices
from crewdash.present.exports import export


def test_built_in_prices_cover_common_models() -> None:
    assert price_for("gpt-4o-mini") == Price(0.15, 0.60)
    assert price_for("openai/gpt-4o-mini") == Price(0.15, 0.60)
    assert price_for("crewdash-demo") == Price(0.0, 0.0)
    assert price_for("no-such-model") is None
    assert cost("gpt-4o", TokenUsage(1_000_000, 100_000, 1_100_000)) == pytest.approx(3.5)


def test_users_file_extends_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "prices.yaml"
    extra.write_text("my-model: {input: 1, output: 2}\ngpt-4o-mini: {input: 9, output: 9}\n")
    monkeypatch.setenv("CREWDASH_PRICES_FILE", str(extra))
    assert price_for("my-model") == Price(1.0, 2.0)
    assert price_for("gpt-4o-mini") == Price(9.0, 9.0)
    assert "gpt-4o" in prices()


def test_a_broken_prices_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: {input: cheap}\n")
    monkeypatch.setenv("CREWDASH_PRICES_FILE", str(bad))
    with pytest.raises(SettingsError, match="cannot read prices from"):
        prices()


def test_batch_cost_per_crew_and_in_exports() -> None:
    batch = Batch(
        "b",
        "research",
        ["a", "b"],
        model_label="openai/gpt-4o-mini",
        max_concurrency=2,
        model="gpt-4o-mini",
    )
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
        batch.mark_succeeded(run_id, "ok", TokenUsage(1000, 500, 1500))
    snap = batch.snapshot()
    assert crew_cost(snap, snap.crews[0]) == pytest.approx(0.00045)
    assert batch_cost(snap) == pytest.approx(0.0009)
    assert "0.00045000" in export(snap, "csv")
    assert "cost $0.0009" in export(snap, "md")
    unknown = Batch("c", "r", ["a"], model_label="x", max_concurrency=1, model="mystery")
    assert batch_cost(unknown.snapshot()) is None
