"""Prometheus metrics of every pagemill process.

Workers run several processes (prefork children) whose metrics are added up at scrape time:
prometheus_client's multiprocess mode, with one folder per worker named by
PROMETHEUS_MULTIPROC_DIR, set by `app.processes.worker_command` before the process starts
(the client reads it when it is first imported). The worker's main process serves them on
PAGEMILL_WORKER_METRICS_PORT; the API serves its own on /metrics, with the queue depths.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

DOCUMENTS = Counter("pagemill_documents", "Documents (jobs) that ended, by final state", ["state"])
PAGES = Counter("pagemill_pages", "Pages that ended, by final state", ["state"])
REGIONS = Counter(
    "pagemill_regions", "Regions recorded, by task, source and state", ["task", "source", "state"]
)
STAGE_SECONDS = Histogram(
    "pagemill_stage_seconds",
    "Time of each stage: render, layout, text_layer, queue_wait, recognize, record, assemble",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
ENGINE_IN_FLIGHT = Gauge(
    "pagemill_engine_requests_in_flight",
    "Recognition requests inside an engine now",
    ["engine"],
    multiprocess_mode="livesum",
)
ENGINE_TOKENS = Counter(
    "pagemill_engine_tokens",
    "Tokens through a recognition engine (rate() gives tokens per second)",
    ["engine", "kind"],
)
ERRORS = Counter("pagemill_errors", "Errors in tasks, by kind (exception class)", ["kind"])
RETRIES = Counter("pagemill_retries", "Task deliveries sent back to wait, by reason", ["reason"])


def observe(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage).observe(max(0.0, seconds))


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir(folder: Path) -> None:
    """An empty folder for a worker's metric files (old files would add dead processes'
    counts to the new worker's)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def mark_process_dead(pid: int) -> None:
    """Drops a finished prefork child's live gauges (its counters are kept)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def registry() -> CollectorRegistry:
    """Every process of this worker added up (multiprocess mode), or this process alone."""
    if multiprocess_dir() is None:
        from prometheus_client import REGISTRY

        return REGISTRY
    from prometheus_client import multiprocess

    found = CollectorRegistry()
    multiprocess.MultiProcessCollector(found)
    return found


def render(*extra: Collector) -> tuple[bytes, str]:
    """One scrape: this process's (or worker's) metrics, then the `extra` collectors."""
    body = generate_latest(registry())
    if extra:
        more = CollectorRegistry()
        for collector in extra:
            more.register(collector)
        body += generate_latest(more)
    return body, CONTENT_TYPE_LATEST


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Serves this worker's metrics over HTTP from a daemon thread."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=registry())


class QueueDepth(Collector):
    """pagemill_queue_depth{queue}: messages waiting in each queue, read from the broker at
    scrape time."""

    def __init__(self, depths: Callable[[], dict[str, int]]) -> None:
        self.depths = depths

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pagemill_queue_depth", "Messages waiting in each queue", labels=["queue"]
        )
        try:
            for queue, depth in self.depths().items():
                family.add_metric([queue], depth)
        except Exception:  # the broker is down: no sample rather than a failed scrape
            pass
        return [family]
