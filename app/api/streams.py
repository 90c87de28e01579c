"""The HTTP side of server-sent events (app.events): the response and its OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, HTTPException
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from app.events import Snapshot, stream
from app.schemas import ErrorOut
from app.settings import Settings

# The id of the last event a reconnecting client saw (browsers send it by themselves).
LastEventId = Annotated[
    str | None, Header(alias="Last-Event-ID", max_length=64, description="resume after this event")
]

EVENTS_DESCRIPTION = (
    "Server-sent events: `state` when the state changes, `progress` when the page counts "
    "do; each event's data is the JSON snapshot and its id a digest of it. A comment line "
    "every few seconds keeps an idle stream open; the stream ends after the event that "
    "shows the end."
)


def event_schema(snapshot: type[BaseModel]) -> dict[str, Any]:
    """One event as OpenAPI describes an event stream's items: its fields, with `data` a
    JSON snapshot (the stream's comment lines carry no event)."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": ["state", "progress", "gone"]},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": snapshot.model_json_schema(),
            },
        },
    }


def event_responses(what: str, snapshot: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": EVENTS_DESCRIPTION,
            "content": {"text/event-stream": {"schema": event_schema(snapshot)}},
        },
        204: {"description": f"the {what} had ended and Last-Event-ID is its final event"},
        404: {"model": ErrorOut, "description": f"no such {what}"},
        503: {"model": ErrorOut, "description": "database unavailable"},
    }


def event_response(
    read: Callable[[], Snapshot | None],
    what: str,
    ident: str,
    last_event_id: str | None,
    settings: Settings,
) -> Response:
    """404 for an id outside the caller's tenant; 204 when the client saw the end."""
    first = read()
    if first is None:
        raise HTTPException(404, f"no {what} {ident}")
    if first.terminal and last_event_id == first.id:
        return Response(status_code=204)
    return StreamingResponse(
        stream(read, first, last_event_id, settings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
