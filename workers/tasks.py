"""The Celery tasks: thin shells that call workers.pipeline and send what it returns.

Errors fall in two kinds (app.errors). A TransientError (database, broker, storage or
recognition server unreachable) is retried with backoff for as long as the outage lasts:
the work waits, it is never dropped. Anything else is retried a bounded number of times,
counted in the database, and then ends as an error on that page or job.

A task holds a lease on its page or job while it works (held_by, heartbeat_at, refreshed by
a thread in each worker process), so `pagemill sweeper` can tell a dead holder's work from
work in progress, and a duplicate delivery of held work is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from app import jobs, logs, metrics, webhooks
from app.errors import EngineDead, TransientError, WorkHeld, translate
from app.ingest import Outcome, ingest_step
from app.queue import ASSEMBLE, INGEST, PAGE, PREPARE, RECOGNIZE, WEBHOOK, get_celery, send
from app.settings import get_settings
from workers import pipeline

log = logging.getLogger(__name__)
celery_app = get_celery()


def _backoff(retries: int) -> float:
    """Exponential, at most a minute, with jitter: the tasks an outage stopped together do
    not all come back in the same second."""
    base = get_settings().retry_backoff_seconds
    ceiling = float(min(60.0, base * (2 ** min(retries, 6))))
    return ceiling * random.uniform(0.5, 1.0)


# -- leases: what this process holds, and the heartbeat that keeps them alive ---------------

_held_lock = threading.Lock()
_held_jobs: dict[str, str] = {}  # job id -> holder (the thread)
_held_pages: dict[tuple[str, int], str] = {}
_heartbeat_pid: int | None = None


def _hold(job_id: str, number: int | None, holder: str) -> None:
    with _held_lock:
        if number is None:
            _held_jobs[job_id] = holder
        else:
            _held_pages[(job_id, number)] = holder
    _ensure_heartbeat()


def _unhold(job_id: str, number: int | None) -> None:
    with _held_lock:
        if number is None:
            _held_jobs.pop(job_id, None)
        else:
            _held_pages.pop((job_id, number), None)


def _beat_once() -> None:
    with _held_lock:
        holders = sorted({*_held_jobs.values(), *_held_pages.values()})
        job_ids, pages = list(_held_jobs), list(_held_pages)
    if holders:
        jobs.heartbeat(holders, job_ids, pages)


def _heartbeat_loop() -> None:
    while True:
        time.sleep(get_settings().heartbeat_seconds)
        try:
            _beat_once()
        except Exception as exc:  # the database may be down; the next beat tries again
            log.warning("heartbeat not written: %s", exc)


def _ensure_heartbeat() -> None:
    """One heartbeat thread per process, started on its first claim (a forked pool child
    does not inherit its parent's thread)."""
    global _heartbeat_pid
    with _held_lock:
        if _heartbeat_pid == os.getpid():
            return
        _heartbeat_pid = os.getpid()
    threading.Thread(target=_heartbeat_loop, name="pagemill-heartbeat", daemon=True).start()


# -- the task wrapper -------------------------------------------------------------------


def _send_all(messages: list[pipeline.Message]) -> None:
    # Inside the task's error handling: a broker that refuses the next message makes the
    # delivery transient (retried), never a task that ends with its successor unsent.
    wait = get_settings().send_retry_seconds
    for name, args in messages:
        send(name, *args, retry_seconds=wait)


def _retry(task: Task, exc: BaseException) -> None:
    try:
        retry = task.retry(exc=exc, countdown=_backoff(task.request.retries), throw=False)
    except Reject as refused:
        # Celery could not publish the retry (the broker is down) and would drop this
        # message. Hand it back instead: requeued when the broker takes it, else it stays
        # unacknowledged until the broker restores it, and the sweeper is the last net.
        log.warning("%s: retry not sent (%s); the message goes back", task.name, refused)
        raise Reject(str(exc), requeue=True) from exc
    raise retry


def _run(
    task: Task,
    work: Callable[[], list[pipeline.Message]],
    lease: tuple[str, int | None],
    on_error: Callable[[str], None] | None = None,
    on_transient: Callable[[], None] | None = None,
) -> None:
    job_id, number = lease
    holder = jobs.holder_id()
    _hold(job_id, number, holder)
    try:
        try:
            _send_all(work())
        except Exception as raw:
            raise translate(raw) from raw
    except WorkHeld as exc:
        log.info("%s: duplicate delivery dropped: %s", task.name, exc)
        return
    except EngineDead as exc:
        metrics.ERRORS.labels(type(exc).__name__).inc()
        _engine_died(exc)
    except TransientError as exc:
        log.warning("transient error in %s, retrying: %s", task.name, exc)
        metrics.RETRIES.labels(type(exc).__name__).inc()
        if on_transient is not None:
            with contextlib.suppress(Exception):  # the database may be what is down
                on_transient()
        _retry(task, exc)
    except Exception as exc:  # SoftTimeLimitExceeded included
        log.exception("%s failed", task.name)
        metrics.ERRORS.labels(type(exc).__name__).inc()
        if on_error is not None:
            with contextlib.suppress(Exception):
                on_error(f"{type(exc).__name__}: {exc}")
        # Bounded by the attempts counted in the database, not by Celery's counter.
        _retry(task, exc)
    finally:
        _unhold(job_id, number)
        with contextlib.suppress(Exception):  # a lease left behind expires on its own
            jobs.release(job_id, number, holder)


# max_retries=None: Celery never gives up on a message (it would drop it with its page
# unfinished); outages wait, and the attempts counted in the database end the rest.
TASK_OPTIONS: dict[str, Any] = {"bind": True, "acks_late": True, "max_retries": None}


@celery_app.task(name=PREPARE, **TASK_OPTIONS)
def prepare(self: Task, job_id: str) -> None:
    _run(
        self,
        lambda: pipeline.prepare_document(job_id, get_settings()),
        (job_id, None),
        on_transient=lambda: jobs.uncount_attempt(job_id),
    )


@celery_app.task(name=PAGE, soft_time_limit=600, time_limit=660, **TASK_OPTIONS)
def page(self: Task, job_id: str, number: int) -> None:
    _run(
        self,
        lambda: pipeline.process_page(job_id, number, get_settings()),
        (job_id, number),
        lambda error: jobs.note_page_error(job_id, number, error),
        lambda: jobs.uncount_attempt(job_id, number),
    )


@celery_app.task(name=RECOGNIZE, **TASK_OPTIONS)
def recognize(self: Task, job_id: str, number: int) -> None:
    _run(
        self,
        lambda: pipeline.recognize_page(job_id, number, get_settings()),
        (job_id, number),
        lambda error: jobs.note_page_error(job_id, number, error),
        lambda: jobs.uncount_attempt(job_id, number, recognize=True),
    )


@celery_app.task(name=ASSEMBLE, soft_time_limit=1800, time_limit=1900, **TASK_OPTIONS)
def assemble(self: Task, job_id: str) -> None:
    # Deliveries are counted in the database (jobs.begin_assemble), like the other stages.
    _run(
        self,
        lambda: pipeline.assemble_job(job_id, get_settings()),
        (job_id, None),
        lambda error: jobs.note_job_error(job_id, error),
        lambda: jobs.uncount_attempt(job_id, assemble=True),
    )


@celery_app.task(name=INGEST, **TASK_OPTIONS)
def ingest(self: Task, batch_id: str) -> None:
    """Reads a slice of a bulk source (app.ingest), then sends itself again to go on from
    the cursor the slice recorded; a redelivery after a crash goes on from there too."""
    settings = get_settings()
    try:
        try:
            outcome = ingest_step(batch_id, settings, seconds=settings.ingest_slice_seconds)
            if outcome in (Outcome.MORE, Outcome.WAIT):
                wait = 10.0 if outcome == Outcome.WAIT else None
                send(INGEST, batch_id, retry_seconds=settings.send_retry_seconds, countdown=wait)
        except Exception as raw:
            raise translate(raw) from raw
    except TransientError as exc:
        log.warning("transient error in %s, retrying: %s", self.name, exc)
        metrics.RETRIES.labels(type(exc).__name__).inc()
        _retry(self, exc)
    except Exception as exc:
        log.exception("%s failed", self.name)
        metrics.ERRORS.labels(type(exc).__name__).inc()
        jobs.end_ingest(batch_id, f"{type(exc).__name__}: {exc}")


@celery_app.task(name=WEBHOOK, **TASK_OPTIONS)
def webhook(self: Task, delivery_id: int) -> None:
    """One attempt at a callback (app.webhooks); a failed one sends the next, delayed by its
    backoff. Its attempts are counted in the database, so an outage of the database or the
    broker only delays it (retried like any task), and the sweeper re-sends a lost one."""
    try:
        following = webhooks.deliver(delivery_id)
        if following is not None:
            send(
                WEBHOOK,
                following.delivery_id,
                countdown=following.delay,
                retry_seconds=get_settings().send_retry_seconds,
            )
    except Exception as raw:
        exc = translate(raw)
        if not isinstance(exc, TransientError):
            raise
        log.warning("webhook %s: %s, retrying", delivery_id, exc)
        _retry(self, exc)


EXIT_ENGINE_DEAD = 3


def _engine_died(exc: BaseException) -> None:
    """The engine is gone: hand the message back to the broker and end the process
    non-zero, so the supervisor starts a fresh worker with a fresh engine."""
    log.critical("engine died, the worker exits: %s", exc)
    # Leave time for the rejections of every message this worker holds to reach the broker;
    # whatever does not is still unacknowledged and returns after the visibility timeout.
    threading.Timer(2.0, os._exit, args=(EXIT_ENGINE_DEAD,)).start()
    raise Reject(str(exc), requeue=True)


def _preload(**_: Any) -> None:
    """Builds the engines before the first message, so a gpu worker reports ready only with a
    warm engine and a broken engine stops the worker at start-up, not mid-job."""
    role = os.environ.get("PAGEMILL_WORKER_ROLE")
    if role is None:
        return
    from workers.engines import registry

    if not logging.getLogger().handlers:
        # worker_init runs before Celery sets up logging; the warm-up must still be visible.
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s] %(message)s")
    settings = get_settings()
    try:
        if role == "gpu":
            engine = registry.recognizer(settings)
            engine.warmup()
            log.info("recognizer %s/%s is warm", engine.name, engine.version)
        elif role in ("cpu", "layout"):
            layout = registry.layout_engine(settings)
            layout.warmup()
            log.info("layout engine %s/%s is warm", layout.name, layout.version)
            lines = registry.line_detector(settings)
            if lines is not None:
                lines.warmup()
                log.info("line detector %s/%s is warm", lines.name, lines.version)
    except Exception:
        # Celery only logs errors in signal handlers; a worker without a working engine
        # must not report ready and take messages.
        log.critical("the %s engine failed to start; the worker exits", role, exc_info=True)
        logging.shutdown()
        os._exit(EXIT_ENGINE_DEAD)


def _require_schema(**_: Any) -> None:
    """A worker started any way (`pagemill worker` or plain `celery worker`) refuses an
    un-migrated database before it takes a message."""
    from app.db import DatabaseNotMigrated, close_connections, require_migrated

    try:
        require_migrated(get_settings())
    except DatabaseNotMigrated as exc:
        print(f"pagemill worker: {exc}", file=sys.stderr, flush=True)
        os._exit(2)
    # The prefork pool forks after this: the main process keeps no connection to hand down.
    close_connections()


def _fresh_pool(**_: Any) -> None:
    """A forked pool child starts with a connection pool of its own: sharing a socket with
    its parent or a sibling corrupts both ("server closed the connection unexpectedly")."""
    from app.db import forget_inherited_connections

    forget_inherited_connections()


worker_init.connect(_require_schema, weak=False)
worker_process_init.connect(_fresh_pool, weak=False)
# Prefork children build their own engines; threads and solo pools build them once.
worker_process_init.connect(_preload, weak=False)


def _preload_in_main_process(**kwargs: Any) -> None:
    # The threads and solo pools run tasks in the main process: build the engines there, once.
    if os.environ.get("PAGEMILL_POOL") in ("threads", "solo"):
        _preload(**kwargs)


worker_init.connect(_preload_in_main_process, weak=False)


def _logging(**_: Any) -> None:
    """pagemill's format (PAGEMILL_LOG_FORMAT=json|text) for Celery's lines and ours."""
    settings = get_settings()
    logs.configure_logging(settings.log_format, settings.log_level)


def _serve_monitor(**_: Any) -> None:
    """The worker's /metrics and /healthz, from its main process, before the pool starts:
    the metric files of an earlier run of this worker are cleared first."""
    role = os.environ.get("PAGEMILL_WORKER_ROLE")
    port = get_settings().worker_metrics_port
    if role is None or not port:
        return
    from workers import monitor

    folder = metrics.multiprocess_dir()
    if folder is not None:
        metrics.prepare_multiprocess_dir(folder)
    monitor.serve(port, role, os.environ.get("PAGEMILL_POOL", "prefork"))


_log_scopes: dict[str, contextlib.ExitStack] = {}


def _log_scope_open(task_id: str, task: Task, args: tuple[Any, ...], **_: Any) -> None:
    """Every line written while a task runs carries its job, page and task — Celery's own
    "succeeded" and "raised" lines too, which it writes before task_postrun."""
    scope = contextlib.ExitStack()
    page = args[1] if len(args) > 1 else None
    scope.enter_context(
        logs.log_context(job_id=args[0] if args else None, page=page, task=task.name)
    )
    _log_scopes[task_id] = scope


def _log_scope_close(task_id: str, **_: Any) -> None:
    scope = _log_scopes.pop(task_id, None)
    if scope is not None:
        scope.close()


def _child_exited(**_: Any) -> None:
    metrics.mark_process_dead(os.getpid())


setup_logging.connect(_logging, weak=False)
task_prerun.connect(_log_scope_open, weak=False)
task_postrun.connect(_log_scope_close, weak=False)
worker_init.connect(_serve_monitor, weak=False)
worker_process_shutdown.connect(_child_exited, weak=False)
