"""An opt-in response cache for model calls: an httpx transport in front of the retrying one.

Identical requests (provider, the full endpoint URL with its port, a digest of the key, and the
whole JSON body: model, messages, parameters) get the stored answer back without reaching the
model, across crews, batches and processes (the answers live in the history database). Only a
complete, well-formed answer is stored: a JSON body with a finish reason, or a stream whose every
event parses and that ends with a finish reason and `[DONE]`. A crew opts in through `cache_scope`,
a context variable set in its own asyncio task (CrewAI copies it into the threads that call the
model), so one shared HTTP client serves crews with and without the cache. Streamed requests are
cached as their whole SSE body and replayed as one: a valid stream, delivered at once.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import httpx

from crewdash.model.batch import Batch, TokenUsage

log = logging.getLogger(__name__)

CACHE_HEADER = "x-crewdash-cache"
_DROPPED_HEADERS = {"content-encoding", "content-length", "transfer-encoding", "connection"}


@dataclass(frozen=True)
class CachedResponse:
    """One stored answer: the body as the model sent it, and what it cost in tokens."""

    body: bytes
    content_type: str
    model: str
    tokens: TokenUsage


class ResponseStore(Protocol):
    """Where cached answers live (`crewdash.experiments.store.StoredResponses` in the database)."""

    def get(self, key: str) -> CachedResponse | None: ...

    def put(self, key: str, response: CachedResponse) -> None: ...


@dataclass(frozen=True)
class CacheScope:
    """A crew's opt-in: `on_hit` is told of every call the cache answered."""

    on_hit: Callable[[CachedResponse], None] | None = None


cache_scope: contextvars.ContextVar[CacheScope | None] = contextvars.ContextVar(
    "crewdash_cache_scope", default=None
)
_store: ResponseStore | None = None


def install_store(store: ResponseStore | None) -> None:
    """The process's cache store (the runtime installs the history database's); None: off."""
    global _store
    _store = store


def installed_store() -> ResponseStore | None:
    return _store


def endpoint(url: httpx.URL) -> str:
    """The endpoint as the cache sees it: scheme, host, port (also on this machine: two local
    servers are two models) and path."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    return f"{url.scheme}://{url.host}:{port}{url.path}"


def key_digest(request: httpx.Request) -> str:
    """A digest of the credentials the request carries: answers are not shared across keys."""
    credentials = "\n".join(
        request.headers.get(name, "") for name in ("authorization", "api-key", "x-api-key")
    )
    return hashlib.sha256(credentials.encode()).hexdigest()[:32]


def complete_answer(body: bytes, content_type: str) -> bool:
    """Whether `body` is a whole, well-formed answer: JSON with choices that all have a finish
    reason; or a stream whose every `data:` event is JSON, with a finish reason and `[DONE]`."""
    text = body.decode("utf-8", "replace")
    if "event-stream" not in content_type:
        try:
            data = json.loads(text)
        except ValueError:
            return False
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            return False
        return all(isinstance(c, dict) and c.get("finish_reason") for c in choices)
    finished = done = False
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, `event:` lines
        payload = line.removeprefix("data:").strip()
        if done:
            return False  # nothing may follow [DONE]
        if payload == "[DONE]":
            done = True
            continue
        try:
            event = json.loads(payload)
        except ValueError:
            return False
        if not isinstance(event, dict) or "error" in event:
            return False
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            return False
        finished |= any(isinstance(c, dict) and c.get("finish_reason") for c in choices)
    return finished and done


def request_key(url: str, body: bytes, provider: str = "", key: str = "") -> str:
    """A hash of the provider, the endpoint, the key's digest and the JSON body with its keys
    sorted (so key order, spacing and the client's other header differences never split one
    request into two entries)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return hashlib.sha256(f"{provider}\n{url}\n{key}\n{canonical}".encode()).hexdigest()


def usage_of(body: bytes, content_type: str) -> tuple[str, TokenUsage]:
    """(model, token usage) of an answer, JSON or SSE; zeros when it carries none."""
    texts = [body.decode("utf-8", "replace")]
    if "event-stream" in content_type:
        texts = [
            line.removeprefix("data:").strip()
            for line in texts[0].splitlines()
            if line.startswith("data:") and "[DONE]" not in line
        ]
    model, usage = "", TokenUsage()
    for text in texts:
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict):
            model = str(data.get("model") or model)
            if data.get("usage"):
                usage = TokenUsage.from_mapping(data["usage"])
    return model, usage


class CachingTransport(httpx.BaseTransport):
    """Answers a cached request from the store; passes anything else to `inner` and stores
    its successful answer. A failing store is logged and bypassed: the call goes to the model."""

    def __init__(self, inner: httpx.BaseTransport, provider: str = "openai") -> None:
        self.inner = inner
        self.provider = provider

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        scope, store = cache_scope.get(), _store
        if scope is None or store is None or request.method != "POST":
            return self.inner.handle_request(request)
        key = request_key(endpoint(request.url), request.read(), self.provider, key_digest(request))
        try:
            hit = store.get(key)
        except Exception as exc:  # noqa: BLE001 - the cache is an optimisation only
            log.warning("response cache unreadable, calling the model: %s", exc)
            hit = None
        if hit is not None and not complete_answer(hit.body, hit.content_type):
            hit = None  # a broken answer stored by an older version is never replayed
        if hit is not None:
            if scope.on_hit is not None:
                scope.on_hit(hit)
            return httpx.Response(
                200,
                headers={"content-type": hit.content_type, CACHE_HEADER: "hit"},
                content=hit.body,
                request=request,
            )
        response = self.inner.handle_request(request)
        if response.status_code != 200:
            return response
        body = response.read()
        response.close()  # the connection goes back to the pool; the copy below is in memory
        content_type = response.headers.get("content-type", "application/json")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _DROPPED_HEADERS}
        copy = httpx.Response(200, headers=headers, content=body, request=request)
        if not complete_answer(body, content_type):  # a cut or malformed answer: never stored
            return copy
        model, tokens = usage_of(body, content_type)
        try:
            store.put(key, CachedResponse(body, content_type, model, tokens))
        except Exception as exc:  # noqa: BLE001 - e.g. a concurrent identical request won
            log.info("response not cached: %s", exc)
        return copy

    def close(self) -> None:
        self.inner.close()


def record_cache_hit(batch: Batch, run_id: str, hit: CachedResponse) -> None:
    """A call the cache answered: a thin `cache` span in the crew's timeline, carrying the
    tokens it would have cost (kept out of the crew's token sum: nobody paid for them)."""
    now = time.time()
    batch.record_span(
        run_id,
        f"cache-{uuid.uuid4().hex[:8]}",
        lambda s: replace(
            s,
            kind="cache",
            name=hit.model or "model",
            started_at=now,
            finished_at=now + 0.01,
            tokens=hit.tokens,
        ),
    )
