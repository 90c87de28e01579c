"""Database tables: batches, jobs, pages and regions. Postgres in production, SQLite embedded.

Keys are deterministic (job id, page number, region index) so every write can be an
idempotent upsert, and every row has room for a tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

DEFAULT_TENANT = "default"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware, on SQLite (which keeps no
    zone) as on Postgres."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware one")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: UtcDateTime,
    }


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    ASSEMBLING = "assembling"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # some pages failed; the rest is in the result
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED, JobState.CANCELLED)


class PageState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # render and layout on a cpu worker
    RECOGNIZING = "recognizing"  # waiting for or on a gpu worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # its job was cancelled before the page was done

    @property
    def terminal(self) -> bool:
        return self in (PageState.SUCCEEDED, PageState.FAILED, PageState.CANCELLED)


class RegionState(StrEnum):
    PENDING = "pending"  # waiting for the recognizer
    DONE = "done"
    FAILED = "failed"


def state_column(enum: type[StrEnum]) -> Enum:
    """A state stored as its plain string value (VARCHAR, no database enum type), read back
    as the Python enum."""
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class RegionSource(StrEnum):
    OCR = "ocr"
    TEXT_LAYER = "text_layer"
    IMAGE = "image"  # kept as a crop (skip)
    NONE = "none"  # abandoned


class Batch(Base):
    __tablename__ = "batches"
    # The sweeper finds ingestions that stopped moving (app/sweeper.py).
    __table_args__ = (Index("ix_batches_ingest", "ingest_state", "ingest_updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # POSTed (app.webhooks) when every job of the batch has ended, once its submission is
    # complete (sealed_at): a batch whose first jobs end while later ones are still being
    # submitted has not ended.
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    sealed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    # Bulk ingestion (app/ingest.py): the source (an s3:// prefix or a manifest), how far
    # it has been read (the last key, or the manifest's byte offset and line), and counts.
    # The cursor moves in the same transaction as the jobs it created, so a restarted
    # ingestion goes on exactly after the last chunk it recorded.
    source: Mapped[dict[str, Any] | None] = mapped_column()
    ingest_state: Mapped[str | None] = mapped_column(String(16))  # listing | done | failed
    ingest_cursor: Mapped[str | None] = mapped_column(Text)
    ingest_submitted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ingest_skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ingest_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ingest_error: Mapped[str | None] = mapped_column(Text)
    ingest_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    jobs: Mapped[list[Job]] = relationship(back_populates="batch", order_by="Job.created_at")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_created", "state", "created_at"),
        # Re-submission finds a document's jobs by its content (app/ingest.py).
        Index("ix_jobs_tenant_sha256", "tenant", "content_sha256"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    filename: Mapped[str] = mapped_column(String(1024))
    content_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str | None] = mapped_column(String(64))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)

    state: Mapped[JobState] = mapped_column(state_column(JobState), default=JobState.QUEUED)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # deliveries of `prepare`
    assemble_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The worker process running its prepare or assemble, and its last sign of life.
    held_by: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # A document password, encrypted with PAGEMILL_SECRET_KEY; never stored in clear.
    password_ciphertext: Mapped[str | None] = mapped_column(Text)
    pages_total: Mapped[int | None] = mapped_column(Integer)
    pages_done: Mapped[int] = mapped_column(Integer, default=0)  # the fan-in counter
    pages_failed: Mapped[int] = mapped_column(Integer, default=0)

    result_markdown_key: Mapped[str | None] = mapped_column(String(1024))
    result_json_key: Mapped[str | None] = mapped_column(String(1024))

    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    batch: Mapped[Batch | None] = relationship(back_populates="jobs")

    @property
    def awaiting_assembly(self) -> bool:
        """Every page is finished but the job is not: `assemble` is due (again)."""
        return (
            not JobState(self.state).terminal
            and self.pages_total is not None
            and self.pages_done >= self.pages_total
        )

    pages: Mapped[list[Page]] = relationship(
        back_populates="job", order_by="Page.number", cascade="all, delete-orphan"
    )


class Page(Base):
    __tablename__ = "pages"
    __table_args__ = (Index("ix_pages_state_updated", "state", "updated_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)

    state: Mapped[PageState] = mapped_column(state_column(PageState), default=PageState.QUEUED)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    recognize_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The worker process holding the page's message now, and its last sign of life.
    held_by: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=utcnow)

    width_pt: Mapped[float | None] = mapped_column(Float)  # size in the document
    height_pt: Mapped[float | None] = mapped_column(Float)
    dpi: Mapped[float | None] = mapped_column(Float)  # effective render resolution
    width_px: Mapped[int | None] = mapped_column(Integer)
    height_px: Mapped[int | None] = mapped_column(Integer)
    text_layer: Mapped[str | None] = mapped_column(String(32))  # trusted/untrusted/absent
    layout_engine: Mapped[str | None] = mapped_column(String(128))
    regions_total: Mapped[int | None] = mapped_column(Integer)

    render_ms: Mapped[float | None] = mapped_column(Float)
    layout_ms: Mapped[float | None] = mapped_column(Float)
    recognize_ms: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    job: Mapped[Job] = relationship(back_populates="pages")
    regions: Mapped[list[Region]] = relationship(
        order_by="Region.index", cascade="all, delete-orphan"
    )


class Region(Base):
    __tablename__ = "regions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["job_id", "page_number"], ["pages.job_id", "pages.number"], ondelete="CASCADE"
        ),
    )

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    page_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)  # reading order
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)

    label: Mapped[str] = mapped_column(String(32))
    source_label: Mapped[str | None] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float)
    bbox: Mapped[list[Any]] = mapped_column()  # [x0, y0, x1, y1] pixels at page dpi
    polygon: Mapped[list[Any] | None] = mapped_column()

    state: Mapped[RegionState] = mapped_column(
        state_column(RegionState), default=RegionState.PENDING
    )
    source: Mapped[str | None] = mapped_column(String(16))
    # Why the region was routed against its label (e.g. an "abandoned" label too large to
    # be a page header), for the JSON result.
    note: Mapped[str | None] = mapped_column(String(255))
    content: Mapped[str | None] = mapped_column(Text)
    image_key: Mapped[str | None] = mapped_column(String(1024))  # kept crop (skip regions)
    engine: Mapped[str | None] = mapped_column(String(128))
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    truncated: Mapped[bool] = mapped_column(default=False)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class DeliveryState(StrEnum):
    PENDING = "pending"  # due at due_at; its message is on its way
    SENDING = "sending"  # a worker is POSTing it now
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # this attempt failed; the next attempt is its own row
    GAVE_UP = "gave_up"  # the last attempt failed, or the URL was refused: no more


class WebhookDelivery(Base):
    """One attempt at notifying a job's or batch's callback_url that it ended. The first
    attempt is written in the same transaction as the state change that ended it, so a
    notification cannot be lost between the commit and its message (the sweeper re-sends
    pending ones). All attempts of one notification share its event_id, which the receiver
    gets as X-Pagemill-Delivery to drop duplicates."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_state_due", "state", "due_at"),
        Index("ix_webhook_deliveries_job", "job_id"),
        Index("ix_webhook_deliveries_batch", "batch_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32))
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    # Exactly one of job_id and batch_id: what ended.
    job_id: Mapped[str | None] = mapped_column(String(32))
    batch_id: Mapped[str | None] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[DeliveryState] = mapped_column(
        state_column(DeliveryState), default=DeliveryState.PENDING
    )
    due_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class ApiKey(Base):
    """An API key names its tenant. Only the key's SHA-256 is stored; the key itself is
    shown once, when it is created."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
