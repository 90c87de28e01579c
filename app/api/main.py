"""The FastAPI application. Refuses to start against an un-migrated database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError as DatabaseInterfaceError
from sqlalchemy.exc import OperationalError as DatabaseOperationalError
from sqlalchemy.exc import TimeoutError as DatabasePoolTimeout

from app.api import RETRY_AFTER_SECONDS
from app.api.deps import tenant_of
from app.api.routes import batches, health, jobs, me, metrics, web
from app.db import require_migrated
from app.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    StorageError,
    TransientError,
    translate,
)
from app.storage import ObjectNotFound

log = logging.getLogger("pagemill.api")


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
app.include_router(metrics.router)
app.include_router(me.router)
app.include_router(web.router)


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


# Raw library errors are listed too: an outage that reaches a route without going through
# `translate` must still be a 503, not a 500.
UNAVAILABLE = (
    TransientError,
    DatabaseOperationalError,
    DatabaseInterfaceError,
    DatabasePoolTimeout,
    BrokerOperationalError,
    RedisConnectionError,
    RedisTimeoutError,
)


def _service(exc: BaseException) -> str:
    found = translate(exc)
    if isinstance(exc, DatabasePoolTimeout) or isinstance(found, DatabaseUnavailable):
        return "database"
    if isinstance(found, BrokerUnavailable):
        return "broker"
    if isinstance(found, StorageError):
        return "storage"
    return "a service"


async def unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After. The client learns which service is down, never where it is:
    hosts, ports, buckets, keys and URLs go to the server log only."""
    service = _service(exc)
    log.warning("%s %s: %s unavailable: %s", request.method, request.url.path, service, exc)
    return JSONResponse(
        {"detail": f"{service} unavailable, retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


for _error in UNAVAILABLE:
    app.add_exception_handler(_error, unavailable)


@app.exception_handler(ObjectNotFound)
async def object_missing(request: Request, exc: ObjectNotFound) -> JSONResponse:
    log.warning("%s %s: object missing in storage: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "not found in storage"}, status_code=404)
