"""The event stream's logic (app.events.stream) on snapshots given to it: which events it
sends, when it sends keep-alives, and when it ends. No database, no server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.events import Snapshot, stream
from app.settings import Settings


def _run(
    read: Callable[[], Snapshot | None], first: Snapshot, last: str | None, **limits: float
) -> list[str]:
    settings = Settings(
        events_poll_seconds=0.01,
        events_heartbeat_seconds=limits.get("heartbeat", 100.0),
        events_max_seconds=limits.get("max", 100.0),
    )

    async def collect() -> list[str]:
        return [chunk async for chunk in stream(read, first, last, settings)]

    return asyncio.run(collect())


def _snap(state: str, done: int) -> Snapshot:
    return Snapshot({"id": "j", "state": state, "pages_done": done})


def test_a_change_of_state_is_a_state_event_and_of_counts_a_progress_event() -> None:
    later = iter(
        [_snap("running", 0), _snap("running", 0), _snap("running", 2), _snap("succeeded", 2)]
    )
    chunks = _run(lambda: next(later), _snap("queued", 0), None)
    events = [c.split("\n")[1] for c in chunks if c.startswith("id: ")]
    assert events == ["event: state", "event: state", "event: progress", "event: state"]
    assert chunks[0].startswith("retry: ")


def test_a_reconnect_with_the_current_id_gets_only_what_changes_after_it() -> None:
    first = _snap("running", 1)
    later = iter([_snap("running", 1), _snap("partial", 1)])
    chunks = _run(lambda: next(later), first, first.id)
    sent = [c for c in chunks if c.startswith("id: ")]
    assert len(sent) == 1 and '"state":"partial"' in sent[0]


def test_an_idle_stream_gets_keep_alives_and_ends_after_its_maximum() -> None:
    quiet = _snap("queued", 0)
    chunks = _run(lambda: quiet, quiet, None, heartbeat=0.05, max=0.5)
    assert sum(1 for c in chunks if c.startswith("id: ")) == 1  # nothing changed
    assert chunks.count(": keep-alive\n\n") >= 2


def test_a_job_that_disappears_ends_the_stream_with_gone() -> None:
    chunks = _run(lambda: None, _snap("queued", 0), None)
    assert chunks[-1].startswith("id: gone\nevent: gone")
