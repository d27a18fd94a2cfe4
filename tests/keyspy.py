"""A header-logging OpenAI-compatible server for the key tests: a small HTTP server on 127.0.0.1
that records the credentials of every request it gets and answers it by passing the body on to a
demo model (so crews, judges and streams behave as against the demo itself).

A request whose body holds `[spy:end-early]` gets a stream that ends cleanly before its finish
reason and `[DONE]`: what a server that gave up half-way sends, with no transport error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

END_EARLY = "[spy:end-early]"
_CREDENTIALS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


@dataclass(frozen=True)
class Seen:
    path: str
    credentials: dict[str, str]  # header name -> value, for the credential headers present

    @property
    def authorization(self) -> str | None:
        return self.credentials.get("authorization")


class KeySpy:
    """`with KeySpy(upstream) as spy:` serves on `spy.base_url` (`.../v1`); `spy.seen` is every
    request, in arrival order."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # a base URL ending in /v1
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=60)
        spy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _record(self) -> None:
                found = {h: v for h in _CREDENTIALS if (v := self.headers.get(h)) is not None}
                with spy._lock:
                    spy.seen.append(Seen(self.path, found))

            def do_GET(self) -> None:
                self._record()
                self._forward("GET", b"")

            def do_POST(self) -> None:
                self._record()
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                self._forward("POST", body)

            def _forward(self, method: str, body: bytes) -> None:
                path = self.path.removeprefix("/v1")
                answer = spy._http.request(
                    method,
                    spy.upstream + path,
                    content=body,
                    headers={"content-type": self.headers.get("content-type", "application/json")},
                )
                content = answer.content
                kind = answer.headers.get("content-type", "application/json")
                if END_EARLY.encode() in body and "event-stream" in kind:
                    events = content.decode().split("\n\n")
                    cut = next(i for i, e in enumerate(events) if '"finish_reason": "' in e)
                    content = "\n\n".join(events[:cut]).encode() + b"\n\n"
                self.send_response(answer.status_code)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def authorizations(self) -> set[str | None]:
        """The Authorization of every model call; the pre-flight reachability probe (`GET
        /models`, `crewdash/providers/preflight.py`) carries none and is checked for that
        instead."""
        with self._lock:
            probes = [s for s in self.seen if s.path.endswith("/models")]
            assert all(not s.credentials for s in probes), probes  # no key with the probe
            return {s.authorization for s in self.seen if s not in probes}

    def credentials(self) -> set[str]:
        """Every credential value any request carried, whatever its header."""
        with self._lock:
            return {v for s in self.seen for v in s.credentials.values()}

    def __enter__(self) -> KeySpy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()
