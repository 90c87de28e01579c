"""/v1/batches: many jobs polled as one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from app.api.deps import LinkBaseDep, SessionDep, TenantDep
from app.schemas import ID_PATTERN, BatchOut, ErrorOut
from app.status import batch_out, load_batch

router = APIRouter(prefix="/v1/batches", tags=["batches"])


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
    batch_id: Annotated[str, Path(pattern=ID_PATTERN, description="32 hex characters")],
    session: SessionDep,
    tenant: TenantDep,
    link: LinkBaseDep,
) -> BatchOut:
    batch = load_batch(session, batch_id, tenant)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id}")
    return batch_out(batch, link_base=link)
