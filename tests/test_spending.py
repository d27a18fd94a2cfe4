"""Spend per person in the history store, on SQLite and PostgreSQL: what counts, and a daily cap
that holds when several replicas start batches for one person at the same moment."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from crewdash.model.batch import Batch, TokenUsage
from crewdash.model.spend import Spend, SpendCap, SpendCapExceeded, day_start
from crewdash.store.history import Store
from crewdash.store.spending import Reservation, Spending
from tests.test_store import postgres_url, store  # noqa: F401 - both databases

pytestmark = pytest.mark.timeout(120)
PRICED = "demo-thorough"  # $3 / $15 per million tokens (prices.yaml)


def new_batch(user: str, model: str = PRICED, topics: int = 1) -> Batch:
    return Batch(
        uuid.uuid4().hex[:12],
        "research",
        [f"t{i}" for i in range(topics)],
        model_label=model,
        max_concurrency=4,
        model=model,
        created_by=user,
    )


def finished(history: Store, batch: Batch, tokens: TokenUsage) -> None:
    history.create_batch(batch.snapshot())
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
        batch.mark_succeeded(run_id, "ok", tokens)
    history.finish_batch(batch.snapshot())


def test_finished_batches_count_what_they_spent_and_running_ones_at_least_their_estimate(
    store: Store,  # noqa: F811
) -> None:
    finished(store, new_batch("ann", topics=2), TokenUsage(100_000, 10_000, 110_000))
    finished(store, new_batch("ann", model="local-llama"), TokenUsage(700, 300, 1_000))
    finished(store, new_batch("bob"), TokenUsage(1_000_000, 0, 1_000_000))
    cap = SpendCap(usd=10.0, tokens=50_000)
    running = new_batch("ann")
    store.create_batch(running.snapshot(), reserve=Reservation("ann", cap, PRICED, 0.5, 20_000))
    ann = store.spend_of("ann", day_start())
    # 2 crews x (0.1M x $3 + 0.01M x $15) = $0.90, and the running batch at its $0.50
    assert ann.usd == pytest.approx(1.40) and ann.unpriced_tokens == 1_000
    assert ann.tokens == 220_000 + 1_000 and ann.batches == 3
    everyone = store.spend_by_user(day_start())
    assert set(everyone) == {"ann", "bob"} and everyone["bob"].usd == pytest.approx(3.0)
    assert store.spend_of("nobody\x00", day_start()) == Spend()  # odd bytes: nothing, no error
    # once it is done, the batch counts what it really spent (here: less than its estimate)
    run_id = running.run_ids[0]
    running.mark_running(run_id)
    running.mark_succeeded(run_id, "ok", TokenUsage(10_000, 0, 10_000))
    store.finish_batch(running.snapshot())
    assert store.spend_of("ann", day_start()).usd == pytest.approx(0.93)


def test_a_batch_past_the_cap_is_refused_and_nothing_of_it_is_stored(
    store: Store,  # noqa: F811
) -> None:
    cap = SpendCap(usd=1.0)
    first = new_batch("ann")
    store.create_batch(first.snapshot(), reserve=Reservation("ann", cap, PRICED, 0.8, 1))
    second = new_batch("ann")
    with pytest.raises(SpendCapExceeded, match=r"\$0\.3000 and you have \$0\.2000 left") as exc:
        store.create_batch(second.snapshot(), reserve=Reservation("ann", cap, PRICED, 0.3, 1))
    assert 0 < exc.value.retry_after_s <= 86_400
    assert store.load(second.batch_id) is None
    # Bob's cap is his own
    bob = new_batch("bob")
    store.create_batch(bob.snapshot(), reserve=Reservation("bob", cap, PRICED, 0.9, 1))


def test_replicas_starting_batches_for_one_person_at_once_admit_only_what_fits(
    store: Store,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three "replicas" (stores of their own on one database), four starts each at one moment:
    at $0.40 a batch under a $1.00 cap, exactly two are admitted. Each check waits 0.1 s
    between writing its batch and reading the spend, so without the lock every start would
    read the others' spend before it is committed, and all would pass."""
    check = Spending.check_reservation

    def slow_check(self: Store, *args: object) -> None:
        time.sleep(0.1)
        check(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Spending, "check_reservation", slow_check)
    replicas = [store] + [Store(store.url) for _ in range(2)]
    cap = SpendCap(usd=1.0)
    go = threading.Barrier(12)

    def start(replica: Store) -> bool:
        batch = new_batch("ann")
        go.wait(timeout=30)
        try:
            replica.create_batch(batch.snapshot(), reserve=Reservation("ann", cap, PRICED, 0.4, 1))
        except SpendCapExceeded:
            return False
        return True

    try:
        with ThreadPoolExecutor(12) as pool:
            admitted = list(pool.map(start, [r for r in replicas for _ in range(4)]))
    finally:
        for replica in replicas[1:]:
            replica.close()
    assert admitted.count(True) == 2
    assert store.spend_of("ann", day_start()).usd == pytest.approx(0.8)


def test_what_a_deleted_batch_spent_still_counts(store: Store) -> None:  # noqa: F811
    batch = new_batch("ann", topics=2)
    finished(store, batch, TokenUsage(100_000, 10_000, 110_000))
    before = store.spend_of("ann", day_start())
    assert store.delete_batch(batch.batch_id) == 2
    assert store.load(batch.batch_id) is None
    assert store.spend_of("ann", day_start()) == before  # $0.90, 220,000 tokens, 1 batch
    assert store.spend_by_user(day_start())["ann"].usd == pytest.approx(0.9)
