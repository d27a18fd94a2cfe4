"""Token prices from `prices.yaml` (plus the user's `CREWDASH_PRICES_FILE`), and costs.

Costs are derived from recorded token counts at read time, so a corrected price fixes history.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from crewdash.base.config import PRICES_FILE
from crewdash.base.errors import SettingsError
from crewdash.base.settings import process_settings
from crewdash.model.batch import BatchSnapshot, CrewSnapshot, TokenUsage

BUILT_IN = PRICES_FILE


@dataclass(frozen=True)
class Price:
    """US dollars per million prompt (input) and completion (output) tokens."""

    input: float
    output: float

    def cost(self, tokens: TokenUsage) -> float:
        return (tokens.prompt * self.input + tokens.completion * self.output) / 1_000_000


def _read(path: Path) -> dict[str, Price]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return {str(k): Price(float(v["input"]), float(v["output"])) for k, v in data.items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SettingsError(f"cannot read prices from {path}: {exc}") from None


@lru_cache(maxsize=4)
def _prices(extra: str) -> dict[str, Price]:
    prices = _read(BUILT_IN) if BUILT_IN.exists() else {}
    if extra:
        prices.update(_read(Path(extra)))
    return prices


def prices() -> dict[str, Price]:
    """The built-in prices with `CREWDASH_PRICES_FILE`'s over them (`process_settings`)."""
    return _prices(process_settings("CREWDASH_PRICES_FILE").prices_file or "")


def check_prices_file(extra: str | None) -> None:
    """Read `CREWDASH_PRICES_FILE` (`extra`) at start: a broken file stops the start with one
    line naming the variable, instead of failing every page and export that shows a cost later."""
    if extra:
        try:
            _read(Path(extra))
        except SettingsError as exc:
            raise SettingsError(f"CREWDASH_PRICES_FILE: {exc}") from None


def price_for(model: str) -> Price | None:
    """The price of `model` (also tried without a `provider/` prefix); None if unknown."""
    table = prices()
    return table.get(model) or table.get(model.split("/", 1)[-1])


def cost(model: str, tokens: TokenUsage) -> float | None:
    price = price_for(model)
    return None if price is None else price.cost(tokens)


def crew_cost(batch: BatchSnapshot, crew: CrewSnapshot) -> float | None:
    """US dollars for one crew of `batch` at today's prices; None if the model has no price."""
    return cost(batch.model, crew.tokens)


def batch_cost(batch: BatchSnapshot) -> float | None:
    """US dollars for every crew of `batch`; None if the model has no price."""
    costs = [crew_cost(batch, c) for c in batch.crews]
    return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
