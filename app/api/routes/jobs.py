"""/v1/jobs: submit documents, poll a job, fetch its result and its figures."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app import control
from app.api.deps import (
    LinkBaseDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    TenantDep,
    current_tenant,
)
from app.api.streams import LastEventId, event_response, event_responses
from app.events import job_snapshot
from app.models import Job, JobState
from app.schemas import (
    ID_PATTERN,
    MAX_BATCH_NAME,
    MAX_FILENAME,
    MAX_TEMPLATE_BYTES,
    MAX_URL,
    NAME_PATTERN,
    UNAUTHORIZED,
    ErrorOut,
    JobOptions,
    JobOut,
    JobSnapshot,
    SubmitOut,
    check_callback_url,
    check_name,
)
from app.status import job_out, load_job
from app.storage import IMAGE_NAME_PATTERN, page_image_key, result_key
from app.submit import submit_streams
from app.webhooks import deliveries_of

# Every route here authenticates first (before storage or anything else is touched), even
# one that forgets TenantDep; FastAPI then reuses the same tenant for the route's TenantDep.
router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    dependencies=[Depends(current_tenant)],
    responses=UNAUTHORIZED,
)

JobId = Annotated[str, Path(pattern=ID_PATTERN, description="32 hex characters")]
# Every route may answer these; 422 is FastAPI's own validation shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such job"},
    503: {"model": ErrorOut, "description": "database, broker or storage unavailable"},
}
NOT_YET: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "the job has no result (yet)"}
}


def _invalid(field: str, message: str, value: object) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}]
    )


def _link(operation: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": parameters}


# What a client (or schemathesis' stateful phase) can do next with the ids it got.
SUBMIT_LINKS = {
    "GetJob": _link("get_job", job_id="$response.body#/jobs/0/id"),
    "GetResult": _link("get_result", job_id="$response.body#/jobs/0/id"),
    "GetBatch": _link("get_batch", batch_id="$response.body#/batch_id"),
}


@router.post(
    "",
    status_code=201,
    response_model=SubmitOut,
    response_model_by_alias=True,
    responses={201: {"links": SUBMIT_LINKS}, 503: ERRORS[503]},
)
def create_jobs(
    files: Annotated[list[UploadFile], File(description="one or more documents")],
    settings: SettingsDep,
    tenant: TenantDep,
    link: LinkBaseDep,
    session: SessionDep,
    batch_name: Annotated[
        str | None,
        Form(description="name of the batch", max_length=MAX_BATCH_NAME, pattern=NAME_PATTERN),
    ] = None,
    mode: Annotated[Literal["auto", "ocr", "text"] | None, Form()] = None,
    dpi: Annotated[int | None, Form(ge=50, le=600, description="render resolution")] = None,
    extract: Annotated[
        str | None, Form(description="JSON template for information extraction")
    ] = None,
    extract_file: Annotated[UploadFile | None, File(description="JSON template as a file")] = None,
    password: Annotated[
        str | None,
        Form(description="password of encrypted PDFs; stored encrypted, never returned"),
    ] = None,
    callback_url: Annotated[
        str | None,
        Form(
            description="http(s) URL POSTed each job's status when it ends (signed webhook)",
            max_length=MAX_URL,
        ),
    ] = None,
    batch_callback_url: Annotated[
        str | None,
        Form(
            description="http(s) URL POSTed the batch's status when its last job ends",
            max_length=MAX_URL,
        ),
    ] = None,
) -> SubmitOut:
    """Stores each file and enqueues it; several files (or a batch name) make one batch.
    Each file becomes a job even if it is no document: it then fails with the reason.
    Everything is checked before anything is created, and a request that fails half-way
    (503) leaves no job or batch behind."""
    template = extract
    if extract_file is not None:
        raw = extract_file.file.read(MAX_TEMPLATE_BYTES + 1)
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise _invalid("extract_file", f"over {MAX_TEMPLATE_BYTES} bytes", None)
        template = raw.decode("utf-8", errors="replace")
    try:
        options = JobOptions(
            text_mode=mode,
            dpi=dpi,
            extract=template,
            password=password or None,  # type: ignore[arg-type]
            callback_url=callback_url or None,
        )
    except (ValidationError, ValueError) as exc:
        raise _invalid(
            "extract" if template else "options", f"invalid options: {exc}", None
        ) from None
    if batch_callback_url:
        try:
            check_callback_url(batch_callback_url)
        except ValueError as exc:
            raise _invalid("batch_callback_url", str(exc), None) from None
    if options.password is not None:
        from app.passwords import SecretKeyMissing, require_key

        try:
            require_key(settings)
        except SecretKeyMissing as exc:
            # The request cannot be taken as given (no 5xx: nothing is down).
            raise _invalid("password", str(exc), None) from None
    names = []
    for upload in files:
        name = upload.filename or "upload"
        try:
            names.append(check_name(name, MAX_FILENAME, "file name"))
        except ValueError as exc:
            raise _invalid("files", str(exc), name[:100]) from None
    batch_id, ids = submit_streams(
        [(upload.file, name) for upload, name in zip(files, names, strict=True)],
        batch_name=batch_name or None,
        batch_callback_url=batch_callback_url or None,
        options=options,
        tenant=tenant,
        settings=settings,
    )
    rows = [load_job(session, job_id, tenant) for job_id in ids]
    return SubmitOut(
        batch_id=batch_id, jobs=[job_out(row, link_base=link) for row in rows if row is not None]
    )


@router.get(
    "/{job_id}",
    response_model=JobOut,
    response_model_by_alias=True,
    responses=ERRORS,
    operation_id="get_job",
)
def get_job(
    job_id: JobId,
    session: SessionDep,
    tenant: TenantDep,
    link: LinkBaseDep,
    pages: Annotated[bool, Query(description="include each page's state")] = True,
) -> JobOut:
    job = load_job(session, job_id, tenant)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job_out(
        job, with_pages=pages, link_base=link, webhooks=deliveries_of(session, job_id=job_id)
    )


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses=event_responses("job", JobSnapshot),
    operation_id="job_events",
)
def job_events(
    job_id: JobId,
    tenant: TenantDep,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> Response:
    """The job's state and page counts as they change (server-sent events)."""
    return event_response(
        lambda: job_snapshot(job_id, tenant), "job", job_id, last_event_id, settings
    )


def _finished_job(session: SessionDep, job_id: str, tenant: str) -> Job:
    """The job if it has a result: 404 when there is no such job, 409 while it has none."""
    job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise HTTPException(404, f"no job {job_id}")
    if job.result_markdown_key is None:
        detail = f"job {job_id} has no result yet: it is {job.state}"
        raise HTTPException(409, detail + (f" ({job.error})" if job.error else ""))
    return job


@router.get(
    "/{job_id}/result",
    responses={
        200: {"content": {"text/markdown": {}, "application/json": {}}},
        **ERRORS,
        **NOT_YET,
    },
    operation_id="get_result",
)
def get_result(
    job_id: JobId,
    session: SessionDep,
    storage: StorageDep,
    tenant: TenantDep,
    settings: SettingsDep,
    format: Annotated[Literal["md", "json"], Query()] = "md",
    redirect: Annotated[
        bool,
        Query(
            description="307 to a short-lived presigned storage URL instead of the bytes "
            "(where storage can presign; else the bytes)"
        ),
    ] = False,
) -> Response:
    job = _finished_job(session, job_id, tenant)
    key = job.result_markdown_key if format == "md" else job.result_json_key
    if key is None:
        raise HTTPException(409, f"job {job_id} has no {format} result")
    if redirect and (url := storage.url(key, settings.presign_seconds)) is not None:
        return RedirectResponse(url, status_code=307)
    media = "text/markdown; charset=utf-8" if format == "md" else "application/json"
    return Response(storage.get(key), media_type=media)


@router.get(
    "/{job_id}/images/{name}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **ERRORS, **NOT_YET},
)
def get_image(
    job_id: JobId,
    name: Annotated[str, Path(pattern=IMAGE_NAME_PATTERN, description="as the result links")],
    session: SessionDep,
    storage: StorageDep,
    tenant: TenantDep,
) -> Response:
    """A figure the result links as `images/<name>`; the links resolve here relative to
    the result's own URL."""
    job = _finished_job(session, job_id, tenant)
    return Response(
        storage.get(result_key(job.tenant, job_id, f"images/{name}")), media_type="image/png"
    )


@router.get(
    "/{job_id}/pages/{number}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **ERRORS},
)
def get_page_image(
    job_id: JobId,
    number: Annotated[int, Path(ge=1, le=1_000_000, description="page number, from 1")],
    session: SessionDep,
    storage: StorageDep,
    tenant: TenantDep,
) -> Response:
    """The page as rendered, scaled down (PAGEMILL_PAGE_IMAGE_MAX_SIDE), to draw the
    result's region boxes on: their pixels are the render's, so scale them by the image's
    width over the page's `width`. There from when the page is rendered; 404 before, and
    for jobs rendered with page images turned off."""
    job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise HTTPException(404, f"no job {job_id}")
    if job.pages_total is None or number > job.pages_total:
        raise HTTPException(404, f"job {job_id} has no page {number}")
    return Response(
        storage.get(page_image_key(job.tenant, job_id, number)),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    response_model_by_alias=True,
    responses={**ERRORS, 409: {"model": ErrorOut, "description": "the job had ended"}},
)
def cancel_job(job_id: JobId, session: SessionDep, tenant: TenantDep, link: LinkBaseDep) -> JobOut:
    """Cancels the job: queued pages are skipped, nothing more is recognized or assembled,
    and it ends `cancelled`. Cancelling a cancelled job again returns it unchanged; a job
    that ended otherwise (succeeded, partial, failed) is left as it is, with 409."""
    outcome = control.cancel_job(job_id, tenant)
    if outcome is None:
        raise HTTPException(404, f"no job {job_id}")
    if outcome.state != JobState.CANCELLED:
        raise HTTPException(409, f"job {job_id} has already ended: it is {outcome.state}")
    return _job_now(session, job_id, tenant, link)


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    response_model_by_alias=True,
    responses={**ERRORS, 409: {"model": ErrorOut, "description": "nothing to retry"}},
)
def retry_job(job_id: JobId, session: SessionDep, tenant: TenantDep, link: LinkBaseDep) -> JobOut:
    """Reprocesses an ended job's failed and cancelled pages (or the whole job, if its
    document never opened) and assembles it again. 409 when nothing failed, or while the
    job is still running."""
    plan = control.retry_job(job_id, tenant)
    if plan is None:
        raise HTTPException(404, f"no job {job_id}")
    if plan.empty:
        raise HTTPException(409, f"job {job_id} has nothing to retry: it is {plan.before}")
    return _job_now(session, job_id, tenant, link)


def _job_now(session: Session, job_id: str, tenant: str, link: str) -> JobOut:
    session.expire_all()  # read what the change committed, not this session's copy
    job = load_job(session, job_id, tenant)
    assert job is not None
    return job_out(
        job, with_pages=True, link_base=link, webhooks=deliveries_of(session, job_id=job_id)
    )
