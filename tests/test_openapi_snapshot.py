"""The API's OpenAPI document is the one stored in `tests/openapi.json`: a refactoring (moving a
route, splitting a module of models) cannot change the contract that clients are generated from.

Update the stored copy only for a deliberate API change, and review its diff like code:

    CREWDASH_UPDATE_OPENAPI=1 .venv/bin/python -m pytest tests/test_openapi_snapshot.py
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from crewdash.api.app import create_app

STORED = Path(__file__).with_name("openapi.json")
UPDATE = "CREWDASH_UPDATE_OPENAPI"


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _no_runtime() -> Any:  # the schema is built without starting the app
    raise AssertionError("the OpenAPI document needs no runtime")


def test_the_openapi_document_is_the_stored_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREWDASH_CREWS_DIR", raising=False)  # the built-in blueprints only
    current = _text(create_app(_no_runtime).openapi())
    if os.environ.get(UPDATE) == "1":
        STORED.write_text(current, encoding="utf-8")
    stored = STORED.read_text(encoding="utf-8") if STORED.exists() else ""
    if current != stored:
        diff = "".join(
            difflib.unified_diff(
                stored.splitlines(keepends=True),
                current.splitlines(keepends=True),
                "tests/openapi.json (stored)",
                "create_app().openapi() (now)",
                n=2,
            )
        )
        pytest.fail(
            "The API's OpenAPI document changed. If this is a deliberate API change, update the "
            f"stored copy with `{UPDATE}=1 .venv/bin/python -m pytest "
            "tests/test_openapi_snapshot.py` and commit it; otherwise a refactoring changed "
            f"the contract (a route, a model, a schema component's name):\n{diff[:20000]}",
            pytrace=False,
        )
