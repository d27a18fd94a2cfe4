"""Per-crew settings CrewAI reads while it builds and runs a crew: the run's model for the agents
that do not pin one, and the folder its tasks' files go to.

Many crews run at once in one process, so nothing here changes process-wide state per crew (no
environment variables, no globals): each value is a context variable set in the crew's own asyncio
task. CrewAI copies the context into everything it starts for that crew (Flow steps, the threads
that build inline crews, the threads that call the model), so crews created inside a Flow step see
their run's values too. Two small hooks read them:

- CrewAI resolves an agent declared without `llm` through
  `llm_utils._llm_via_environment_or_fallback` (environment variables, then its default model);
  inside a crewdash run it returns the run's model instead. Agents that pin an `llm` never
  reach it and keep theirs.
- A global before-LLM-call hook (`crewai.hooks`) sees each task before its first model call, after
  CrewAI has filled `{placeholders}` into `output_file`, and moves that file into the crew's own
  folder. The file is written when the task ends, so it always lands there.
"""

from __future__ import annotations

import contextvars
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crewai.llms.base_llm import BaseLLM

LLMFactory = Callable[[], BaseLLM]

run_llm: contextvars.ContextVar[LLMFactory | None] = contextvars.ContextVar(
    "crewdash_run_llm", default=None
)
output_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "crewdash_output_dir", default=None
)

# Set for a crew that runs again without streaming after its stream broke: `build_llm` reads it.
stream_off: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "crewdash_stream_off", default=False
)

_installed = False
_install_lock = threading.Lock()
_UNSAFE = re.compile(r"[^\w.\- ]+")


def install() -> None:
    """Install both hooks once per process (idempotent; every crew-running process calls it)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from crewai.hooks import register_before_llm_call_hook
        from crewai.utilities import llm_utils

        fallback = llm_utils._llm_via_environment_or_fallback

        def run_default_llm() -> Any:
            factory = run_llm.get()
            return factory() if factory is not None else fallback()

        llm_utils._llm_via_environment_or_fallback = run_default_llm
        register_before_llm_call_hook(_redirect_task_file)
        _installed = True


def _redirect_task_file(context: Any) -> None:
    """Before a task's model call: its `output_file` goes into this crew's folder."""
    folder = output_dir.get()
    task = getattr(context, "task", None)
    if folder is not None and task is not None and getattr(task, "output_file", None):
        task.output_file = str(contained(folder, task.output_file))
    return None  # never blocks the call


def contained(folder: Path, name: str) -> Path:
    """`name` (a task's output file, maybe filled from a topic) as a path inside `folder`.

    A path that would leave the folder (`../x`, an absolute path, a topic with `/..`) keeps only
    its last part, cleaned: a crew never writes outside its own folder.
    """
    root = folder.resolve()
    path = Path(name)
    if path.is_absolute() and path.resolve().is_relative_to(root):
        return path.resolve()  # already redirected (a crew kicked off twice)
    relative = Path(*[p for p in path.parts if p not in ("/", "\\")] or ["output"])
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or target == root:
        cleaned = _UNSAFE.sub("_", path.name).strip(" .") or "output"
        target = root / cleaned
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def list_files(folder: Path | None) -> tuple[str, ...]:
    """The files under a crew's folder that can be downloaded (`crew_file`), as sorted paths
    relative to it: a symlink out of the folder, a dangling one or a socket is left out."""
    if folder is None or not folder.is_dir():
        return ()
    found = []
    for base, _, names in os.walk(folder):
        for name in names:
            relative = (Path(base) / name).relative_to(folder).as_posix()
            try:
                crew_file(folder, relative)
            except (FileNotFoundError, OSError):
                continue
            found.append(relative)
    return tuple(sorted(found))


def crew_file(folder: Path, relative: str) -> Path:
    """A file listed for a crew, refusing any path outside its folder (for downloads)."""
    root = folder.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise FileNotFoundError(relative)
    return target
