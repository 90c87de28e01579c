"""Logging: one configuration for every pagemill process, JSON or text, and the context
(job, page, task, tenant) that every line written while handling a message carries.

The context lives in contextvars, so each thread of a threads-pool worker and each prefork
child carries its own; `log_context` sets it for the duration of a task.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

CONTEXT_FIELDS = ("job_id", "page", "task", "tenant")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pagemill_log_context", default=None
)

TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s%(context)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(threadName)s %(message)s"


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Adds `fields` to every log line written inside the block (nested blocks merge)."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Adds fields to the current context, e.g. the tenant once the job row is loaded. The
    enclosing `log_context` drops them when it ends."""
    current = _context.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copies the current context onto each record: as attributes for the JSON formatter,
    and as one ` [job_id=… page=…]` suffix for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name in CONTEXT_FIELDS:
            if name in context:
                setattr(record, name, context[name])
        record.context = (
            " [" + " ".join(f"{k}={context[k]}" for k in CONTEXT_FIELDS if k in context) + "]"
            if context
            else ""
        )
        return True


def _formatter(fmt: Literal["json", "text"]) -> logging.Formatter:
    if fmt == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "context"],
        )
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(fmt: Literal["json", "text"] = "text", level: str = "INFO") -> None:
    """Replaces the root logger's handlers with one on stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that log request details at INFO (URLs with presigned signatures, SQL).
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
