"""/v1/batches: many jobs polled as one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from sqlalchemy.orm import Session

from app import control
from app.api.deps import LinkBaseDep, SessionDep, TenantDep, current_tenant
from app.schemas import ID_PATTERN, BatchOut, ErrorOut
from app.status import batch_out, load_batch

# Every route here authenticates first (before storage or anything else is touched), even
# one that forgets TenantDep; FastAPI then reuses the same tenant for the route's TenantDep.
router = APIRouter(prefix="/v1/batches", tags=["batches"], dependencies=[Depends(current_tenant)])
BatchId = Annotated[str, Path(pattern=ID_PATTERN, description="32 hex characters")]


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
    return batch_out(batch, link_base=link)


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
    return batch_out(batch, link_base=link)
