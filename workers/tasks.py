"""The Celery tasks: thin shells that call workers.pipeline and send what it returns.

Errors fall in two kinds. Transient ones (database, broker, storage or recognition server
unreachable) are retried with backoff for as long as the outage lasts: the work waits, it is
never dropped. Anything else is retried a bounded number of times, counted in the database,
and then ends as an error on that page or job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_init, worker_process_init

from app import jobs
from app.errors import EngineDead, TransientError, translate
from app.queue import ASSEMBLE, PAGE, PREPARE, RECOGNIZE, get_celery, send
from app.settings import get_settings
from workers import pipeline

log = logging.getLogger(__name__)
celery_app = get_celery()


def _backoff(retries: int) -> float:
    base = get_settings().retry_backoff_seconds
    return float(min(60.0, base * (2 ** min(retries, 6))))


def _run(
    task: Task,
    work: Callable[[], list[pipeline.Message]],
    on_error: Callable[[str], None] | None = None,
    on_transient: Callable[[], None] | None = None,
) -> None:
    try:
        try:
            messages = work()
        except Exception as raw:
            raise translate(raw) from raw
    except EngineDead as exc:
        _engine_died(exc)
    except TransientError as exc:
        log.warning("transient error in %s, retrying: %s", task.name, exc)
        if on_transient is not None:
            with contextlib.suppress(Exception):  # the database may be what is down
                on_transient()
        raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc
    except Exception as exc:  # SoftTimeLimitExceeded included
        log.exception("%s failed", task.name)
        if on_error is not None:
            on_error(f"{type(exc).__name__}: {exc}")
        # Bounded by the attempts counted in the database, not by Celery's counter.
        raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc
    for name, args in messages:
        send(name, *args)


# max_retries=None: Celery never gives up on a message (it would drop it with its page
# unfinished); outages wait, and the attempts counted in the database end the rest.
TASK_OPTIONS: dict[str, Any] = {"bind": True, "acks_late": True, "max_retries": None}


@celery_app.task(name=PREPARE, **TASK_OPTIONS)
def prepare(self: Task, job_id: str) -> None:
    _run(
        self,
        lambda: pipeline.prepare_document(job_id, get_settings()),
        on_transient=lambda: jobs.uncount_attempt(job_id),
    )


@celery_app.task(name=PAGE, soft_time_limit=600, time_limit=660, **TASK_OPTIONS)
def page(self: Task, job_id: str, number: int) -> None:
    _run(
        self,
        lambda: pipeline.process_page(job_id, number, get_settings()),
        lambda error: jobs.note_page_error(job_id, number, error),
        lambda: jobs.uncount_attempt(job_id, number),
    )


@celery_app.task(name=RECOGNIZE, **TASK_OPTIONS)
def recognize(self: Task, job_id: str, number: int) -> None:
    _run(
        self,
        lambda: pipeline.recognize_page(job_id, number, get_settings()),
        lambda error: jobs.note_page_error(job_id, number, error),
        lambda: jobs.uncount_attempt(job_id, number, recognize=True),
    )


@celery_app.task(name=ASSEMBLE, soft_time_limit=1800, time_limit=1900, **TASK_OPTIONS)
def assemble(self: Task, job_id: str) -> None:
    settings = get_settings()

    def give_up(error: str) -> None:
        if self.request.retries + 1 >= settings.task_max_attempts:
            jobs.fail_job(job_id, f"assembly failed: {error}")

    _run(self, lambda: pipeline.assemble_job(job_id, settings), give_up)


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
            warmup = getattr(engine, "warmup", None)
            if warmup is not None:
                warmup()
            log.info("recognizer %s/%s is warm", engine.name, engine.version)
        elif role in ("cpu", "layout"):
            layout = registry.layout_engine(settings)
            layout.warmup()
            log.info("layout engine %s/%s is warm", layout.name, layout.version)
    except Exception:
        # Celery only logs errors in signal handlers; a worker without a working engine
        # must not report ready and take messages.
        log.critical("the %s engine failed to start; the worker exits", role, exc_info=True)
        logging.shutdown()
        os._exit(EXIT_ENGINE_DEAD)


def _require_schema(**_: Any) -> None:
    """A worker started any way (`pagemill worker` or plain `celery worker`) refuses an
    un-migrated database before it takes a message."""
    from app.db import DatabaseNotMigrated, require_migrated

    try:
        require_migrated(get_settings())
    except DatabaseNotMigrated as exc:
        print(f"pagemill worker: {exc}", file=sys.stderr, flush=True)
        os._exit(2)


worker_init.connect(_require_schema, weak=False)
# Prefork children build their own engines; threads and solo pools build them once.
worker_process_init.connect(_preload, weak=False)


def _preload_in_main_process(**kwargs: Any) -> None:
    # The threads and solo pools run tasks in the main process: build the engines there, once.
    if os.environ.get("PAGEMILL_POOL") in ("threads", "solo"):
        _preload(**kwargs)


worker_init.connect(_preload_in_main_process, weak=False)
