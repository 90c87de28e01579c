"""Dependencies injected into the routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db import session_scope
from app.keys import verify_key
from app.models import DEFAULT_TENANT
from app.settings import Settings, get_settings
from app.storage import ObjectStorage, get_storage


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def get_object_storage() -> ObjectStorage:
    return get_storage()


def link_base(request: Request) -> str:
    settings = get_settings()
    return (settings.public_url or str(request.base_url)).rstrip("/")


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[ObjectStorage, Depends(get_object_storage)]
LinkBaseDep = Annotated[str, Depends(link_base)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `pagemill keys create`")


def tenant_of(authorization: str | None) -> str:
    """The tenant named by an `Authorization: Bearer KEY` header value. Missing, unknown and
    revoked keys get the same 401, so an answer tells nothing about which keys exist."""
    if get_settings().api_auth == "off":
        return DEFAULT_TENANT
    scheme, _, key = (authorization or "").partition(" ")
    tenant = verify_key(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
    if tenant is None:
        raise HTTPException(
            401,
            "a valid API key is required: Authorization: Bearer KEY",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return tenant


def current_tenant(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],  # for OpenAPI
) -> str:
    """The caller's tenant; already known when the middleware checked the key before
    reading the request's body (app.api.main)."""
    known: str | None = getattr(request.state, "tenant", None)
    return known if known is not None else tenant_of(request.headers.get("authorization"))


# Every /v1 route takes this: it authenticates, and every query is scoped to the tenant.
TenantDep = Annotated[str, Depends(current_tenant)]
