"""How the API answers an error: one JSON `detail` line a person can act on, with the status
that says whose fault it is (422 a bad request, 404 an unknown batch, 429 past a person's daily
cap, 400 what the core refused).
"""

from __future__ import annotations

import math

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from crewdash.base.errors import CrewdashError, TopicError, UnknownBatchError
from crewdash.engine.idempotency import IdempotencyKeyError
from crewdash.model.spend import SpendCapExceeded


def problem(exc: HTTPException) -> JSONResponse:
    """An `HTTPException` as the API's error answer (a `Problem`)."""
    return JSONResponse(status_code=exc.status_code, content={"detail": str(exc.detail)})


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return JSONResponse(status_code=422, content={"detail": "; ".join(parts)})


async def _topics(_: Request, exc: TopicError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": f"topics: {exc}"})


async def _reused(_: Request, exc: IdempotencyKeyError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": f"Idempotency-Key: {exc}"})


async def _unknown(_: Request, exc: UnknownBatchError) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _capped(_: Request, exc: SpendCapExceeded) -> JSONResponse:
    headers = {"Retry-After": str(math.ceil(exc.retry_after_s))}  # the next UTC day
    return JSONResponse(status_code=429, content={"detail": str(exc)}, headers=headers)


async def _bad(_: Request, exc: CrewdashError) -> JSONResponse:
    return JSONResponse(status_code=400, content={"detail": str(exc)})


async def _http(_: Request, exc: HTTPException) -> JSONResponse:
    return problem(exc)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error the routes raise as a `Problem` (the most specific class wins)."""
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(TopicError, _topics)  # type: ignore[arg-type]
    app.add_exception_handler(IdempotencyKeyError, _reused)  # type: ignore[arg-type]
    app.add_exception_handler(UnknownBatchError, _unknown)  # type: ignore[arg-type]
    app.add_exception_handler(SpendCapExceeded, _capped)  # type: ignore[arg-type]
    app.add_exception_handler(CrewdashError, _bad)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
