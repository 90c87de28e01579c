"""Dependencies injected into the routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.db import session_scope
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
# Room for API keys: every query is scoped to the caller's tenant.
TenantDep = Annotated[str, Depends(lambda: "default")]
