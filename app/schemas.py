"""Request and response schemas of the API and CLI, beside the table models."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

# Job and batch ids are uuid4 hex (app.jobs.new_id); anything else cannot exist.
ID_PATTERN = r"^[0-9a-f]{32}$"
# Names as the database keeps them (app.models: batches.name, jobs.filename).
MAX_BATCH_NAME = 255
MAX_FILENAME = 1024
# Printable text only: NUL and other control characters break databases and terminals.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An extraction template is a few keys, never a document.
MAX_TEMPLATE_BYTES = 64 * 1024


def check_name(value: str, limit: int, what: str) -> str:
    """`value` if it fits the database and has no control characters, else ValueError."""
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains control characters")
    return value


MAX_URL = 2048


def check_callback_url(value: str) -> str:
    """`value` if it is an absolute http(s) URL with a host, else ValueError. Where it may
    point (no private addresses by default) is checked when it is called: app.webhooks."""
    from urllib.parse import urlsplit

    if len(value) > MAX_URL:
        raise ValueError(f"callback_url is longer than {MAX_URL} characters")
    if _CONTROL.search(value) or " " in value:
        raise ValueError("callback_url contains spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a port that is no number)
    except ValueError:
        raise ValueError("callback_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("callback_url must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("callback_url must not carry credentials")
    return value


class JobOptions(BaseModel):
    """Per-job choices a submitter may make; unset fields take the settings' defaults."""

    text_mode: Literal["auto", "ocr", "text"] | None = None
    dpi: int | None = Field(default=None, ge=50, le=600)
    # Information extraction: a JSON template (keys with empty values) filled per page.
    extract: str | None = None
    # The password of an encrypted PDF. Never dumped with the options: the submitter stores
    # it encrypted in jobs.password_ciphertext (app/passwords.py). No length rule: a
    # validation error would print the value.
    password: SecretStr | None = Field(default=None, exclude=True)
    # POSTed with the job's status when the job ends (app.webhooks).
    callback_url: str | None = None

    @field_validator("callback_url", mode="before")
    @classmethod
    def _callback(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError("callback_url must be a string")
        return check_callback_url(value)

    @field_validator("extract", mode="before")
    @classmethod
    def _template(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, str) and len(value.encode()) > MAX_TEMPLATE_BYTES:
            raise ValueError(f"extract is over {MAX_TEMPLATE_BYTES} bytes")
        try:
            parsed = json.loads(value) if isinstance(value, str) else value
        except RecursionError:
            raise ValueError("extract is nested too deeply") from None
        if not isinstance(parsed, dict) or not parsed:
            raise ValueError("extract must be a JSON object with at least one key")
        return json.dumps(parsed, ensure_ascii=False)


class Progress(BaseModel):
    pages_total: int | None
    pages_done: int
    pages_failed: int
    percent: float


class Timings(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queued_seconds: float | None
    running_seconds: float | None


class PageOut(BaseModel):
    number: int
    state: str
    error: str | None
    attempts: int
    regions: int | None
    text_layer: str | None
    render_ms: float | None
    layout_ms: float | None
    recognize_ms: float | None
    # While a worker holds the page: "held" (its heartbeat is fresh) or "lost" (the worker
    # stopped beating; the sweeper sends the page again), and its last heartbeat.
    lease: Literal["held", "lost"] | None = None
    heartbeat_at: datetime | None = None


class ResultLinks(BaseModel):
    markdown: str | None
    json_: str | None = Field(default=None, alias="json", serialization_alias="json")

    model_config = {"populate_by_name": True}


class WebhookOut(BaseModel):
    """One attempt at a callback: what the receiver answered, or why it failed."""

    event_id: str
    attempt: int
    state: str
    url: str
    due_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_code: int | None
    error: str | None


class JobOut(BaseModel):
    id: str
    batch_id: str | None
    filename: str
    media_type: str | None
    size_bytes: int
    state: str
    error: str | None
    options: dict[str, Any]
    progress: Progress
    timings: Timings
    result: ResultLinks | None
    pages: list[PageOut] | None = None
    webhooks: list[WebhookOut] = Field(default_factory=list)


class BatchOut(BaseModel):
    id: str
    name: str | None
    state: str
    jobs_total: int
    jobs_by_state: dict[str, int]
    progress: Progress
    created_at: datetime
    callback_url: str | None = None
    jobs: list[JobOut]
    ingest: IngestOut | None = None
    webhooks: list[WebhookOut] = Field(default_factory=list)


class IngestOut(BaseModel):
    """A bulk ingestion's progress: `listing` while the source is read, then `done`, or
    `failed` with the reason (what it had submitted stays)."""

    source: str
    state: Literal["listing", "done", "failed"]
    submitted: int
    skipped: int  # already queued, running or succeeded with the same options
    failed: int  # refused before processing (unreadable, too large, bad manifest line)
    error: str | None


class ManifestEntry(BaseModel):
    """One document of an inline manifest (one line of a JSONL manifest)."""

    source: str = Field(max_length=2048, description="s3://BUCKET/KEY")
    filename: str | None = Field(default=None, max_length=MAX_FILENAME, pattern=NAME_PATTERN)
    options: dict[str, Any] | None = None


class BatchIn(BaseModel):
    """A batch ingested in the background from one source: an s3:// prefix, a JSONL
    manifest's s3:// key, or manifest entries inline."""

    name: str | None = Field(default=None, max_length=MAX_BATCH_NAME, pattern=NAME_PATTERN)
    source: str | None = Field(default=None, max_length=2048, description="s3://BUCKET/PREFIX")
    manifest: str | None = Field(default=None, max_length=2048, description="s3://BUCKET/KEY")
    entries: list[ManifestEntry] | None = Field(default=None, max_length=10_000)
    options: JobOptions | None = None


class SubmitOut(BaseModel):
    batch_id: str | None
    jobs: list[JobOut]


class JobSnapshot(BaseModel):
    """The data of a job's server-sent event."""

    id: str
    state: str
    pages_total: int | None
    pages_done: int
    pages_failed: int
    error: str | None


class BatchSnapshot(BaseModel):
    """The data of a batch's server-sent event."""

    id: str
    state: str
    jobs_total: int
    jobs_ended: int
    jobs_by_state: dict[str, int]
    pages_total: int | None
    pages_done: int
    pages_failed: int


class ErrorOut(BaseModel):
    """Every error but validation (422, FastAPI's own shape): 401, 404, 409, 503."""

    detail: str


# Every /v1 route may answer this (with `WWW-Authenticate: Bearer`).
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no valid API key (Authorization: Bearer KEY)"}
}


class CallerOut(BaseModel):
    tenant: str


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str
    storage: str
