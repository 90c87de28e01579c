"""/v1/jobs: submit documents, poll a job, fetch its result."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import Response
from pydantic import ValidationError

from app import jobs
from app.api.deps import LinkBaseDep, SessionDep, SettingsDep, StorageDep, TenantDep
from app.models import Job
from app.schemas import JobOptions, JobOut, SubmitOut
from app.status import job_out, load_job
from app.submit import submit_stream

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


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
    password: Annotated[
        str | None,
        Form(description="password of encrypted PDFs; stored encrypted, never returned"),
    ] = None,
) -> SubmitOut:
    """Stores each file and enqueues it; several files (or a batch name) make one batch.
    Each file becomes a job even if it is no document: it then fails with the reason."""
    template = extract
    if extract_file is not None:
        template = extract_file.file.read().decode("utf-8", errors="replace")
    try:
        options = JobOptions(
            text_mode=mode,
            dpi=dpi,
            extract=template,
            password=password or None,  # type: ignore[arg-type]
        )
    except (ValidationError, ValueError) as exc:
        raise HTTPException(422, f"invalid options: {exc}") from None
    if options.password is not None:
        from app.secrets import SecretKeyMissing, require_key

        try:
            require_key(settings)
        except SecretKeyMissing as exc:
            raise HTTPException(503, str(exc)) from None
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
    rows = [load_job(session, job_id) for job_id in ids]
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
    format: Annotated[Literal["md", "json"], Query()] = "md",
) -> Response:
    job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise HTTPException(404, f"no job {job_id}")
    key = job.result_markdown_key if format == "md" else job.result_json_key
    if key is None:
        detail = f"job {job_id} has no result yet: it is {job.state}"
        raise HTTPException(409, detail + (f" ({job.error})" if job.error else ""))
    media = "text/markdown; charset=utf-8" if format == "md" else "application/json"
    return Response(storage.get(key), media_type=media)
