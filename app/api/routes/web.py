"""The web page at `/`: enter an API key, drop files, watch them, read the results.

Four static files from the `app/web` package folder, no build step. The page keeps the key
in sessionStorage and sends it as a header on every call (never in a URL); a strict
Content-Security-Policy allows only these files' own script and style, so text from a
hostile document could not run even if the page let it into its markup (it does not)."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# blob: for page images and figures, which the page fetches with its key and shows locally.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> Response:
    data = resources.files("app").joinpath("web", name).read_bytes()
    return Response(data, media_type=ASSETS[name], headers=HEADERS)


@router.get("/")
def page() -> Response:
    return _asset("index.html")


@router.get("/web/{name}")
def asset(name: Annotated[str, Path(max_length=32)]) -> Response:
    if name not in ASSETS or name == "index.html":
        raise HTTPException(404, "no such file")
    return _asset(name)
