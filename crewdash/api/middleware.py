"""What every request passes before a route: the body size limit (413), the methods a path
allows (`OPTIONS`, and the `Allow` header of a 405), and who calls (`crewdash.api.people`).

What sign-in needs is read once, when the app is built, and handed to the check: no request
reads the environment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from starlette.routing import Match

from crewdash.api.errors import problem
from crewdash.api.people import Access
from crewdash.base.config import MAX_SHEET_BYTES

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: 100 topics of 300 characters fit many times over
# Where a sheet comes in, more: its rows as JSON, or the file itself (the reader's limit, plus
# the form around it).
BODY_LIMITS = {
    "/batches": 32 * 1024 * 1024,
    "/batches/sheet": MAX_SHEET_BYTES + 1024 * 1024,
}

# The methods a route can have (`Allow` names those of the path's routes).
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")

CallNext = Callable[[Request], Awaitable[Response]]


class BodyTooLargeError(HTTPException):
    """A request body over the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"the request body is larger than the limit of {limit} bytes; "
            "send fewer or shorter topics or rows",
        )


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` (a sheet's routes: `BODY_LIMITS`) with
    413 without reading them whole.

    A declared Content-Length over the limit is refused before the app runs; a body without one
    (chunked) is counted as it streams in, and reading stops at the first chunk over the limit.
    It must sit inside any `BaseHTTPMiddleware`: those read the body in a task group, which
    would wrap the 413 in an exception group that FastAPI turns into a 400.
    """

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = BODY_LIMITS.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await problem(BodyTooLargeError(limit))(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if started:  # e.g. an event stream listening for the client to leave
                        return {"type": "http.disconnect"}
                    raise BodyTooLargeError(limit)  # FastAPI answers it as a Problem
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLargeError as exc:  # raised where nothing turned it into a response
            if started:
                raise
            await problem(exc)(scope, receive, send)


def _methods_of(app: FastAPI, scope: Any) -> str:
    """The `Allow` header for the request's path: the methods of every route on it.

    Each method is tried on each route: FastAPI keeps an included router as one route of the
    app (not its routes), and answers for every route of that router on the path."""
    methods = {
        method
        for route in app.router.routes
        for method in HTTP_METHODS
        if route.matches({**scope, "method": method})[0] == Match.FULL
    }
    if not methods:
        return ""
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted({*methods, "OPTIONS"}))


async def allowed_methods(request: Request, call_next: CallNext) -> Response:
    """`OPTIONS` answers, and a 405 says, every method of the path: Starlette looks at one
    route only, so `OPTIONS /batches` said POST although GET is there too."""
    allowed = _methods_of(request.app, request.scope)
    if request.method == "OPTIONS" and allowed:
        return Response(status_code=204, headers={"allow": allowed})
    response = await call_next(request)
    if response.status_code == 405 and allowed:
        response.headers["allow"] = allowed
    return response


def add_middleware(app: FastAPI, access: Access) -> None:
    """Every request's checks, outermost last: who calls (`crewdash.api.people`), then the
    methods, then the body limit (inside the `BaseHTTPMiddleware`s above it: see `BodyLimit`)."""
    app.add_middleware(BodyLimit)
    app.middleware("http")(allowed_methods)
    app.middleware("http")(access.middleware())
