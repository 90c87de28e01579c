"""The FastAPI application. Refuses to start against an un-migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.api.routes import batches, health, jobs
from app.db import require_migrated
from app.storage import ObjectNotFound, StorageError


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    require_migrated()
    yield


app = FastAPI(
    title="pagemill",
    summary="Bulk document OCR on a job queue",
    version="0.1.0",
    lifespan=lifespan,
)
app.include_router(jobs.router)
app.include_router(batches.router)
app.include_router(health.router)


@app.exception_handler(StorageError)
async def storage_unavailable(_: Request, exc: StorageError) -> JSONResponse:
    return JSONResponse({"detail": f"storage unavailable: {exc}"}, status_code=503)


@app.exception_handler(ObjectNotFound)
async def object_missing(_: Request, exc: ObjectNotFound) -> JSONResponse:
    return JSONResponse({"detail": f"result object missing: {exc}"}, status_code=404)
