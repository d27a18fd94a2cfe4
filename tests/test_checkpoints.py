"""Checkpoints (`crewdash/engine/checkpoints.py`) against what a busy process does around them."""

from __future__ import annotations

import gc
import threading
from types import SimpleNamespace
from typing import Any

from crewai.events.base_events import BaseEvent
from crewai.state.event_record import EventRecord

from crewdash.engine import checkpoints


class _Probe(BaseEvent):
    type: str = "crewdash_probe"


class _Abandoned:
    """Cyclic garbage whose finaliser emits an event, as a cancelled crew's coroutine does
    when a collection closes it."""

    def __init__(self, record: EventRecord, finalised: threading.Event) -> None:
        self.me = self
        self.record = record
        self.finalised = finalised

    def __del__(self) -> None:
        self.record.add(_Probe())
        self.finalised.set()


def test_a_collection_during_a_checkpoint_does_not_deadlock_the_event_record() -> None:
    """A checkpoint holds the event record's read lock while it serialises; a collection on that
    thread used to run the finaliser there, which waited for the write lock for ever (and every
    crew of the process behind it). Now the collection waits until the read lock is let go."""
    record = EventRecord()
    finalised = threading.Event()

    def dump() -> str:
        _Abandoned(record, finalised)  # garbage now, collected only by the cyclic collector
        junk: list[Any] = [[i] for i in range(200_000)]  # enough allocation for a collection
        del junk
        return "{}"

    state = SimpleNamespace(event_record=record, root=[], model_dump_json=dump)
    assert gc.isenabled()
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (checkpoints._serialise(state), done.set()),  # type: ignore[arg-type]
        daemon=True,
    )
    thread.start()
    assert done.wait(30), "the checkpoint deadlocked on the event record's lock"
    assert gc.isenabled()  # collections are back once no checkpoint is being taken
    gc.collect()
    assert finalised.wait(10) and len(record.nodes) == 1  # the event was recorded, after
