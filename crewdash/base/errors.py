"""Exceptions of crewdash, one module so the hierarchy is visible at a glance.

CrewdashError
├── TopicError        bad topic input; the message is for the user
├── BlueprintError    a crew blueprint is missing, malformed or lacks an input
├── SettingsError     a provider/model/limit setting is unusable
├── RetryBudgetSpent  a crew's model calls failed until its retry budget ran out
├── UnknownBatchError a batch id the runner does not know
├── BatchElsewhereError a batch another live server runs; only that one can stop it
├── BatchRunningError a batch that has not ended cannot be deleted: cancel it first
├── StoreError        the database cannot be reached or used (names DATABASE_URL)
├── ShuttingDownError the runner no longer admits batches
├── JobBusyError      another measurement (benchmark, pitfall demo) is running
├── ExportFormatError an export format crewdash does not produce
└── SheetError        a spreadsheet crewdash cannot read or map; names the limit or the problem
"""

from __future__ import annotations

from collections.abc import Sequence


class CrewdashError(Exception):
    """Base class; every message is written to be shown to a user as it is."""


class TopicError(CrewdashError, ValueError):
    """The topics given cannot start a batch."""


class BlueprintError(CrewdashError):
    """A crew blueprint cannot be loaded or filled in."""


class SettingsError(CrewdashError, ValueError):
    """A run setting is invalid."""


class RetryBudgetSpent(CrewdashError):
    """A crew used up its retry budget; its further model calls fail at once with this."""


class UnknownBatchError(CrewdashError, KeyError):
    """No batch with that id."""

    def __str__(self) -> str:
        return f"no batch with id {self.args[0]!r}" if self.args else "unknown batch"


class BatchElsewhereError(CrewdashError):
    """The batch belongs to another server process that is still alive."""


class BatchRunningError(CrewdashError):
    """The batch has crews still queued or running (or a judge at work): it cannot be deleted."""

    def __init__(
        self, batch_id: str, why: str = "still has crews queued or running: cancel it first"
    ) -> None:
        super().__init__(f"batch {batch_id} {why}")
        self.batch_id = batch_id


class ExportFormatError(CrewdashError, ValueError):
    """An export format crewdash does not produce."""


class SheetError(CrewdashError, ValueError):
    """An uploaded spreadsheet cannot be read, or its rows cannot be mapped to a blueprint's
    inputs; the one-line message names the file, the limit or the cell."""


class JobBusyError(CrewdashError):
    """Another measurement is running in this process."""


class ShuttingDownError(CrewdashError):
    """The runner no longer admits batches."""


class StoreError(CrewdashError):
    """The database cannot be reached or used; the message names the setting."""


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """`text` with every secret (an API key a provider echoed back) blanked out."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def describe_error(exc: BaseException, secrets: Sequence[str | None] = ()) -> str:
    """One line for the user: the exception type and its first line, without a traceback, and
    with any secret blanked out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    message = redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, secrets)
    return message if len(message) <= 400 else message[:399] + "…"
