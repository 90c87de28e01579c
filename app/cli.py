"""The `pagemill` command: submit, status, result, run, and the server processes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from app.settings import get_settings

if TYPE_CHECKING:
    from app.schemas import JobOptions, JobOut, WebhookOut

cli = typer.Typer(
    help="pagemill: bulk document OCR on a job queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ModeOption = Annotated[
    str | None, typer.Option("--mode", help="auto (text layer where trusted), ocr, or text")
]
ExtractOption = Annotated[
    str | None,
    typer.Option(
        "--extract",
        help="information extraction: a JSON template inline, or @FILE / a path to one",
    ),
]
DpiOption = Annotated[int | None, typer.Option("--dpi", help="render resolution")]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="password of encrypted PDFs (stored encrypted, never shown); @FILE reads it "
        "from a file, which keeps it out of the process list",
    ),
]


def main() -> None:
    try:
        cli()
    except Exception as exc:
        message, code = error_message(exc)
        if message is None:
            raise
        console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(code) from None


def error_message(exc: BaseException) -> tuple[str | None, int]:
    """pagemill's errors as one line for the terminal and an exit code (2: fix the setup,
    1: a service is down, try again); (None, 1) for a bug, which keeps its traceback."""
    from botocore.exceptions import ClientError

    from app.db import DatabaseNotReady
    from app.errors import BrokerUnavailable, DatabaseUnavailable, StorageError, translate

    if isinstance(exc, DatabaseNotReady):
        return str(exc), 2
    found = translate(exc)
    if isinstance(found, StorageError):
        cause = found.__cause__
        code = ""
        if isinstance(cause, ClientError):
            code = str(cause.response.get("Error", {}).get("Code", ""))
        if code in _REFUSED_CREDENTIALS:
            return (
                f"storage refused the credentials ({code}): check PAGEMILL_S3_ACCESS_KEY / "
                "PAGEMILL_S3_SECRET_KEY",
                2,
            )
        return f"storage unavailable ({found}): check PAGEMILL_S3_ENDPOINT; then retry", 1
    if isinstance(found, DatabaseUnavailable):
        return f"database unavailable ({found}): check PAGEMILL_DATABASE_URL; then retry", 1
    if isinstance(found, BrokerUnavailable):
        return f"broker unavailable ({found}): check PAGEMILL_BROKER_URL; then retry", 1
    return None, 1


_REFUSED_CREDENTIALS = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403", "Forbidden"}
)


def _ready(*, migrate: bool = False) -> None:
    """Fails with the command to run when the database lacks the schema."""
    from app.db import migrate as run_migrations
    from app.db import require_migrated

    settings = get_settings()
    if migrate and settings.database_url is None:
        run_migrations(settings)  # embedded SQLite: pagemill owns it
        return
    require_migrated(settings)  # DatabaseNotReady: main() prints it, exit 2


def _options(
    mode: str | None,
    extract: str | None,
    dpi: int | None,
    password: str | None = None,
    callback_url: str | None = None,
) -> JobOptions:
    from pydantic import ValidationError

    from app.schemas import JobOptions

    template = extract
    if extract is not None:
        candidate = Path(extract[1:] if extract.startswith("@") else extract)
        if extract.startswith("@") or (
            not extract.lstrip().startswith("{") and candidate.is_file()
        ):
            template = candidate.read_text(encoding="utf-8")
    if password is not None:
        password = _read_password(password)
    try:
        # `mode` is a plain string here; pydantic checks it against the allowed modes.
        options = JobOptions(
            text_mode=mode,  # type: ignore[arg-type]
            extract=template,
            dpi=dpi,
            password=password,  # type: ignore[arg-type]
            callback_url=callback_url,
        )
    except (ValidationError, ValueError) as exc:
        console.print(f"invalid options: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    if password is not None:
        from app.passwords import SecretKeyMissing, require_key

        try:
            require_key(get_settings())
        except SecretKeyMissing as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    return options


def _read_password(value: str) -> str:
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        console.print(f"[red]cannot read the password file: {exc.strerror}[/red]")
        raise typer.Exit(2) from None


def _files(paths: list[str]) -> list[Path]:
    """The files behind PATHs (files, folders, globs); exits 2 when there are none."""
    from app.submit import expand_paths

    try:
        files = expand_paths(paths)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if not files:
        console.print("[red]no files found[/red]")
        raise typer.Exit(2)
    return files


def _tenant(tenant: str) -> str:
    from app.keys import check_tenant

    try:
        return check_tenant(tenant)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@cli.command()
def migrate() -> None:
    """Bring the database to the newest schema."""
    from app.db import current_revision, get_engine
    from app.db import migrate as run_migrations

    settings = get_settings()
    current_revision(get_engine(settings))  # unreachable or refused: says which, exit 2
    run_migrations(settings)
    console.print("database is at the newest schema")


@cli.command()
def submit(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="files, folders (recursive) or globs; or one s3://BUCKET/PREFIX"),
    ] = None,
    manifest: Annotated[
        str | None,
        typer.Option(
            "--manifest",
            help='a JSONL file or s3:// key, a line per document: {"source": "PATH or '
            's3://BUCKET/KEY", "options": {...}, "filename": "..."}',
        ),
    ] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="group the jobs as a batch")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait until every job ends")] = False,
    mode: ModeOption = None,
    extract: ExtractOption = None,
    dpi: DpiOption = None,
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant the jobs belong to")] = (
        "default"
    ),
    password: PasswordOption = None,
    callback_url: Annotated[
        str | None,
        typer.Option("--callback-url", help="URL POSTed each job's status when it ends"),
    ] = None,
    batch_callback_url: Annotated[
        str | None,
        typer.Option(
            "--batch-callback-url", help="URL POSTed the batch's status when its last job ends"
        ),
    ] = None,
) -> None:
    """Store documents and enqueue them. Prints one job id per line (then the batch id).

    An s3:// prefix or a --manifest is ingested in bulk: listed lazily, copied inside the
    storage server, enqueued at PAGEMILL_INGEST_RATE; prints the batch id first and the
    counts at the end. Submitting the same source again skips every document already
    queued, running or succeeded with the same options."""
    from app import jobs
    from app.schemas import MAX_BATCH_NAME, check_callback_url, check_name
    from app.submit import check_broker, submit_file

    paths = paths or []
    bulk = manifest is not None or any(p.startswith("s3://") for p in paths)
    if bulk and (len(paths) + (manifest is not None) != 1 or wait):
        console.print(
            "[red]bulk ingestion takes one source (one s3:// prefix or --manifest) and no "
            "--wait: follow it with `pagemill status BATCH`[/red]"
        )
        raise typer.Exit(2)
    if not paths and manifest is None:
        console.print("[red]name files, folders, globs, an s3:// prefix or --manifest[/red]")
        raise typer.Exit(2)
    _ready(migrate=True)
    options = _options(mode, extract, dpi, password, callback_url)
    if batch_callback_url:
        try:
            check_callback_url(batch_callback_url)
        except ValueError as exc:
            console.print(f"--batch-callback-url: {exc}", style="red", markup=False)
            raise typer.Exit(2) from None
    tenant = _tenant(tenant)
    try:
        check_name(batch or "", MAX_BATCH_NAME, "--batch")
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if bulk:
        _ingest(paths[0] if paths else None, manifest, batch, options, tenant)
        return
    files = _files(paths)
    check_broker()  # an outage ends here, before a batch or job exists
    batch_id = (
        jobs.create_batch(batch, tenant, batch_callback_url)
        if batch or len(files) > 1 or batch_callback_url
        else None
    )
    ids = []
    for path in files:
        submitted = submit_file(path, batch_id=batch_id, options=options, tenant=tenant)
        ids.append(submitted.job_id)
        print(f"{submitted.job_id}\t{path}")
    if batch_id:
        jobs.seal_batch(batch_id)
        print(f"batch\t{batch_id}")
    if wait:
        from app.runner import wait_with_progress

        states = wait_with_progress(ids, console)
        _print_summary(ids)
        if any(state != "succeeded" for state in states.values()):
            raise typer.Exit(1)


def _ingest(
    prefix: str | None, manifest: str | None, name: str | None, options: JobOptions, tenant: str
) -> None:
    """Bulk ingestion in this process (app.ingest); Ctrl-C stops it after the chunk it
    records, and submitting the same source again goes on from there."""
    import time

    from app import jobs
    from app.errors import SourceError
    from app.ingest import Counts, Outcome, ingest_step, start_ingest
    from app.submit import check_broker

    check_broker()
    try:
        batch_id = start_ingest(tenant=tenant, prefix=prefix, manifest=manifest, name=name,
                                options=options)  # fmt: skip
    except SourceError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    print(f"batch\t{batch_id}", flush=True)
    totals = [0, 0, 0]
    started = time.monotonic()

    def report(counts: Counts) -> None:
        totals[0] += counts.submitted
        totals[1] += counts.skipped
        totals[2] += counts.failed
        for error in counts.errors:
            console.print(f"failed: {error}", style="yellow", markup=False, highlight=False)
        rate = sum(totals) / max(time.monotonic() - started, 1e-6)
        console.print(
            f"submitted {totals[0]}, skipped {totals[1]}, failed {totals[2]} "
            f"({rate:.0f} documents/s)",
            highlight=False,
        )

    try:
        while (outcome := ingest_step(batch_id, report=report)) == Outcome.WAIT:
            console.print("the cpu queue is full (PAGEMILL_INGEST_MAX_QUEUED): waiting")
            time.sleep(5)
    except BaseException:
        jobs.end_ingest(batch_id, "interrupted: submit the same source again to go on")
        raise
    state = jobs.ingest_state(batch_id)
    print(f"submitted\t{totals[0]}\nskipped\t{totals[1]}\nfailed\t{totals[2]}")
    if state is not None and state.state == jobs.INGEST_FAILED:
        console.print(f"[red]ingestion stopped: {state.error}[/red]")
        raise typer.Exit(1)
    del outcome


@cli.command()
def status(
    ident: Annotated[str, typer.Argument(metavar="JOB|BATCH")],
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
    pages: Annotated[bool, typer.Option("--pages", help="include each page")] = False,
) -> None:
    """State, progress, timings and errors of a job or a batch."""
    from app.db import session_scope
    from app.status import ANY_TENANT, batch_out, job_out, load_batch, load_job
    from app.webhooks import deliveries_of

    _ready()
    with session_scope() as session:
        job = load_job(session, ident, ANY_TENANT)
        if job is not None:
            out = job_out(
                job, with_pages=pages or as_json, webhooks=deliveries_of(session, job_id=ident)
            )
            if as_json:
                print(out.model_dump_json(indent=2, by_alias=True))
            else:
                _print_job(out)
            return
        found = load_batch(session, ident, ANY_TENANT)
        if found is None:
            console.print(f"[red]no job or batch {ident}[/red]")
            raise typer.Exit(2)
        batch = batch_out(found, webhooks=deliveries_of(session, batch_id=ident))
    if as_json:
        print(batch.model_dump_json(indent=2, by_alias=True))
        return
    console.print(
        f"batch {batch.id} {batch.name or ''}: [bold]{batch.state}[/bold]  "
        f"{batch.jobs_by_state}  pages {batch.progress.pages_done}/"
        f"{batch.progress.pages_total if batch.progress.pages_total is not None else '?'}"
    )
    if batch.ingest is not None:
        ingest = batch.ingest
        print(
            f"ingest    {ingest.source}: {ingest.state}, submitted {ingest.submitted}, "
            f"skipped {ingest.skipped}, failed {ingest.failed}"
            + (f" ({ingest.error})" if ingest.error else "")
        )
    _print_table(batch.jobs)
    _print_webhooks(batch.webhooks)


def _print_job(job: JobOut) -> None:
    total = job.progress.pages_total
    print(f"job       {job.id}")
    print(f"file      {job.filename}")
    print(f"state     {job.state}")
    print(
        f"pages     {job.progress.pages_done}/{total if total is not None else '?'} done"
        f", {job.progress.pages_failed} failed"
    )
    if job.timings.running_seconds is not None:
        print(f"time      {job.timings.running_seconds:.2f} s")
    if job.error:
        print(f"error     {job.error}")
    _print_webhooks(job.webhooks)
    for page in job.pages or []:
        if page.error:
            print(f"  page {page.number}: {page.state}: {page.error}")
        elif page.lease == "lost":
            print(
                f"  page {page.number}: {page.state}: its worker stopped (last heartbeat "
                f"{page.heartbeat_at:%H:%M:%S}); the sweeper sends it again"
            )


def _print_webhooks(rows: Sequence[WebhookOut]) -> None:
    """Every attempt at a callback: when, and what the receiver answered."""
    for row in rows:
        outcome = row.error or (f"HTTP {row.status_code}" if row.status_code else "")
        moment = row.finished_at or row.due_at
        print(f"webhook   attempt {row.attempt} {row.state} {moment:%H:%M:%S} {outcome}".rstrip())


def _print_table(jobs: Sequence[JobOut]) -> None:
    from app.runner import jobs_table

    Console().print(jobs_table(jobs))


def _print_summary(ids: list[str]) -> None:
    from app.db import session_scope
    from app.status import ANY_TENANT, job_out, load_job

    with session_scope() as session:
        outs = [job_out(job) for i in ids if (job := load_job(session, i, ANY_TENANT)) is not None]
    _print_table(outs)


@cli.command()
def result(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    fmt: Annotated[str, typer.Option("--format", help="md or json")] = "md",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write to a file")] = None,
) -> None:
    """A finished job's markdown or JSON."""
    from app.db import session_scope
    from app.models import Job
    from app.storage import get_storage

    _ready()
    if fmt not in ("md", "json"):
        console.print("[red]--format is md or json[/red]")
        raise typer.Exit(2)
    with session_scope() as session:
        job = session.get(Job, job_id)
    if job is None:
        console.print(f"[red]no job {job_id}[/red]")
        raise typer.Exit(2)
    key = job.result_markdown_key if fmt == "md" else job.result_json_key
    if key is None:
        console.print(
            f"[red]job {job_id} has no result: it is {job.state}"
            f"{': ' + job.error if job.error else ''}[/red]"
        )
        raise typer.Exit(1)
    storage = get_storage()
    if output is not None and fmt == "md":
        from app.runner import write_markdown

        # Figures go beside the file, as `pagemill run` writes them, so the links work.
        document = json.loads(storage.get(job.result_json_key)) if job.result_json_key else {}
        write_markdown(job, {"pages": [], **document}, output, storage)
        return
    data = storage.get(key)
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        output.write_bytes(data)


@cli.command()
def cancel(ident: Annotated[str, typer.Argument(metavar="JOB|BATCH")]) -> None:
    """Stop a job, or every unfinished job of a batch: queued pages are skipped, nothing
    more is recognized or assembled, and the job ends `cancelled`. Exits 1 when there was
    nothing to cancel (the job had ended)."""
    from app import control
    from app.models import JobState

    _ready()
    outcome = control.cancel_job(ident)
    if outcome is not None:
        if outcome.state != JobState.CANCELLED:
            console.print(f"job {ident} has already ended: it is {outcome.state}")
            raise typer.Exit(1)
        print(f"job {ident} {'cancelled' if outcome.changed else 'was already cancelled'}")
        return
    batch = control.cancel_batch(ident)
    if batch is None:
        console.print(f"[red]no job or batch {ident}[/red]")
        raise typer.Exit(2)
    print(
        f"batch {ident}: {len(batch.cancelled)} jobs cancelled"
        f", {len(batch.already)} were already cancelled"
    )
    if not batch.cancelled and not batch.already:
        raise typer.Exit(1)


@cli.command()
def retry(
    ident: Annotated[str, typer.Argument(metavar="JOB|BATCH")],
    failed: Annotated[
        bool,
        typer.Option(
            "--failed",
            help="reprocess only the pages that failed or were cancelled (the only mode, "
            "so the default)",
        ),
    ] = True,
) -> None:
    """Reprocess an ended job's failed and cancelled pages (or the whole job if its document
    never opened), then assemble it again. Exits 1 when there was nothing to retry."""
    from app import control, jobs

    _ready()

    def describe(job_id: str, plan: jobs.RetryPlan) -> str:
        if plan.prepare:
            return f"job {job_id}: the whole document queued again"
        if plan.pages:
            return f"job {job_id}: {len(plan.pages)} pages queued again"
        return f"job {job_id}: assembly queued again"

    plan = control.retry_job(ident)
    if plan is not None:
        if plan.empty:
            console.print(f"job {ident} has nothing to retry: it is {plan.before}")
            raise typer.Exit(1)
        print(describe(ident, plan))
        return
    plans = control.retry_batch(ident)
    if plans is None:
        console.print(f"[red]no job or batch {ident}[/red]")
        raise typer.Exit(2)
    for job_id, job_plan in plans.items():
        print(describe(job_id, job_plan))
    if not plans:
        console.print(f"batch {ident} has nothing to retry")
        raise typer.Exit(1)


@cli.command()
def top(
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="seconds between frames")
    ] = 2.0,
) -> None:
    """A live view: queue depths, workers and what they hold, pages per second over the
    last minute, recent failures. q or Ctrl-C quits."""
    from app.top import collect, live, render

    _ready()
    if once:
        Console().print(render(collect()))
        return
    live(interval)


@cli.command()
def run(
    docs: Annotated[list[str], typer.Argument(help="files, folders or globs")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder")] = Path("out"),
    mode: ModeOption = None,
    extract: ExtractOption = None,
    dpi: DpiOption = None,
    start_workers: Annotated[
        bool, typer.Option("--workers/--no-workers", help="start local workers (embedded)")
    ] = True,
    cpu_workers: Annotated[int | None, typer.Option(help="cpu worker processes")] = None,
    gpu_workers: Annotated[int | None, typer.Option(help="recognition worker processes")] = None,
    password: PasswordOption = None,
) -> None:
    """Process documents start to finish on this machine and write OUT/<name>.md and .json.

    With nothing configured it starts its own workers on a broker that needs no server,
    SQLite and a local storage folder, and stops them at the end.
    """
    from app.runner import run_documents

    _ready(migrate=True)
    options = _options(mode, extract, dpi, password)
    code = run_documents(
        _files(docs),
        docs,
        out,
        options,
        start_workers=start_workers and get_settings().embedded,
        cpu_workers=cpu_workers,
        gpu_workers=gpu_workers,
        console=console,
    )
    raise typer.Exit(code)


@cli.command()
def api(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Serve the HTTP API (uvicorn)."""
    import uvicorn

    from app.logs import configure_logging

    _ready()
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        "app.api.main:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,  # uvicorn's loggers go through pagemill's handler and format
        log_level=settings.log_level.lower(),
    )


@cli.command()
def worker(
    role: Annotated[str, typer.Argument(help="cpu, gpu or layout")],
    concurrency: Annotated[int | None, typer.Option(help="pool size")] = None,
    gpus: Annotated[
        str | None,
        typer.Option(help="gpu and layout roles: one worker process per listed GPU, e.g. 0,1,3"),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="probe: exit 0 only if this host's worker(s) of ROLE answer on their health "
            "port and their engine is healthy",
        ),
    ] = False,
) -> None:
    """Run a Celery worker for the cpu or gpu queue, restarted when it dies; `layout` serves
    the cpu queue with one batching layout engine per process (per GPU with --gpus)."""
    from app.processes import supervise, worker_command

    if role not in ("cpu", "gpu", "layout"):
        console.print("[red]role is cpu, gpu or layout[/red]")
        raise typer.Exit(2)
    devices = [d.strip() for d in (gpus or "").split(",") if d.strip()] if role != "cpu" else []
    if check:
        raise typer.Exit(_check_workers(max(1, len(devices))))
    _ready()
    settings = get_settings()
    if not devices:
        argv, env = worker_command(role, settings, concurrency=concurrency)
        raise typer.Exit(supervise([(argv, env)]))
    # One worker process and engine per GPU, each restarted on its own when it dies; its
    # unacknowledged messages go back to the queue.
    commands = []
    for index, device in enumerate(devices):
        argv, env = worker_command(
            role, settings, concurrency=concurrency, hostname=f"{role}{device}@%h", index=index
        )
        env["CUDA_VISIBLE_DEVICES"] = device
        if role == "layout":  # the one visible GPU
            env["PAGEMILL_LAYOUT_DEVICE"] = "cuda:0"
        commands.append((argv, env))
    raise typer.Exit(supervise(commands))


def _check_workers(count: int) -> int:
    """0 when each of the `count` workers started by one `pagemill worker` command on this
    host answers /healthz with 200 (ports PAGEMILL_WORKER_METRICS_PORT + index)."""
    import httpx

    base = get_settings().worker_metrics_port
    if not base:
        console.print("[red]PAGEMILL_WORKER_METRICS_PORT is 0: no health endpoint to ask[/red]")
        return 2
    code = 0
    for port in range(base, base + count):
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            healthy, detail = response.status_code == 200, response.text
        except httpx.HTTPError as exc:
            healthy, detail = False, f"no answer ({type(exc).__name__})"
        print(f"{port}\t{'ok' if healthy else 'unhealthy'}\t{detail}")
        code = code or (0 if healthy else 1)
    return code


@cli.command()
def sweeper(
    once: Annotated[
        bool, typer.Option("--once", help="one pass, print what it sent, exit")
    ] = False,
) -> None:
    """Find stuck work and send it again (lost messages, dead workers, a broker that lost
    its data). Runs Celery beat with the sweep every PAGEMILL_SWEEP_INTERVAL_SECONDS; run
    one per deployment."""
    from app.processes import supervise, sweeper_command

    _ready()
    settings = get_settings()
    if once:
        from app.sweeper import Sweeper

        print(json.dumps(Sweeper(settings).sweep()))
        return
    raise typer.Exit(supervise([sweeper_command(settings)]))


@cli.command()
def flower(
    address: Annotated[
        str, typer.Option("--address", "--host", help="bind address (all interfaces: 0.0.0.0)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 5555,
    basic_auth_file: Annotated[
        Path | None,
        typer.Option(
            help="a file holding user:password (else PAGEMILL_FLOWER_BASIC_AUTH); kept out of "
            "argv so `ps` never shows it"
        ),
    ] = None,
    unauthenticated: Annotated[
        bool, typer.Option("--unauthenticated", help="serve without any authentication")
    ] = False,
) -> None:
    """Run the Flower dashboard against pagemill's broker, with basic auth on every page
    (its /metrics too)."""
    from app.flower import check_credentials, run

    credentials = None
    if basic_auth_file is not None:
        credentials = basic_auth_file.read_text(encoding="utf-8").strip()
    elif (secret := get_settings().flower_basic_auth) is not None:
        credentials = secret.get_secret_value()
    if credentials is None and not unauthenticated:
        console.print(
            "[red]Flower needs credentials: set PAGEMILL_FLOWER_BASIC_AUTH=user:password or "
            "pass --basic-auth-file FILE (or --unauthenticated to serve without any)[/red]"
        )
        raise typer.Exit(2)
    if credentials is not None:
        try:
            check_credentials(credentials)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    run(address, port, credentials)


keys_cli = typer.Typer(help="API keys: each names a tenant.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant the key acts for")],
    name: Annotated[str | None, typer.Option("--name", help="a label, e.g. who holds it")] = None,
) -> None:
    """Create a key and print it. It is shown this once: only its hash is stored."""
    from app.keys import create_key

    _ready(migrate=True)
    created = create_key(_tenant(tenant), name)
    console.print(
        f"key {created.info.id} for tenant {created.info.tenant}; store it now, "
        "it is not shown again:"
    )
    print(created.key)


@keys_cli.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant's")] = None,
) -> None:
    """Every key, never the key itself: id, tenant, name, prefix, created, revoked, last use
    (tab-separated, one key a line)."""
    from app.keys import list_keys

    _ready(migrate=True)

    def when(moment: object) -> str:
        return f"{moment:%Y-%m-%d %H:%M:%S}" if moment is not None else "-"

    print("id\ttenant\tname\tprefix\tcreated\trevoked\tlast_used")
    for key in list_keys(tenant):
        row = (key.id, key.tenant, key.name or "-", key.prefix)
        times = (when(key.created_at), when(key.revoked_at), when(key.last_used_at))
        print("\t".join((*row, *times)))


@keys_cli.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke a key: the API refuses it from the next request on."""
    from app.keys import revoke_key

    _ready(migrate=True)
    if not revoke_key(key_id):
        console.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(2)
    console.print(f"key {key_id} revoked")


@cli.command("version")
def version() -> None:
    from importlib.metadata import version as dist_version

    print(json.dumps({"pagemill": dist_version("pagemill")}))
