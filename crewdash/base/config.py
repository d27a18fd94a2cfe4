"""Defaults in one place; the environment variables themselves are read in `crewdash.base.settings`.

CrewAI's and OpenTelemetry's own variables (telemetry off) are written by the package face,
`crewdash/__init__.py`, before anything can import crewai.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from crewdash.base.settings import default_of, process_settings

# The package itself (what Ray ships to its workers).
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def source_checkout(package_dir: Path) -> Path | None:
    """The checkout the package runs from (`python -m crewdash`, an editable install), or None
    for an installed package (a wheel in site-packages)."""
    root = package_dir.parent
    return root if (root / "pyproject.toml").is_file() and (root / "crews").is_dir() else None


CHECKOUT = source_checkout(PACKAGE_DIR)
# The built-in blueprints and prices: the checkout's `crews/` and `prices.yaml`, or the copies a
# wheel carries in `crewdash/builtin/` (pyproject.toml's force-include).
RESOURCES_DIR = CHECKOUT or PACKAGE_DIR / "builtin"
# Where the product keeps its files (the SQLite history in `data/`): the checkout, or for an
# installed package the current directory at start (`DATABASE_URL` moves the history anywhere).
PROJECT_ROOT = CHECKOUT or Path.cwd()
# The built-in blueprints (`research`, `timing`): always on the search path, so the warm-up and the
# benchmarks never depend on a user's folder.
CREWS_DIR = RESOURCES_DIR / "crews"
PRICES_FILE = RESOURCES_DIR / "prices.yaml"

MAX_TOPICS = 100
MAX_TOPIC_CHARS = 300

# Spreadsheets in (crewdash/sheets/): checked before parsing (size) or while reading, so a bad
# upload costs at most one pass. Rows times columns bound what a Sheet holds in memory.
MAX_SHEET_BYTES = 50 * 1024 * 1024
# An .xlsx is a zip: what its parts unpack to, as its directory declares (zipfile stops a part
# at its declared size), so a small zip bomb is refused before openpyxl reads it.
MAX_SHEET_UNPACKED_BYTES = 500 * 1024 * 1024
MAX_SHEET_ROWS = 10_000
MAX_SHEET_COLUMNS = 256
MAX_CELL_CHARS = 10_000
# Spreadsheets out (crewdash/present/sheet_export.py): at most this many columns for the fields
# of structured outputs and for task outputs each; the whole output is always in its own column.
MAX_SHEET_FIELD_COLUMNS = 50
DEFAULT_MAX_CONCURRENCY: int = default_of("CREWDASH_MAX_CONCURRENCY")
DEFAULT_BLUEPRINT = "research"

DEMO_MODEL_NAME = "crewdash-demo"
# the models the demo server serves (`demo.models` describes each): what preflight accepts
DEMO_MODEL_NAMES = (DEMO_MODEL_NAME, "demo-fast", "demo-thorough")

# Model calls: one call's timeout, and what one crew run may spend on failed calls in total.
# The defaults of those settings are the `Settings` fields' own.
DEFAULT_CALL_TIMEOUT_S: float = default_of("CREWDASH_LLM_TIMEOUT")
DEFAULT_RETRY_TRIES: int = default_of("CREWDASH_RETRY_TRIES")
DEFAULT_RETRY_SECONDS: float = default_of("CREWDASH_RETRY_SECONDS")
DEFAULT_OPENAI_MODEL: str = default_of("CREWDASH_OPENAI_MODEL")


def quiet_crewai_logs() -> None:
    """CrewAI warns on every call to a model it has no tokenizer for (the demo model): noise."""
    logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)


def outputs_dir() -> Path:
    """Where the files that crews' tasks write go (`<this>/<batch_id>/<run_id>/`):
    `CREWDASH_OUTPUTS_DIR`, else `data/outputs` in the project (`process_settings`)."""
    raw = process_settings("CREWDASH_OUTPUTS_DIR").outputs_dir
    return Path(raw).expanduser() if raw else PROJECT_ROOT / "data" / "outputs"


def crews_path() -> list[Path]:
    """Where blueprints are looked up: the built-in `crews/`, then each folder of
    `CREWDASH_CREWS_DIR` (separated by `os.pathsep`), each folder once (`process_settings`)."""
    raw = process_settings("CREWDASH_CREWS_DIR").crews_dir or ""
    path = [CREWS_DIR]
    seen = {CREWS_DIR.resolve()}
    for part in raw.split(os.pathsep):
        if not part.strip():
            continue
        folder = Path(part.strip()).expanduser()
        if folder.resolve() not in seen:
            seen.add(folder.resolve())
            path.append(folder)
    return path
