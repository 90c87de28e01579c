"""The `pagemill` command: submit, status, result, run, and the server processes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from app.settings import get_settings

if TYPE_CHECKING:
    from app.schemas import JobOptions, JobOut

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


def main() -> None:
    cli()


def _ready(*, migrate: bool = False) -> None:
    """Fails with the command to run when the database lacks the schema."""
    from app.db import DatabaseNotMigrated, require_migrated
    from app.db import migrate as run_migrations

    settings = get_settings()
    if migrate and settings.database_url is None:
        run_migrations(settings)  # embedded SQLite: pagemill owns it
        return
    try:
        require_migrated(settings)
    except DatabaseNotMigrated as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _options(mode: str | None, extract: str | None, dpi: int | None) -> JobOptions:
    from pydantic import ValidationError

    from app.schemas import JobOptions

    template = extract
    if extract is not None:
        candidate = Path(extract[1:] if extract.startswith("@") else extract)
        if extract.startswith("@") or (
            not extract.lstrip().startswith("{") and candidate.is_file()
        ):
            template = candidate.read_text(encoding="utf-8")
    try:
        # `mode` is a plain string here; pydantic checks it against the allowed modes.
        return JobOptions(text_mode=mode, extract=template, dpi=dpi)  # type: ignore[arg-type]
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]invalid options: {exc}[/red]")
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


@cli.command()
def migrate() -> None:
    """Bring the database to the newest schema."""
    from app.db import migrate as run_migrations

    run_migrations(get_settings())
    console.print("database is at the newest schema")


@cli.command()
def submit(
    paths: Annotated[list[str], typer.Argument(help="files, folders (recursive) or globs")],
    batch: Annotated[str | None, typer.Option("--batch", help="group the jobs as a batch")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait until every job ends")] = False,
    mode: ModeOption = None,
    extract: ExtractOption = None,
    dpi: DpiOption = None,
) -> None:
    """Store documents and enqueue them. Prints one job id per line (then the batch id)."""
    from app import jobs
    from app.submit import submit_file

    _ready(migrate=True)
    options = _options(mode, extract, dpi)
    files = _files(paths)
    batch_id = jobs.create_batch(batch) if batch or len(files) > 1 else None
    ids = []
    for path in files:
        submitted = submit_file(path, batch_id=batch_id, options=options)
        ids.append(submitted.job_id)
        print(f"{submitted.job_id}\t{path}")
    if batch_id:
        print(f"batch\t{batch_id}")
    if wait:
        from app.runner import wait_with_progress

        states = wait_with_progress(ids, console)
        _print_summary(ids)
        if any(state != "succeeded" for state in states.values()):
            raise typer.Exit(1)


@cli.command()
def status(
    ident: Annotated[str, typer.Argument(metavar="JOB|BATCH")],
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
    pages: Annotated[bool, typer.Option("--pages", help="include each page")] = False,
) -> None:
    """State, progress, timings and errors of a job or a batch."""
    from app.db import session_scope
    from app.status import batch_out, job_out, load_batch, load_job

    _ready()
    with session_scope() as session:
        job = load_job(session, ident)
        if job is not None:
            out = job_out(job, with_pages=pages or as_json)
            if as_json:
                print(out.model_dump_json(indent=2, by_alias=True))
            else:
                _print_job(out)
            return
        found = load_batch(session, ident)
        if found is None:
            console.print(f"[red]no job or batch {ident}[/red]")
            raise typer.Exit(2)
        batch = batch_out(found)
    if as_json:
        print(batch.model_dump_json(indent=2, by_alias=True))
        return
    console.print(
        f"batch {batch.id} {batch.name or ''}: [bold]{batch.state}[/bold]  "
        f"{batch.jobs_by_state}  pages {batch.progress.pages_done}/"
        f"{batch.progress.pages_total if batch.progress.pages_total is not None else '?'}"
    )
    _print_table(batch.jobs)


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
    for page in job.pages or []:
        if page.error:
            print(f"  page {page.number}: {page.state}: {page.error}")


def _print_table(jobs: Sequence[JobOut]) -> None:
    from app.runner import jobs_table

    Console().print(jobs_table(jobs))


def _print_summary(ids: list[str]) -> None:
    from app.db import session_scope
    from app.status import job_out, load_job

    with session_scope() as session:
        outs = [job_out(job) for i in ids if (job := load_job(session, i)) is not None]
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
    data = get_storage().get(key)
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        output.write_bytes(data)


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
) -> None:
    """Process documents start to finish on this machine and write OUT/<name>.md and .json.

    With nothing configured it starts its own workers on a broker that needs no server,
    SQLite and a local storage folder, and stops them at the end.
    """
    from app.runner import run_documents

    _ready(migrate=True)
    options = _options(mode, extract, dpi)
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

    _ready()
    settings = get_settings()
    uvicorn.run(
        "app.api.main:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
    )


@cli.command()
def worker(
    role: Annotated[str, typer.Argument(help="cpu or gpu")],
    concurrency: Annotated[int | None, typer.Option(help="pool size")] = None,
    gpus: Annotated[
        str | None, typer.Option(help="gpu role: one worker process per listed GPU, e.g. 0,1,3")
    ] = None,
) -> None:
    """Run a Celery worker for the cpu or gpu queue, restarted when it dies."""
    from app.processes import supervise, worker_command

    _ready()
    settings = get_settings()
    if role not in ("cpu", "gpu"):
        console.print("[red]role is cpu or gpu[/red]")
        raise typer.Exit(2)
    if gpus is None or role != "gpu":
        argv, env = worker_command(role, settings, concurrency=concurrency)
        raise typer.Exit(supervise([(argv, env)]))
    # One worker process and engine per GPU, each restarted on its own when it dies; its
    # unacknowledged messages go back to the queue.
    commands = []
    for device in [d.strip() for d in gpus.split(",") if d.strip()]:
        argv, env = worker_command(
            role, settings, concurrency=concurrency, hostname=f"gpu{device}@%h"
        )
        commands.append((argv, {**env, "CUDA_VISIBLE_DEVICES": device}))
    raise typer.Exit(supervise(commands))


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
    port: Annotated[int, typer.Option(help="port")] = 5555,
    basic_auth: Annotated[str | None, typer.Option(help="user:password")] = None,
) -> None:
    """Run the Flower dashboard against pagemill's broker."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "app.queue:celery_app",
        "flower",
        f"--port={port}",
    ]
    if basic_auth:
        argv.append(f"--basic-auth={basic_auth}")
    os.execv(argv[0], argv)


@cli.command("version")
def version() -> None:
    from importlib.metadata import version as dist_version

    print(json.dumps({"pagemill": dist_version("pagemill")}))
