"""`pagemill run`: a whole corpus start to finish on one machine, workers included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from app import jobs
from app.db import session_scope
from app.media import BIDI_CONTROLS, valid_unicode
from app.models import Job, JobState
from app.processes import start, stop, worker_command
from app.schemas import JobOptions, JobOut
from app.settings import get_settings
from app.status import ANY_TENANT, job_out, load_job
from app.storage import ObjectStorage, get_storage, relink_images, result_key

# Bytes per name in OUT: the longest input name (255 bytes) plus ".images" must still fit.
_MAX_PART_BYTES = 200


def safe_part(part: str) -> str:
    """One path component of an output name: control characters and backslashes become _,
    undecodable bytes U+FFFD, over-long names are cut (the rest stays recognizable);
    never empty, "." or ".."."""
    cleaned = "".join(
        "_" if c in "/\\" or c in BIDI_CONTROLS or unicodedata.category(c) == "Cc" else c
        for c in valid_unicode(part)
    )
    cut = cleaned.encode("utf-8")[:_MAX_PART_BYTES].decode("utf-8", "ignore")
    return "_" if cut.strip() in ("", ".", "..") else cut


def _output_names(files: list[Path], roots: list[str]) -> dict[Path, Path]:
    """OUT-relative names without suffix: the path under the folder it was found in. Names
    that would still clash keep their suffix (scan.pdf, scan.png), then take a counter, so
    no result overwrites another. Every part is made safe (safe_part), so a name stays
    inside OUT."""
    folders = [Path(r).resolve() for r in roots if Path(r).is_dir()]
    relative: dict[Path, Path] = {}
    for path in files:
        resolved = path.resolve()
        base = next((f for f in folders if resolved.is_relative_to(f)), resolved.parent)
        parts = resolved.relative_to(base).parts
        *folders_of, filename = parts
        suffix = Path(filename).suffix  # a long name loses the end of its stem, not its suffix
        tail = safe_part(suffix)[:16] if suffix else ""
        stem = safe_part(filename[: len(filename) - len(suffix)])
        relative[path] = Path(*map(safe_part, folders_of), stem + tail)
    stems = Counter(r.with_suffix("") for r in relative.values())
    names: dict[Path, Path] = {}
    taken: set[Path] = set()
    for path, rel in relative.items():
        name = rel.with_suffix("") if stems[rel.with_suffix("")] == 1 else rel
        candidate, counter = name, 2
        while candidate in taken:
            candidate = name.with_name(f"{name.name}-{counter}")
            counter += 1
        taken.add(candidate)
        names[path] = candidate
    return names


def wait_with_progress(
    ids: list[str],
    console: Console,
    poll: float = 0.5,
    on_idle: Callable[[], None] | None = None,
) -> dict[str, str]:
    """Polls until every job is finished, with a progress bar of pages; returns states."""
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pages"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("processing", total=None)
        while True:
            with session_scope() as session:
                rows = session.execute(
                    select(Job.id, Job.state, Job.pages_done, Job.pages_total).where(
                        Job.id.in_(ids)
                    )
                ).all()
            states = {row.id: row.state for row in rows}
            done = sum(row.pages_done for row in rows)
            totals = [row.pages_total for row in rows if row.pages_total is not None]
            finished = sum(1 for s in states.values() if JobState(s).terminal)
            bar.update(
                task,
                completed=done,
                total=sum(totals) if totals else None,
                description=f"{finished}/{len(ids)} documents",
            )
            if finished == len(ids):
                return states
            if on_idle is not None:
                on_idle()
            time.sleep(poll)


def jobs_table(jobs: Sequence[JobOut]) -> Table:
    """Jobs as `pagemill status` and `pagemill run` list them."""
    table = Table("job", "file", "state", "pages", "error")
    for job in jobs:
        total = job.progress.pages_total
        pages = f"{job.progress.pages_done}/{total if total is not None else '?'}"
        # Text, not markup: a file named "[bold]x" or "[/]" is shown as it is.
        table.add_row(job.id, Text(job.filename), job.state, pages, Text(job.error or ""))
    return table


def run_documents(
    files: list[Path],
    roots: list[str],
    out: Path,
    options: JobOptions,
    *,
    start_workers: bool,
    cpu_workers: int | None,
    gpu_workers: int | None,
    console: Console,
) -> int:
    """Submits `files` (found under `roots`) as one batch, waits, writes the results to
    `out`. Returns the exit code: 0, 1 if a document failed, 3 if a worker died."""
    from app.submit import submit_file

    names = _output_names(files, roots)
    processes: list[subprocess.Popen[bytes]] = []
    # `kill` of the run must stop its workers too (they run in sessions of their own):
    # SIGTERM unwinds like Ctrl-C, through the `finally` below.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if start_workers:
            processes = _start_workers(cpu_workers, gpu_workers)
        batch_id = jobs.create_batch(f"run {out}")
        submitted = {submit_file(p, batch_id=batch_id, options=options).job_id: p for p in files}
        jobs.seal_batch(batch_id)
        console.print(f"{len(files)} documents submitted as batch {batch_id}")
        wait_with_progress(list(submitted), console, on_idle=lambda: _check_alive(processes))
        stop(processes, idle=True)
    except WorkerDied as exc:
        console.print(f"[red]{exc}[/red]")
        return 3
    finally:
        stop(processes)
    return _write_outputs(submitted, names, out, console)


class WorkerDied(RuntimeError):
    pass


def _exit_on_signal(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def _check_alive(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is not None:
            raise WorkerDied(
                f"a worker exited with code {process.returncode}; see "
                f"{get_settings().data_dir / 'logs'}"
            )


def _start_workers(
    cpu_workers: int | None, gpu_workers: int | None
) -> list[subprocess.Popen[bytes]]:
    settings = get_settings()
    cores = os.cpu_count() or 1
    logs = settings.data_dir / "logs"
    processes = []
    # One process per core on each queue, each model on one thread: pages overlap across
    # processes instead of two multi-threaded processes fighting over the same cores.
    # No metrics endpoint: nothing scrapes a run on one machine, and ports stay free.
    settings = settings.model_copy(update={"worker_metrics_port": 0})
    for role, count in (("cpu", cpu_workers or cores), ("gpu", gpu_workers or cores)):
        argv, env = worker_command(role, settings, concurrency=count)
        if not settings.onnx_threads:
            env["PAGEMILL_ONNX_THREADS"] = "1"
        processes.append(start(argv, env, log_path=logs / f"worker-{role}.log"))
    return processes


def _write_outputs(
    submitted: dict[str, Path], names: dict[Path, Path], out: Path, console: Console
) -> int:
    storage = get_storage()
    with session_scope() as session:
        rows = {job_id: load_job(session, job_id, ANY_TENANT) for job_id in submitted}
    failed = []
    for job_id, path in submitted.items():
        job = rows[job_id]
        assert job is not None
        if job.result_markdown_key and job.result_json_key:
            target = out / names[path]
            assert target.resolve().is_relative_to(out.resolve()), target
            target.parent.mkdir(parents=True, exist_ok=True)
            document = storage.get(job.result_json_key)
            write_markdown(
                job,
                json.loads(document),
                target.with_name(target.name + ".md"),
                storage,
            )
            target.with_name(target.name + ".json").write_bytes(document)
        if job.state != JobState.SUCCEEDED:
            failed.append(job_out(job))
    console.print(
        f"{len(submitted) - len(failed)} of {len(submitted)} documents succeeded; results in {out}/"
    )
    if failed:
        console.print(jobs_table(failed))
        return 1
    return 0


def write_markdown(job: Job, document: dict[str, Any], path: Path, storage: ObjectStorage) -> None:
    """A job's markdown at `path`, its figures (listed in its JSON `document`) in
    `<stem>.images/` beside it, and the markdown's links pointing there."""
    assert job.result_markdown_key is not None
    images_dir = f"{path.stem}.images"
    _copy_images(job, document, path.parent / images_dir, storage)
    markdown = storage.get(job.result_markdown_key).decode()
    path.write_text(relink_images(markdown, images_dir), encoding="utf-8")


def _copy_images(job: Job, document: dict[str, Any], folder: Path, storage: ObjectStorage) -> None:
    for page in document["pages"]:
        for region in page["regions"]:
            link = region.get("image")
            if link:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / Path(link).name).write_bytes(
                    storage.get(result_key(job.tenant, job.id, link))
                )
