"""A worker's own HTTP endpoint, served by its main process: `/metrics` (Prometheus, every
process of the worker added up) and `/healthz` (200 while the worker can do its work), which
`pagemill worker ROLE --check` and the Kubernetes probes ask.

Healthy means: the threads or solo pool's engine (in this process) says it is healthy; a
prefork pool has live children (each builds and warms its engines at start, and exits 3
if it cannot).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app import metrics
from app.processes import child_pids

log = logging.getLogger(__name__)


def health(role: str, pool: str) -> tuple[bool, dict[str, Any]]:
    """Whether this worker can do its work, and what that was judged on."""
    details: dict[str, Any] = {"role": role, "pool": pool, "pid": os.getpid()}
    try:
        if pool == "prefork":
            children = len(child_pids(os.getpid()))
            details["children"] = children
            return children > 0, details
        from app.settings import get_settings
        from workers.engines import registry

        settings = get_settings()
        engine: Any = (
            registry.recognizer(settings) if role == "gpu" else registry.layout_engine(settings)
        )
        details["engine"] = f"{engine.name}/{engine.version}"
        healthy = bool(engine.healthy())
        details["engine_healthy"] = healthy
        return healthy, details
    except Exception as exc:
        details["error"] = f"{type(exc).__name__}: {exc}"
        return False, details


class _Handler(BaseHTTPRequestHandler):
    role = "cpu"
    pool = "prefork"

    def do_GET(self) -> None:
        if self.path == "/metrics":
            body, content_type = metrics.render()
            self._reply(200, body, content_type)
        elif self.path == "/healthz":
            ok, details = health(self.role, self.pool)
            details["status"] = "ok" if ok else "unhealthy"
            self._reply(200 if ok else 503, json.dumps(details).encode(), "application/json")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


def serve(port: int, role: str, pool: str, host: str = "0.0.0.0") -> None:
    """Serves /metrics and /healthz from a daemon thread. A port in use is reported and
    skipped: the worker works without its endpoint rather than not at all."""
    handler = type("Handler", (_Handler,), {"role": role, "pool": pool})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        log.error("metrics and health endpoint not served on port %s: %s", port, exc)
        return
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="pagemill-monitor", daemon=True).start()
    log.info("metrics and health on http://%s:%s/ (/metrics, /healthz)", host, port)
