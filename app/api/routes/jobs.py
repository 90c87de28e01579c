"""/v1/jobs: submit documents, poll a job, fetch its result."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app import control, jobs
from app.api.deps import (
    LinkBaseDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    TenantDep,
    current_tenant,
)
from app.models import JobState
from app.schemas import JobOptions, JobOut, SubmitOut
from app.status import job_out, load_job
from app.submit import submit_stream

# Every route here authenticates first (before storage or anything else is touched), even
# one that forgets TenantDep; FastAPI then reuses the same tenant for the route's TenantDep.
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(current_tenant)])


@router.post("", status_code=201, response_model=SubmitOut, response_model_by_alias=True)
def create_jobs(
    files: Annotated[list[UploadFile], File(description="one or more documents")],
    settings: SettingsDep,
    tenant: TenantDep,
    link: LinkBaseDep,
    session: SessionDep,
    batch_name: Annotated[str | None, Form(description="name of the batch")] = None,
    mode: Annotated[Literal["auto", "ocr", "text"] | None, Form()] = None,
    dpi: Annotated[int | None, Form()] = None,
    extract: Annotated[
        str | None, Form(description="JSON template for information extraction")
    ] = None,
    extract_file: Annotated[UploadFile | None, File(description="JSON template as a file")] = None,
) -> SubmitOut:
    """Stores each file and enqueues it; several files (or a batch name) make one batch.
    Each file becomes a job even if it is no document: it then fails with the reason."""
    template = extract
    if extract_file is not None:
        template = extract_file.file.read().decode("utf-8", errors="replace")
    try:
        options = JobOptions(text_mode=mode, dpi=dpi, extract=template)
    except (ValidationError, ValueError) as exc:
        raise HTTPException(422, f"invalid options: {exc}") from None
    batch_id = jobs.create_batch(batch_name, tenant) if len(files) > 1 or batch_name else None
    ids = [
        submit_stream(
            upload.file,
            upload.filename or "upload",
            batch_id=batch_id,
            options=options,
            tenant=tenant,
            settings=settings,
        ).job_id
        for upload in files
    ]
    rows = [load_job(session, job_id, tenant) for job_id in ids]
    return SubmitOut(
        batch_id=batch_id, jobs=[job_out(row, link_base=link) for row in rows if row is not None]
    )


@router.get("/{job_id}", response_model=JobOut, response_model_by_alias=True)
def get_job(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    link: LinkBaseDep,
    pages: Annotated[bool, Query(description="include each page's state")] = True,
) -> JobOut:
    job = load_job(session, job_id, tenant)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job_out(job, with_pages=pages, link_base=link)


@router.get(
    "/{job_id}/result",
    responses={200: {"content": {"text/markdown": {}, "application/json": {}}}},
)
def get_result(
    job_id: str,
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
    job = load_job(session, job_id, tenant)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    key = job.result_markdown_key if format == "md" else job.result_json_key
    if key is None:
        detail = f"job {job_id} has no result yet: it is {job.state}"
        raise HTTPException(409, detail + (f" ({job.error})" if job.error else ""))
    if redirect and (url := storage.url(key, settings.presign_seconds)) is not None:
        return RedirectResponse(url, status_code=307)
    media = "text/markdown; charset=utf-8" if format == "md" else "application/json"
    return Response(storage.get(key), media_type=media)


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    response_model_by_alias=True,
    responses={404: {"description": "no such job"}, 409: {"description": "the job had ended"}},
)
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep, link: LinkBaseDep) -> JobOut:
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
    responses={404: {"description": "no such job"}, 409: {"description": "nothing to retry"}},
)
def retry_job(job_id: str, session: SessionDep, tenant: TenantDep, link: LinkBaseDep) -> JobOut:
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
    return job_out(job, with_pages=True, link_base=link)
