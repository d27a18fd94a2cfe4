"""Experiments' specs, cell notes and the response cache on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading

from crewdash.experiments.store import CellNotes, ExperimentStore, StoredResponses
from crewdash.model.batch import TokenUsage
from crewdash.providers.response_cache import CachedResponse
from crewdash.store.history import Store
from tests.test_store import postgres_url, sample_batch, store  # noqa: F401 - fixtures


def test_spec_and_cell_notes_round_trip_and_go_with_their_batch(store: Store) -> None:  # noqa: F811
    batch = sample_batch("exp1")
    store.create_batch(batch.snapshot())
    experiments = ExperimentStore(store)
    experiments.save_spec("exp1", 1.5, {"topics": ["alpha"], "variants": [{"name": "ü|v"}]})
    experiments.save_cell("exp1", 0, score=7, reason="clear", judge_error=None)
    experiments.save_cell("exp1", 0, mark="good", note="keeps the score")
    experiments.save_cell("exp1", 1, judge_error="the judge gave no score")
    assert experiments.spec("exp1") == {"topics": ["alpha"], "variants": [{"name": "ü|v"}]}
    assert experiments.cells("exp1") == {
        0: CellNotes(7, "clear", None, "good", "keeps the score"),
        1: CellNotes(judge_error="the judge gave no score"),
    }
    assert [i for i, _, _ in experiments.list_ids()] == ["exp1"]
    store.delete_all()  # the experiment's rows go with its batch
    assert experiments.spec("exp1") is None and experiments.cells("exp1") == {}


def test_cached_answers_are_shared_and_the_first_of_two_racing_writes_stays(
    store: Store,  # noqa: F811
) -> None:
    cache = StoredResponses(store)
    cache.clear()
    answer = CachedResponse(
        b'{"ok": "\xc3\xbc"}', "application/json", "demo-fast", TokenUsage(3, 4, 7)
    )
    assert cache.get("k1") is None
    writers = [threading.Thread(target=cache.put, args=("k1", answer)) for _ in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert cache.get("k1") == answer and cache.count() == 1
    elsewhere = Store(store.url)  # another process's store on the same database
    try:
        assert StoredResponses(elsewhere).get("k1") == answer
    finally:
        elsewhere.close()
    cache.clear()
    assert cache.count() == 0
