"""/healthz: is this API process able to serve (database, broker, storage reachable)?

Open without an API key, so it says only "ok" or "error" per dependency; the reason goes to
this process's log, not to whoever asks."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from sqlalchemy import text

from app.api import RETRY_AFTER_SECONDS
from app.api.deps import SessionDep
from app.queue import get_celery
from app.schemas import Health
from app.storage import get_storage

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


def _failed(service: str, exc: Exception) -> str:
    # The kind of error only: the message names hosts, ports and buckets (server log).
    log.warning("healthz: %s: %s", service, exc)
    return f"error: {type(exc).__name__}"


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(session: SessionDep, response: Response) -> Health:
    """Open without an API key: "ok" or "error" per dependency, never why (that is logged)."""
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = _failed("database", exc)
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = _failed("broker", exc)
    try:
        get_storage().exists("healthz")  # inside the try: building the client can fail
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = _failed("storage", exc)
    healthy = all(value == "ok" for value in checks.values())
    if not healthy:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return Health(status="ok" if healthy else "degraded", **checks)
