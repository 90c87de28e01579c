"""/v1/batches: many jobs polled as one, and bulk ingestion from a source."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from app import control, jobs
from app.api.deps import LinkBaseDep, SessionDep, SettingsDep, TenantDep, current_tenant
from app.api.streams import LastEventId, event_response, event_responses
from app.errors import SourceError
from app.events import batch_snapshot
from app.ingest import start_ingest
from app.queue import INGEST, send
from app.schemas import ID_PATTERN, UNAUTHORIZED, BatchIn, BatchOut, BatchSnapshot, ErrorOut
from app.settings import get_settings
from app.status import batch_out, load_batch
from app.submit import check_broker
from app.webhooks import deliveries_of

# Every route here authenticates first (before storage or anything else is touched), even
# one that forgets TenantDep; FastAPI then reuses the same tenant for the route's TenantDep.
router = APIRouter(
    prefix="/v1/batches",
    tags=["batches"],
    dependencies=[Depends(current_tenant)],
    responses=UNAUTHORIZED,
)
BatchId = Annotated[str, Path(pattern=ID_PATTERN, description="32 hex characters")]


@router.post(
    "",
    status_code=202,
    response_model=BatchOut,
    response_model_by_alias=True,
    responses={
        400: {"model": ErrorOut, "description": "a body that cannot be read as JSON"},
        503: {"model": ErrorOut, "description": "database, broker or storage unavailable"},
    },
)
def create_batch(
    body: BatchIn, session: SessionDep, tenant: TenantDep, link: LinkBaseDep
) -> BatchOut:
    """Ingests a source in the background into a new batch of the caller's tenant: an
    s3:// prefix (`source`), a JSONL manifest's s3:// key (`manifest`, a line per document:
    `{"source": "s3://BUCKET/KEY", "options": {...}, "filename": "..."}`), or `entries`
    inline. Only buckets open to the tenant (PAGEMILL_INGEST_BUCKETS) are read; any other
    source is a 422. Answers at once; poll the batch (`ingest` shows the counts). Documents
    already queued, running or succeeded with the same options are skipped."""
    if body.options is not None and body.options.password is not None:
        from app.passwords import SecretKeyMissing, require_key

        try:
            require_key(get_settings())
        except SecretKeyMissing as exc:
            raise _invalid(("body", "options", "password"), str(exc)) from None
    check_broker()
    try:
        batch_id = start_ingest(
            tenant=tenant,
            prefix=body.source,
            manifest=body.manifest,
            entries=None
            if body.entries is None
            else [e.model_dump(exclude_none=True) for e in body.entries],
            name=body.name,
            options=body.options,
            from_api=True,
        )
    except SourceError as exc:
        field = "source" if body.source else "manifest" if body.manifest else "entries"
        raise _invalid(("body", field), str(exc)) from None
    try:
        send(INGEST, batch_id)
    except Exception:
        jobs.end_ingest(batch_id, "the ingestion could not be started: broker unavailable")
        raise
    return _batch_now(session, batch_id, tenant, link)


def _invalid(loc: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in FastAPI's own shape (the schema's), on the field at fault."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message}])


@router.get(
    "/{batch_id}",
    response_model=BatchOut,
    response_model_by_alias=True,
    responses={
        404: {"model": ErrorOut, "description": "no such batch"},
        503: {"model": ErrorOut, "description": "database unavailable"},
    },
    operation_id="get_batch",
)
def get_batch(
    batch_id: BatchId,
    session: SessionDep,
    tenant: TenantDep,
    link: LinkBaseDep,
) -> BatchOut:
    batch = load_batch(session, batch_id, tenant)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id}")
    return batch_out(batch, link_base=link, webhooks=deliveries_of(session, batch_id=batch_id))


@router.get(
    "/{batch_id}/events",
    response_class=StreamingResponse,
    responses=event_responses("batch", BatchSnapshot),
    operation_id="batch_events",
)
def batch_events(
    batch_id: BatchId,
    tenant: TenantDep,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> Response:
    """The batch's jobs by state and its page counts as they change (server-sent events)."""
    return event_response(
        lambda: batch_snapshot(batch_id, tenant), "batch", batch_id, last_event_id, settings
    )


@router.delete(
    "/{batch_id}",
    response_model=BatchOut,
    response_model_by_alias=True,
    responses={
        404: {"model": ErrorOut, "description": "no such batch"},
        409: {"model": ErrorOut, "description": "every job had ended"},
        503: {"model": ErrorOut, "description": "database, broker or storage unavailable"},
    },
)
def cancel_batch(
    batch_id: BatchId, session: SessionDep, tenant: TenantDep, link: LinkBaseDep
) -> BatchOut:
    """Cancels every unfinished job of the batch (jobs that ended stay as they are). 409
    when no job of the batch is or was cancelled, because all had ended otherwise."""
    outcome = control.cancel_batch(batch_id, tenant)
    if outcome is None:
        raise HTTPException(404, f"no batch {batch_id}")
    if not outcome.cancelled and not outcome.already:
        raise HTTPException(409, f"batch {batch_id} has nothing to cancel: every job has ended")
    return _batch_now(session, batch_id, tenant, link)


@router.post(
    "/{batch_id}/retry",
    status_code=202,
    response_model=BatchOut,
    response_model_by_alias=True,
    responses={
        404: {"model": ErrorOut, "description": "no such batch"},
        409: {"model": ErrorOut, "description": "nothing to retry"},
        503: {"model": ErrorOut, "description": "database, broker or storage unavailable"},
    },
)
def retry_batch(
    batch_id: BatchId, session: SessionDep, tenant: TenantDep, link: LinkBaseDep
) -> BatchOut:
    """Retries every ended job of the batch that has failed or cancelled work. 409 when
    none has."""
    plans = control.retry_batch(batch_id, tenant)
    if plans is None:
        raise HTTPException(404, f"no batch {batch_id}")
    if not plans:
        raise HTTPException(409, f"batch {batch_id} has nothing to retry")
    return _batch_now(session, batch_id, tenant, link)


def _batch_now(session: Session, batch_id: str, tenant: str, link: str) -> BatchOut:
    session.expire_all()  # read what the change committed, not this session's copy
    batch = load_batch(session, batch_id, tenant)
    assert batch is not None
    return batch_out(batch, link_base=link, webhooks=deliveries_of(session, batch_id=batch_id))
