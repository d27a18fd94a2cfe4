"""A person's daily cap: which unit a batch counts in, what a refusal says, and the UTC day."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crewdash.base.errors import SettingsError
from crewdash.model.spend import Spend, SpendCap, day_start, month_start, until_tomorrow

pytestmark = pytest.mark.timeout(30)


def test_a_priced_batch_counts_in_dollars_and_is_refused_with_its_estimate_and_what_is_left() -> (
    None
):
    cap = SpendCap(usd=1.0, tokens=5_000)
    spent = Spend(usd=0.75, unpriced_tokens=4_000, tokens=9_000, batches=3)
    assert cap.left(spent) == (0.25, 1_000)
    assert cap.refusal(spent, "demo-thorough", cost_usd=0.25, tokens=99_999) is None
    why = cap.refusal(spent, "demo-thorough", cost_usd=0.30, tokens=10)
    assert why is not None
    assert "$0.3000" in why and "$0.2500 left" in why and "$1.00" in why and "$0.7500" in why


def test_an_unpriced_batch_counts_its_tokens_against_the_token_cap() -> None:
    cap = SpendCap(usd=1.0, tokens=5_000)
    spent = Spend(usd=0.99, unpriced_tokens=4_000, tokens=4_000)
    assert cap.refusal(spent, "local-llama", cost_usd=None, tokens=1_000) is None
    why = cap.refusal(spent, "local-llama", cost_usd=None, tokens=1_001)
    assert why is not None and "1,001 tokens" in why and "1,000 left" in why


def test_with_only_a_dollar_cap_an_unpriced_model_is_refused_by_name() -> None:
    why = SpendCap(usd=2.0).refusal(Spend(), "local-llama", cost_usd=None, tokens=1)
    assert why is not None and "'local-llama' has no price" in why
    assert "CREWDASH_DAILY_CAP_TOKENS" in why


def test_no_cap_of_a_kind_refuses_nothing_of_that_kind() -> None:
    assert not SpendCap().active
    assert SpendCap().refusal(Spend(usd=1e9), "demo-thorough", 1e9, 10**12) is None
    only_tokens = SpendCap(tokens=10)
    assert only_tokens.refusal(Spend(usd=1e9), "demo-thorough", 1e9, 10**12) is None
    assert only_tokens.left(Spend(unpriced_tokens=25)) == (None, 0)  # never below nothing


@pytest.mark.parametrize(
    "usd, tokens", [(0.0, None), (-1.0, None), (None, 0), (float("nan"), None)]
)
def test_a_cap_is_more_than_nothing(usd: float | None, tokens: int | None) -> None:
    with pytest.raises(SettingsError, match="more than 0"):
        SpendCap(usd=usd, tokens=tokens)


def test_days_and_months_are_utc() -> None:
    now = datetime(2026, 12, 3, 22, 15, 30, tzinfo=UTC).timestamp()
    assert day_start(now) == datetime(2026, 12, 3, tzinfo=UTC).timestamp()
    assert month_start(now) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert until_tomorrow(now) == pytest.approx(1 * 3600 + 44 * 60 + 30)
    assert Spend(1.0, 2, 3, 1) + Spend(0.5, 1, 1, 1) == Spend(1.5, 3, 4, 2)
