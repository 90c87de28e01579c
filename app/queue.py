"""The Celery app: queues `cpu` and `gpu`, explicit routes, late acknowledgement, JSON.

`app` sends tasks by name and never imports `workers`, so the API carries no ML library.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from app.errors import translate
from app.settings import Settings, get_settings

PREPARE = "pagemill.prepare"
PAGE = "pagemill.page"
RECOGNIZE = "pagemill.recognize"
ASSEMBLE = "pagemill.assemble"
INGEST = "pagemill.ingest"  # app.ingest: reads a bulk source a slice at a time
WEBHOOK = "pagemill.webhook"  # app.webhooks: one attempt at a callback
SWEEP = "pagemill.sweep"  # app.sweeper, on its own queue: never behind a deep cpu queue

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
SWEEPER_QUEUE = "sweeper"

ROUTES: dict[str, str] = {
    PREPARE: CPU_QUEUE,
    PAGE: CPU_QUEUE,
    ASSEMBLE: CPU_QUEUE,
    INGEST: CPU_QUEUE,
    RECOGNIZE: GPU_QUEUE,
    WEBHOOK: CPU_QUEUE,
}


def celery_config(settings: Settings) -> dict[str, Any]:
    exchange = Exchange("pagemill", type="direct")
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        "broker_connection_retry_on_startup": True,
        "task_queues": [
            Queue(CPU_QUEUE, exchange, routing_key=CPU_QUEUE),
            Queue(GPU_QUEUE, exchange, routing_key=GPU_QUEUE),
            Queue(SWEEPER_QUEUE, exchange, routing_key=SWEEPER_QUEUE),
        ],
        "task_default_queue": CPU_QUEUE,
        "task_default_exchange": "pagemill",
        "task_routes": {
            name: {"queue": queue, "routing_key": queue}
            for name, queue in {**ROUTES, SWEEP: SWEEPER_QUEUE}.items()
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,  # state lives in the database, not in Celery
        "task_ignore_result": True,
        # A message is acknowledged only after its task finished; a worker killed mid-task
        # leaves it on the broker for another worker.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task killed by its hard time limit goes back to the queue (its deliveries are
        # counted in the database) instead of being acknowledged with its work undone.
        "task_acks_on_failure_or_timeout": False,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,  # for Flower
        "task_send_sent_event": True,
    }
    if settings.broker_url is None:
        config["broker_transport"] = "app.filesystem_broker:Transport"
        folder = str(settings.broker_dir)
        config["broker_transport_options"] = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "processed_folder": folder + "-processed",
            "control_folder": folder + "-control",
            "store_processed": False,
            "polling_interval": settings.broker_polling_interval,
        }
    else:
        # Redis redelivers an unacknowledged message after this long; longer than any task.
        timeout = settings.broker_visibility_timeout
        config["broker_transport_options"] = {
            "visibility_timeout": timeout,
            # Look for expired unacknowledged messages every few seconds (kombu's default
            # is every 100 s): a cheap range query on one sorted set.
            "unacked_restore_interval": max(1, min(10, timeout // 4)),
            "unacked_restore_throttle": 1,
        }
        if settings.broker_key_prefix:
            config["broker_transport_options"]["global_keyprefix"] = settings.broker_key_prefix
    return config


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if settings.broker_url is None:
        settings.broker_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("pagemill")
    app.conf.update(celery_config(settings))
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return make_celery()


def send(name: str, *args: Any, retry_seconds: float = 0.0, countdown: float | None = None) -> None:
    """Enqueue a task by name on its queue. With retry_seconds, keeps trying about once a
    second for that long while the broker is unreachable (workers ride through a broker
    restart; the API answers at once). With countdown, it runs no sooner than that many
    seconds from now. BrokerUnavailable when it could not be sent."""
    queue = ROUTES[name]
    options: dict[str, Any] = {}
    if countdown is not None:
        options["countdown"] = countdown
    if retry_seconds > 0:
        options["retry_policy"] = {
            "max_retries": max(1, round(retry_seconds)),
            "interval_start": 0.5,
            "interval_step": 0.5,
            "interval_max": 1.0,
        }
    try:
        get_celery().send_task(
            name, args=list(args), queue=queue, routing_key=queue, retry=True, **options
        )
    except Exception as exc:
        found = translate(exc)
        if found is exc:
            raise
        raise found from exc


def __getattr__(name: str) -> Celery:
    # `celery -A app.queue:celery_app flower` finds the app without building it at import.
    if name == "celery_app":
        return get_celery()
    raise AttributeError(name)


def queue_depths(settings: Settings | None = None) -> dict[str, int]:
    """Messages waiting in each queue, not counting those a worker holds. Redis: the length
    of the queue's list (the key KEDA's scalers read too); the embedded broker: its files."""
    settings = settings or get_settings()
    queues = (CPU_QUEUE, GPU_QUEUE)
    if settings.broker_url is None:
        folder = settings.broker_dir
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        return {q: sum(1 for n in names if n.endswith(f".{q}.msg")) for q in queues}
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return {q: int(client.llen(settings.broker_key_prefix + q)) for q in queues}
    finally:
        client.close()
