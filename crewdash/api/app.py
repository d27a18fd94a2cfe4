"""The REST API on the same runner and store: `uvicorn crewdash.api:app` (127.0.0.1 by default).

`create_app` builds it: the settings the requests need are read here, once (the API token, for
the check in `middleware`); the runtime is built at start-up and closed at shutdown; then the
middleware, the error answers and one router per resource: `/research` (answers when every crew
is done), `/batches` (202 with an id at once, then state, events and exports), `/blueprints`,
`/healthz`, `/experiments`, and the people's routes: `/me`, `/tokens`, `/audit`.

Every input is checked before it reaches the runner or the database: request bodies over
`middleware.MAX_BODY_BYTES` are refused with 413 before they are read whole, ids must have the
shape the runner gives them, and topics go through `parse_topics` like everywhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from crewdash.api.batches import router as batch_routes
from crewdash.api.blueprints import router as blueprint_routes
from crewdash.api.errors import add_error_handlers
from crewdash.api.events import router as event_routes
from crewdash.api.events import with_event_schemas
from crewdash.api.experiments import router as experiment_routes
from crewdash.api.health import router as health_routes
from crewdash.api.middleware import add_middleware
from crewdash.api.people import Access
from crewdash.api.people import router as people_routes
from crewdash.api.research import router as research_routes
from crewdash.base.errors import CrewdashError
from crewdash.base.settings import load_settings
from crewdash.runtime import Runtime


class StartupError(RuntimeError):
    """The API cannot start; the message says why and which setting to fix."""


def create_app(runtime_factory: Callable[[], Runtime] = Runtime.from_env) -> FastAPI:
    """The API on the runtime `runtime_factory` builds when the app starts."""
    access = Access.from_settings(
        load_settings(
            only={"CREWDASH_API_TOKEN", "CREWDASH_PASSWORD", "CREWDASH_ADMINS", "CREWDASH_MEMBERS"}
        )
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            app.state.runtime = await asyncio.to_thread(runtime_factory)
        except CrewdashError as exc:  # e.g. DATABASE_URL unreachable
            raise StartupError(f"crewdash cannot start: {exc}") from None
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.runtime.close)

    app = FastAPI(
        title="crewdash API",
        version="1.0",
        description="Run CrewAI crews concurrently; the same runner and history as the dashboard.",
        lifespan=lifespan,
    )
    add_middleware(app, access)
    add_error_handlers(app)
    # the order of the OpenAPI document's paths (a path's methods stay in their router's order)
    for routes in (
        research_routes,
        batch_routes,
        event_routes,
        blueprint_routes,
        health_routes,
        experiment_routes,
        people_routes,
    ):
        app.include_router(routes)
    with_event_schemas(app)
    return app


class CleanStartupErrors:
    """ASGI wrapper: a failed start is logged as its message alone, not a stack trace."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_short(message: Any) -> None:
            if message.get("type") == "lifespan.startup.failed" and message.get("message"):
                lines = [line for line in message["message"].splitlines() if line.strip()]
                message = {**message, "message": lines[-1].split(": ", 1)[-1] if lines else ""}
            await send(message)

        await self.app(scope, receive, send_short)


fastapi_app = create_app()
app = CleanStartupErrors(fastapi_app)
