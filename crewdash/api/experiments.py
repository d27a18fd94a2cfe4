"""The REST routes of experiments (`/experiments`), mounted by `crewdash.api.app` on its runtime."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Literal

from fastapi import APIRouter, Request, Response

from crewdash.api.context import runtime_of
from crewdash.api.people import audit, person_of
from crewdash.base.errors import UnknownBatchError
from crewdash.experiments.spec import Variant, build_spec
from crewdash.model.batch import check_batch_id
from crewdash.present.experiment_exports import export_grid
from crewdash.schemas.common import PROBLEMS, STARTS, IdempotencyKey, fingerprint
from crewdash.schemas.experiments import (
    CellMark,
    ExperimentAccepted,
    ExperimentCell,
    ExperimentDetail,
    ExperimentListItem,
    ExperimentRequest,
    RerunRequest,
)

router = APIRouter(tags=["experiments"], responses=PROBLEMS)
EXPORTS = {"csv": ("text/csv", "csv"), "md": ("text/markdown", "md")}


def _accepted(experiment_id: str, cells: int, notes: list[str]) -> ExperimentAccepted:
    base = f"/experiments/{experiment_id}"
    return ExperimentAccepted(
        experiment_id=experiment_id,
        cells=cells,
        notes=notes,
        links={
            "self": base,
            "batch": f"/batches/{experiment_id}",
            "export": f"{base}/export?format=csv",
        },
    )


@router.post("/experiments", status_code=202, response_model=ExperimentAccepted, responses=STARTS)
async def create_experiment(
    request: Request, body: ExperimentRequest, idempotency_key: IdempotencyKey = None
) -> ExperimentAccepted:
    """Start an experiment (every topic through every variant, all at once); its id at once.
    Everything is checked first: a bad variant starts nothing (400 naming it). A repeat with
    the same `Idempotency-Key` starts nothing and answers the experiment the key started."""
    runtime = runtime_of(request)
    variants = [Variant.from_dict(v.model_dump()) for v in body.variants]
    spec, notes = build_spec(
        body.topics,
        variants,
        rubric=body.rubric,
        cache=body.cache,
        max_concurrency=body.max_concurrency,
        crew_timeout_s=body.crew_timeout_s,
    )
    llm = runtime.default_settings.llm
    experiment_id = await asyncio.to_thread(
        partial(
            runtime.experiments.start,
            spec,
            llm,
            source="api",
            idempotency_key=idempotency_key,
            fingerprint=fingerprint(body),
            by=person_of(request),
        )
    )
    await audit(request, "run experiment", f"experiment {experiment_id}")
    return _accepted(experiment_id, len(spec.topics) * len(spec.variants), list(notes))


@router.get("/experiments", response_model=list[ExperimentListItem])
async def list_experiments(request: Request) -> list[ExperimentListItem]:
    """Every stored experiment, newest first."""
    rows = await asyncio.to_thread(runtime_of(request).experiments.list)
    return [
        ExperimentListItem(
            experiment_id=i,
            created_at=at,
            topics=len(spec.topics),
            variants=[v.name for v in spec.variants],
            rubric=spec.rubric,
            cache=spec.cache,
            rerun_of=spec.rerun_of,
        )
        for i, at, spec in rows
    ]


@router.get("/experiments/{experiment_id}", response_model=ExperimentDetail)
async def get_experiment(request: Request, experiment_id: str) -> ExperimentDetail:
    """The grid: every cell (state, latency, tokens, cost, score, answer) and each variant's
    summary; live while it runs."""
    check_batch_id(experiment_id)
    grid = await asyncio.to_thread(runtime_of(request).experiments.grid, experiment_id)
    return ExperimentDetail.from_grid(grid)


@router.get("/experiments/{experiment_id}/export", response_class=Response)
async def export_experiment(
    request: Request, experiment_id: str, format: Literal["csv", "md"] = "csv"
) -> Response:
    """The grid as CSV (a row per cell, then a row per variant) or a Markdown report."""
    check_batch_id(experiment_id)
    grid = await asyncio.to_thread(runtime_of(request).experiments.grid, experiment_id)
    mime, ext = EXPORTS[format]
    return Response(
        export_grid(grid, format),
        media_type=f"{mime}; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="experiment-{experiment_id}.{ext}"'},
    )


@router.post("/experiments/{experiment_id}/cells/{index}/mark", response_model=ExperimentCell)
async def mark_cell(
    request: Request, experiment_id: str, index: int, body: CellMark
) -> ExperimentCell:
    """Mark one cell good or bad and leave a note (stored)."""
    check_batch_id(experiment_id)
    experiments = runtime_of(request).experiments
    await asyncio.to_thread(experiments.mark, experiment_id, index, body.mark, body.note)
    await audit(request, "mark", f"experiment {experiment_id} cell {index}", detail=body.mark or "")
    grid = await asyncio.to_thread(experiments.grid, experiment_id)
    if not 0 <= index < len(grid.cells):
        raise UnknownBatchError(f"{experiment_id}/{index}")
    return ExperimentCell.from_cell(grid.cells[index])


@router.post(
    "/experiments/{experiment_id}/rerun",
    status_code=202,
    response_model=ExperimentAccepted,
    responses=STARTS,
)
async def rerun_experiment(
    request: Request, experiment_id: str, body: RerunRequest
) -> ExperimentAccepted:
    """Run an experiment again, or one variant of it (by default with the response cache on,
    so only changed calls reach the model)."""
    check_batch_id(experiment_id)
    runtime = runtime_of(request)
    new_id = await asyncio.to_thread(
        runtime.experiments.rerun,
        experiment_id,
        runtime.default_settings.llm,
        body.variant,
        body.cache,
        person_of(request),
    )
    await audit(request, "rerun", f"experiment {experiment_id}", detail=f"as {new_id}")
    spec = runtime.experiments.spec(new_id)
    return _accepted(new_id, len(spec.topics) * len(spec.variants), [])
