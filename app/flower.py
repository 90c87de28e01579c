"""Flower, the Celery dashboard, run by `pagemill flower` with authentication on every page.

Flower checks credentials only on its views and API: /metrics (task names, worker names,
queue activity) answers anyone. Here every handler but static files and /healthcheck (which
says only "OK", for probes) asks for the credentials first. The credentials reach Flower
through this process's environment (FLOWER_BASIC_AUTH), never through argv, so `ps` does
not show them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Handlers left open: static assets and the liveness probe.
OPEN_HANDLERS = ("StaticFileHandler", "Healthcheck")


def check_credentials(credentials: str) -> str:
    """`user:password[,user:password...]`, or ValueError."""
    for pair in credentials.split(","):
        user, _, password = pair.partition(":")
        if not user or not password:
            raise ValueError("basic auth credentials are user:password[,user:password...]")
    return credentials


class _RequireCredentials:
    """Mixed in before a Flower handler: a request without valid credentials is 401 before
    the handler runs. Flower's get_current_user raises 401 on missing or wrong basic auth."""

    def prepare(self) -> Any:
        from tornado.web import HTTPError

        if not self.current_user:  # type: ignore[attr-defined]
            raise HTTPError(401)
        return super().prepare()  # type: ignore[misc]


def protect_handlers(handlers: list[Any]) -> None:
    """Replaces, in place, every handler class in Flower's URL table (`flower.urls.handlers`,
    which Flower's application reads) by one that requires the credentials."""
    from tornado.web import URLSpec

    for position, entry in enumerate(handlers):
        cls = entry.handler_class if isinstance(entry, URLSpec) else entry[1]
        if cls.__name__ in OPEN_HANDLERS or issubclass(cls, _RequireCredentials):
            continue
        protected = type(f"Authenticated{cls.__name__}", (_RequireCredentials, cls), {})
        if isinstance(entry, URLSpec):
            handlers[position] = URLSpec(entry.regex.pattern, protected, entry.kwargs, entry.name)
        else:
            handlers[position] = (entry[0], protected, *entry[2:])


def run(address: str, port: int, credentials: str | None) -> None:
    """Runs Flower in this process against pagemill's broker; never returns.
    `credentials` None means unauthenticated (the caller asked for it explicitly)."""
    import flower.urls
    from celery.bin.celery import main as celery_main

    if credentials is None:
        os.environ.pop("FLOWER_BASIC_AUTH", None)
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    else:
        os.environ["FLOWER_BASIC_AUTH"] = check_credentials(credentials)
        os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
        protect_handlers(flower.urls.handlers)
    sys.argv = [
        "celery",
        "-A",
        "app.queue:celery_app",
        "flower",
        f"--address={address}",
        f"--port={port}",
    ]
    celery_main()
