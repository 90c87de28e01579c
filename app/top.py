"""`pagemill top`: a live view of the queues, the workers and what they hold, throughput
and recent failures.

Everything comes from cheap reads: the broker's queue lengths (app.queue.queue_depths),
the leases in the database (jobs and pages with held_by, and their heartbeats), pages that
finished in the last minute (through the pages (state, updated_at) index), and, when the
workers answer, Celery's `inspect stats` to name the worker each leasing process belongs to.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy import func
from sqlalchemy import select as sql_select

from app.db import session_scope
from app.models import Job, JobState, Page, PageState, utcnow
from app.settings import Settings, get_settings

WINDOW_SECONDS = 60
FAILURES_SHOWN = 8
_FINISHED_PAGES = [PageState.SUCCEEDED, PageState.FAILED]
_ACTIVE_JOBS = [s for s in JobState if not s.terminal]


@dataclass
class Holder:
    """One process holding work, by its lease (host:pid)."""

    process: str
    worker: str | None = None  # the Celery worker it belongs to, when it answered
    held: list[str] = field(default_factory=list)
    heartbeat_at: datetime | None = None


@dataclass
class Frame:
    at: datetime
    queues: dict[str, int] | str  # depth by queue, or why the broker could not be read
    jobs_by_state: dict[str, int]
    holders: list[Holder]
    idle_workers: list[str]
    pages_last_minute: int
    failed_last_minute: int
    failures: list[tuple[datetime | None, str, str]]  # when, what, error
    lease_seconds: float

    @property
    def pages_per_second(self) -> float:
        return self.pages_last_minute / WINDOW_SECONDS


def _worker_pids(settings: Settings, timeout: float) -> dict[str, set[int]] | None:
    """Each answering Celery worker's process ids (its own and its pool's); None when the
    broker cannot broadcast (the embedded one) or none answered in time."""
    if settings.broker_url is None or timeout <= 0:
        return None
    from app.queue import get_celery

    try:
        stats = get_celery().control.inspect(timeout=timeout).stats() or {}
    except Exception:
        return None
    pids: dict[str, set[int]] = {}
    for name, info in stats.items():
        found = {int(info.get("pid", 0))}
        processes = (info.get("pool") or {}).get("processes") or []
        found.update(int(p) for p in processes)
        pids[name] = found
    return pids


def collect(settings: Settings | None = None, inspect_timeout: float = 1.0) -> Frame:
    settings = settings or get_settings()
    from app.queue import queue_depths

    now = utcnow()
    queues: dict[str, int] | str
    try:
        queues = queue_depths(settings)
    except Exception as exc:
        queues = f"broker unreachable: {type(exc).__name__}"
    since = now - timedelta(seconds=WINDOW_SECONDS)
    with session_scope() as session:
        jobs_by_state = {
            str(state): int(count)
            for state, count in session.execute(
                sql_select(Job.state, func.count())
                .where(Job.state.in_(_ACTIVE_JOBS))
                .group_by(Job.state)
            )
        }
        held_jobs = session.execute(
            sql_select(Job.id, Job.state, Job.held_by, Job.heartbeat_at).where(
                Job.held_by.is_not(None), Job.state.in_(_ACTIVE_JOBS)
            )
        ).all()
        held_pages = session.execute(
            sql_select(Page.job_id, Page.number, Page.state, Page.held_by, Page.heartbeat_at)
            .where(
                Page.state.in_([PageState.RUNNING, PageState.RECOGNIZING]),
                Page.held_by.is_not(None),
            )
            .order_by(Page.job_id, Page.number)
        ).all()
        finished = dict(
            session.execute(
                sql_select(Page.state, func.count())
                .where(Page.state.in_(_FINISHED_PAGES), Page.updated_at >= since)
                .group_by(Page.state)
            ).all()
        )
        failed_pages = session.execute(
            sql_select(Page.updated_at, Page.job_id, Page.number, Page.error)
            .where(Page.state == PageState.FAILED)
            .order_by(Page.updated_at.desc())
            .limit(FAILURES_SHOWN)
        ).all()
        failed_jobs = session.execute(
            sql_select(Job.finished_at, Job.id, Job.filename, Job.error)
            .where(Job.state == JobState.FAILED)
            .order_by(Job.created_at.desc())
            .limit(FAILURES_SHOWN)
        ).all()
    holders: dict[str, Holder] = {}

    def note(held_by: str, what: str, beat: datetime | None) -> None:
        process = ":".join(held_by.split(":")[:2])
        holder = holders.setdefault(process, Holder(process))
        holder.held.append(what)
        if beat is not None and (holder.heartbeat_at is None or beat > holder.heartbeat_at):
            holder.heartbeat_at = beat

    for job_id, job_state, held_by, beat in held_jobs:
        stage = "prepare" if job_state == JobState.QUEUED else "assemble"
        note(held_by or "", f"{stage} {job_id[:8]}", beat)
    for job_id, number, page_state, held_by, beat in held_pages:
        stage = "recognize" if page_state == PageState.RECOGNIZING else "page"
        note(held_by or "", f"{stage} {job_id[:8]}/{number}", beat)
    idle: list[str] = []
    workers = _worker_pids(settings, inspect_timeout)
    if workers is not None:
        for name, pids in sorted(workers.items()):
            owned = [h for h in holders.values() if _pid(h.process) in pids]
            for holder in owned:
                holder.worker = name
            if not owned:
                idle.append(name)
    failures = [
        (when, f"page {job_id[:8]}/{number}", error or "")
        for when, job_id, number, error in failed_pages
    ]
    failures += [
        (when, f"job {job_id[:8]} {name}", error or "") for when, job_id, name, error in failed_jobs
    ]
    failures.sort(key=lambda f: f[0] or now, reverse=True)
    return Frame(
        at=now,
        queues=queues,
        jobs_by_state=jobs_by_state,
        holders=sorted(holders.values(), key=lambda h: (h.worker or "", h.process)),
        idle_workers=idle,
        pages_last_minute=sum(int(n) for n in finished.values()),
        failed_last_minute=int(finished.get(PageState.FAILED, 0)),
        failures=failures[:FAILURES_SHOWN],
        lease_seconds=settings.lease_seconds,
    )


def _pid(process: str) -> int:
    pid = process.rpartition(":")[2]
    return int(pid) if pid.isdigit() else -1


def render(frame: Frame, *, live: bool = False) -> RenderableType:
    """One screen: a header line, then queues, workers and failures."""
    header = Text.assemble(
        ("pagemill top", "bold"),
        f"  {frame.at:%H:%M:%S} UTC   ",
        (f"{frame.pages_per_second:.2f} pages/s", "bold green"),
        f" over the last minute ({frame.pages_last_minute} pages, "
        f"{frame.failed_last_minute} failed)",
        "   press q to quit" if live else "",
    )
    queues = Table("queue", "waiting", title="queues", title_justify="left")
    if isinstance(frame.queues, str):
        queues.add_row(Text(frame.queues, style="red"), "")
    else:
        for name, depth in frame.queues.items():
            queues.add_row(name, str(depth))
    for state in ("queued", "running", "assembling"):
        queues.add_row(f"jobs {state}", str(frame.jobs_by_state.get(state, 0)))
    workers = Table(
        "worker", "process", "holds", "heartbeat", title="workers", title_justify="left"
    )
    for holder in frame.holders:
        age = (frame.at - holder.heartbeat_at).total_seconds() if holder.heartbeat_at else None
        beat = "?" if age is None else f"{age:.0f} s ago"
        style = "red" if age is not None and age > frame.lease_seconds else ""
        held = ", ".join(holder.held[:6]) + (
            f" (+{len(holder.held) - 6})" if len(holder.held) > 6 else ""
        )
        workers.add_row(
            Text(holder.worker or "?"), holder.process, Text(held), Text(beat, style=style)
        )
    for name in frame.idle_workers:
        workers.add_row(Text(name), "", Text("idle", style="dim"), "")
    if not frame.holders and not frame.idle_workers:
        workers.add_row("", "", Text("nothing held", style="dim"), "")
    failures = Table("when", "what", "error", title="recent failures", title_justify="left")
    for when, what, error in frame.failures:
        failures.add_row(
            f"{when:%H:%M:%S}" if when else "", Text(what), Text(error[:120], style="red")
        )
    if not frame.failures:
        failures.add_row("", Text("none", style="dim"), "")
    return Group(header, queues, workers, failures)


@contextlib.contextmanager
def _keys() -> Iterator[bool]:
    """Reads single key presses from a terminal (no Enter needed) while in use; False when
    stdin is no terminal."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(seconds: float, keys: bool) -> bool:
    """Waits up to `seconds`; True when q was pressed meanwhile."""
    if not keys:
        time.sleep(seconds)
        return False
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:
        return os.read(sys.stdin.fileno(), 16).strip().lower().startswith(b"q")
    return False


def live(interval: float, settings: Settings | None = None) -> None:
    """Redraws every `interval` seconds until q or Ctrl-C."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with _keys() as keys, Live(console=console, screen=False, auto_refresh=False) as view:
        try:
            while True:
                view.update(render(collect(settings), live=True), refresh=True)
                if _quit_pressed(interval, keys):
                    return
        except KeyboardInterrupt:
            return
