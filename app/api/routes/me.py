"""/v1/me: who the caller's key acts for. The web page checks a key with it."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import TenantDep
from app.schemas import UNAUTHORIZED, CallerOut

router = APIRouter(prefix="/v1", tags=["keys"], responses=UNAUTHORIZED)


@router.get("/me", response_model=CallerOut)
def me(tenant: TenantDep) -> CallerOut:
    """The tenant of the API key (`default` when the API runs without keys)."""
    return CallerOut(tenant=tenant)
