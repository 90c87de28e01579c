"""The FastAPI application. Refuses to start against an un-migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import tenant_of
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


@app.middleware("http")
async def authenticate_before_the_body(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """FastAPI reads (and spools) a request's body before any dependency runs, so without
    this an anonymous client could upload as much as it likes before its 401."""
    if request.url.path.startswith("/v1/") and request.method in ("POST", "PUT", "PATCH"):
        authorization = request.headers.get("authorization")
        try:
            request.state.tenant = await run_in_threadpool(tenant_of, authorization)
        except HTTPException as exc:
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
    return await call_next(request)


@app.exception_handler(StorageError)
async def storage_unavailable(_: Request, exc: StorageError) -> JSONResponse:
    return JSONResponse({"detail": f"storage unavailable: {exc}"}, status_code=503)


@app.exception_handler(ObjectNotFound)
async def object_missing(_: Request, exc: ObjectNotFound) -> JSONResponse:
    return JSONResponse({"detail": f"result object missing: {exc}"}, status_code=404)
