"""API keys: every change to a key (create, revoke, last use) and the check of one.

A key names its tenant. Only its SHA-256 is stored: the key is shown once, when created.
Keys are looked up by their hash, so no comparison of secrets happens in Python.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from app.db import session_scope
from app.models import ApiKey, utcnow
from app.storage import TENANT_NAME

KEY_PREFIX = "pm_"
SHOWN_PREFIX = 10  # characters kept in clear (`pm_` + 7), to tell keys apart in a list
# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    tenant: str
    name: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    info: KeyInfo
    key: str  # the only time the key exists outside its holder's hands


def check_tenant(tenant: str) -> str:
    """The tenant name, or ValueError: it is the first folder of the tenant's object keys."""
    if not TENANT_NAME.fullmatch(tenant):
        raise ValueError(
            f"invalid tenant {tenant!r}: 1-64 of a-z, 0-9, '_' and '-', starting with a letter "
            "or digit"
        )
    return tenant


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        tenant=row.tenant,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def create_key(tenant: str, name: str | None = None) -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(24)  # 32 characters, 192 random bits
    row = ApiKey(
        id=secrets.token_hex(16),
        tenant=check_tenant(tenant),
        name=name,
        key_hash=hash_key(key),
        prefix=key[:SHOWN_PREFIX],
        created_at=utcnow(),
    )
    with session_scope() as session:
        session.add(row)
        session.flush()
        return NewKey(info=_info(row), key=key)


def list_keys(tenant: str | None = None) -> list[KeyInfo]:
    query = select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    with session_scope() as session:
        return [_info(row) for row in session.scalars(query)]


def revoke_key(key_id: str) -> bool:
    """Revokes a key at once; False when there is no such key or it is already revoked."""
    with session_scope() as session:
        revoked = session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(revoked.rowcount)  # type: ignore[attr-defined]


def verify_key(key: str) -> str | None:
    """The tenant of a valid (unrevoked) key, else None. Notes the use when the last one
    noted is older than LAST_USED_RESOLUTION, so a busy key costs one write a minute. Its
    own short transaction: the row lock of that write is never held through a request."""
    if not key.startswith(KEY_PREFIX):
        return None
    with session_scope() as session:
        row = session.scalars(
            select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
        ).one_or_none()
        if row is None:
            return None
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            # Conditional, so concurrent requests of one key write once.
            session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == row.id,
                    or_(
                        ApiKey.last_used_at.is_(None),
                        ApiKey.last_used_at <= now - LAST_USED_RESOLUTION,
                    ),
                )
                .values(last_used_at=now)
            )
        return row.tenant
