"""/v1/batches: many jobs polled as one."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from app.api.deps import LinkBaseDep, SessionDep, TenantDep, current_tenant
from app.schemas import BatchOut
from app.status import batch_out, load_batch

# Every route here authenticates first (before storage or anything else is touched), even
# one that forgets TenantDep; FastAPI then reuses the same tenant for the route's TenantDep.
router = APIRouter(prefix="/v1/batches", tags=["batches"], dependencies=[Depends(current_tenant)])


@router.get("/{batch_id}", response_model=BatchOut, response_model_by_alias=True)
def get_batch(batch_id: str, session: SessionDep, tenant: TenantDep, link: LinkBaseDep) -> BatchOut:
    batch = load_batch(session, batch_id, tenant)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id}")
    return batch_out(batch, link_base=link)
