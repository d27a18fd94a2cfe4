"""What the AppTest modules share: the app's entry script, a fresh runtime on a quick demo model
for each test, and an app started once with no exception."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from streamlit.testing.v1 import AppTest

from ui.session import runtime

APP = str(Path(__file__).resolve().parent.parent / "app.py")
# Calling the cached runtime from the test thread is "bare mode" for Streamlit; that is expected.
logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)


def quick_demo(latency_s: str) -> Iterator[None]:
    """Body of an autouse fixture: a new runtime whose demo model answers in `latency_s`,
    closed after the test, and the variable put back."""
    old = os.environ.get("CREWDASH_DEMO_LATENCY")
    os.environ["CREWDASH_DEMO_LATENCY"] = latency_s
    runtime.clear()
    yield
    runtime().close()
    runtime.clear()
    if old is None:
        os.environ.pop("CREWDASH_DEMO_LATENCY", None)
    else:
        os.environ["CREWDASH_DEMO_LATENCY"] = old


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception
    return at


def click(at: AppTest, label: str) -> AppTest:
    """Click the one button labelled `label` and run the script: by label, not by position, since a
    page adds buttons of its own (Resume all interrupted, when the history holds an interrupted
    batch) above the form's."""
    (button,) = [b for b in at.button if b.label == label]
    button.click().run()
    return at
