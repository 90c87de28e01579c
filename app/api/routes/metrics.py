"""/metrics: Prometheus metrics of this API process and the depth of every queue."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.metrics import QueueDepth, render
from app.queue import queue_depths

router = APIRouter(tags=["metrics"])
_queue_depth = QueueDepth(queue_depths)


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics() -> Response:
    """Open like /healthz: counts and timings only, nothing about any tenant's content."""
    body, content_type = render(_queue_depth)
    return Response(body, media_type=content_type)
