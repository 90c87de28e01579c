"""Webhooks: a job's or batch's callback_url is POSTed its status when it ends.

The first attempt's row is written by the state change that ended the job (app.jobs), in the
same transaction; a `pagemill.webhook` task (cpu queue) makes each attempt. A failed attempt
records why and writes the next one, due after an exponential backoff with jitter, up to
PAGEMILL_WEBHOOK_MAX_ATTEMPTS. The sweeper re-sends attempts whose message was lost.

Signature (when PAGEMILL_WEBHOOK_SECRET is set): header
`X-Pagemill-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
The receiver recomputes it over the raw body and rejects old timestamps (replays).
`X-Pagemill-Delivery` is the same on every attempt of one notification: the receiver
drops duplicates by it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import DeliveryState, WebhookDelivery, utcnow
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Pagemill-Signature"
DELIVERY_HEADER = "X-Pagemill-Delivery"
EVENT_HEADER = "X-Pagemill-Event"
_ERROR_CHARS = 500


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Pagemill-Signature value of `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300.0) -> bool:
    """What a receiver does: True when `header` signs `body` and is at most `tolerance`
    seconds old."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return abs(time.time() - timestamp) <= tolerance and hmac.compare_digest(
        expected, fields.get("v1", "")
    )


def backoff(attempt: int, settings: Settings) -> float:
    """Seconds before attempt `attempt + 1`: exponential, capped, with jitter, so the
    callbacks an outage held back do not all come back in the same second."""
    ceiling = min(
        settings.webhook_backoff_max_seconds,
        settings.webhook_backoff_seconds * 2 ** min(attempt - 1, 30),
    )
    return float(ceiling * random.uniform(0.5, 1.0))


def refused_address(url: str, settings: Settings) -> str | None:
    """Why `url` may not be called (its host resolves to a private, loopback, link-local
    or otherwise non-public address), or None. Resolved at each attempt."""
    if settings.webhook_allow_private:
        return None
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            return (
                f"{host} resolves to {address}, which is not a public address "
                "(PAGEMILL_WEBHOOK_ALLOW_PRIVATE=true allows it)"
            )
    return None


# -- creating notifications (called by app.jobs inside its transactions) -----------------


def add_notification(
    session: Session,
    *,
    url: str,
    tenant: str,
    job_id: str | None = None,
    batch_id: str | None = None,
) -> WebhookDelivery:
    """The first attempt of a new notification; its id is sent after the commit."""
    import uuid

    row = WebhookDelivery(
        event_id=uuid.uuid4().hex,
        tenant=tenant,
        job_id=job_id,
        batch_id=batch_id,
        url=url,
        attempt=1,
        state=DeliveryState.PENDING,
        due_at=utcnow(),
    )
    session.add(row)
    return row


def send_deliveries(ids: list[int]) -> None:
    """Sends the messages of deliveries just committed. A broker that refuses leaves them
    pending: the sweeper sends them again."""
    if not ids:
        return
    from app.queue import WEBHOOK, send

    for delivery_id in ids:
        try:
            send(WEBHOOK, delivery_id)
        except Exception as exc:
            log.warning("webhook %s not sent now (%s); the sweeper will", delivery_id, exc)


# -- one attempt (the `pagemill.webhook` task) ----------------------------------------


@dataclass(frozen=True, slots=True)
class NextAttempt:
    delivery_id: int
    delay: float


def _claim(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    """Takes a due pending attempt; None when it is not due, or another delivery of the
    message took it (or it was done)."""
    with session_scope() as session:
        claimed = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.state == DeliveryState.PENDING,
                WebhookDelivery.due_at <= now + timedelta(seconds=1),
            )
            .values(state=DeliveryState.SENDING, started_at=now)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        ).all()
        if not claimed:
            return None
        row = session.get(WebhookDelivery, delivery_id)
        if row is not None:
            session.expunge(row)
        return row


def payload(row: WebhookDelivery, settings: Settings) -> dict[str, Any] | None:
    """The body: the event, its id, and the job's or batch's status now (as the API shows
    it); None when the job or batch is gone."""
    from app.status import ANY_TENANT, batch_out, job_out, load_batch, load_job

    base = (settings.public_url or "").rstrip("/")
    with session_scope() as session:
        if row.job_id is not None:
            job = load_job(session, row.job_id, ANY_TENANT)
            if job is None:
                return None
            status = job_out(job, link_base=base).model_dump(mode="json", by_alias=True)
            key = "job"
        else:
            assert row.batch_id is not None
            batch = load_batch(session, row.batch_id, ANY_TENANT)
            if batch is None:
                return None
            status = batch_out(batch, link_base=base).model_dump(mode="json", by_alias=True)
            key = "batch"
    status.pop("webhooks", None)
    for job in status.get("jobs", []):
        job.pop("webhooks", None)
    return {"event": f"{key}.ended", "delivery_id": row.event_id, key: status}


def deliver(delivery_id: int, settings: Settings | None = None) -> NextAttempt | None:
    """Makes one attempt and records it; returns the next attempt to send, if any."""
    settings = settings or get_settings()
    now = utcnow()
    row = _claim(delivery_id, now)
    if row is None:
        return None
    status_code: int | None = None
    error: str | None = None
    final = False
    body_data = payload(row, settings)
    refused = refused_address(row.url, settings)
    if body_data is None:
        error, final = "the job or batch no longer exists", True
    elif refused is not None:
        error, final = f"refused: {refused}", True
    else:
        body = json.dumps(body_data, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "pagemill-webhook",
            DELIVERY_HEADER: row.event_id,
            EVENT_HEADER: str(body_data["event"]),
        }
        if settings.webhook_secret is not None:
            secret = settings.webhook_secret.get_secret_value()
            headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
        try:
            with httpx.Client(
                timeout=settings.webhook_timeout_seconds, follow_redirects=False
            ) as client:
                response = client.post(row.url, content=body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                answer = response.text[:200].strip()
                error = f"HTTP {status_code}" + (f": {answer}" if answer else "")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
    return _record(row, status_code, error, final, settings)


def _record(
    row: WebhookDelivery,
    status_code: int | None,
    error: str | None,
    final: bool,
    settings: Settings,
) -> NextAttempt | None:
    now = utcnow()
    last = final or row.attempt >= settings.webhook_max_attempts
    if error is None:
        state = DeliveryState.DELIVERED
    else:
        state = DeliveryState.GAVE_UP if last else DeliveryState.FAILED
    with session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == row.id, WebhookDelivery.state == DeliveryState.SENDING)
            .values(state=state, finished_at=now, status_code=status_code, error=error)
        )
        if state != DeliveryState.FAILED:
            log.info("webhook %s attempt %d: %s", row.event_id, row.attempt, state.value)
            return None
        delay = backoff(row.attempt, settings)
        following = WebhookDelivery(
            event_id=row.event_id,
            tenant=row.tenant,
            job_id=row.job_id,
            batch_id=row.batch_id,
            url=row.url,
            attempt=row.attempt + 1,
            state=DeliveryState.PENDING,
            due_at=now + timedelta(seconds=delay),
        )
        session.add(following)
        session.flush()
        next_id = following.id
    log.info(
        "webhook %s attempt %d failed (%s); next in %.1f s", row.event_id, row.attempt, error, delay
    )
    return NextAttempt(next_id, delay)


# -- what the sweeper re-sends -----------------------------------------------------------


def lost_deliveries(settings: Settings, limit: int) -> list[int]:
    """Pending attempts long past due (their message was lost), and attempts a worker
    took and never finished (it died mid-POST), put back to pending; returns their ids."""
    now = utcnow()
    overdue = now - timedelta(seconds=settings.webhook_resend_after_seconds)
    abandoned = now - timedelta(
        seconds=settings.webhook_timeout_seconds + settings.webhook_resend_after_seconds
    )
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.state == DeliveryState.PENDING,
                    WebhookDelivery.due_at < overdue,
                )
                .limit(limit)
            )
        )
        ids += session.scalars(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.state == DeliveryState.SENDING,
                WebhookDelivery.started_at < abandoned,
            )
            .values(state=DeliveryState.PENDING, due_at=now)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        ).all()
        if ids:  # not re-sent again before their time is up again
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(due_at=now)
                .execution_options(synchronize_session=False)
            )
    return ids


def deliveries_of(
    session: Session, *, job_id: str | None = None, batch_id: str | None = None
) -> list[WebhookDelivery]:
    """Every attempt for a job or a batch, oldest first."""
    query = select(WebhookDelivery).order_by(WebhookDelivery.id)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    else:
        query = query.where(WebhookDelivery.batch_id == batch_id)
    return list(session.scalars(query))
