"""What each task does, as plain functions: load, call the engines, store, change state.

Each returns the messages to send next as (task name, args) pairs; the Celery tasks in
workers.tasks send them. So the whole flow runs and is tested without a broker.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import jobs, logs, metrics
from app.models import Job, JobState, PageState, RegionSource, RegionState
from app.queue import ASSEMBLE, PAGE, RECOGNIZE
from app.settings import Settings
from app.storage import (
    crops_key,
    get_storage,
    image_link,
    original_key,
    page_image_key,
    result_key,
    work_prefix,
)
from workers import assemble
from workers.crops import (
    Quad,
    bundle_crops,
    crop_region,
    crop_with_lines,
    encode_png,
    unbundle_crops,
    unbundle_lines,
)
from workers.documents import (
    PDF,
    DocumentError,
    describe_unsupported,
    open_pdf,
    page_sizes,
    render_page,
    sniff_media_type,
)
from workers.engines import registry
from workers.engines.base import EngineUnavailable
from workers.engines.types import (
    LayoutRegion,
    RecognitionRequest,
    RecognitionResult,
    RecognitionTask,
)
from workers.labels import route_region, routing_table
from workers.lines import TextLine, line_share, place_lines
from workers.previews import page_image

log = logging.getLogger(__name__)

Message = tuple[str, tuple[Any, ...]]
EXTRACT = "extract"  # the task of an information-extraction region (a whole page)


# -- originals -------------------------------------------------------------------------


def fetch_original(tenant: str, sha256: str, settings: Settings) -> Path:
    """The original on local disk. Pages of one document share one download per worker,
    and the cache folder is kept under a size cap by evicting the least recently used."""
    folder = (settings.data_dir / "cache" / "originals").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sha256
    if path.exists():
        os.utime(path)
        return path
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
    os.close(fd)
    try:
        get_storage(settings).download(original_key(tenant, sha256), Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _evict(folder, keep=path, limit_bytes=2 * 1024**3)
    return path


def _evict(folder: Path, keep: Path, limit_bytes: int) -> None:
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_atime,
    )
    total = sum(p.stat().st_size for p in files)
    for path in files:
        if total <= limit_bytes:
            break
        if path != keep:
            total -= path.stat().st_size
            path.unlink(missing_ok=True)


def _media_type(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(1024)
    media_type = sniff_media_type(head)
    if media_type is None:
        raise DocumentError(describe_unsupported(head))
    return media_type


# -- prepare ---------------------------------------------------------------------------


def prepare_document(job_id: str, settings: Settings) -> list[Message]:
    """Opens and validates the document, records its pages, fans out one task per page."""
    job = jobs.begin_prepare(job_id)
    if job is None:
        return []
    logs.bind(tenant=job.tenant)
    if job.attempts > settings.task_max_attempts:
        jobs.fail_job(job_id, f"gave up after {job.attempts - 1} attempts to open the document")
        return []
    try:
        path = fetch_original(job.tenant, job.content_sha256, settings)
        media_type = _media_type(path)
        sizes = page_sizes(
            path,
            media_type,
            settings.max_pages_per_document,
            password=_password(job, settings),
            max_image_pixels=settings.max_image_pixels,
        )
    except DocumentError as exc:
        jobs.fail_job(job_id, str(exc))
        return []
    pages = jobs.set_pages(job_id, [jobs.PageSize(size.width_pt, size.height_pt) for size in sizes])
    log.info("prepared: %s, %d pages, %d to process", media_type, len(sizes), len(pages))
    return [(PAGE, (job_id, number)) for number in pages]


def _check_region_count(count: int, what: str, settings: Settings) -> None:
    if count > settings.max_regions_per_page:
        raise DocumentError(
            f"too many regions: {what} {count} (the limit is "
            f"{settings.max_regions_per_page}, PAGEMILL_MAX_REGIONS_PER_PAGE)"
        )


def _password(job: Job, settings: Settings) -> str | None:
    """The job's document password, decrypted only in memory, for as long as it is used."""
    if not job.password_ciphertext:
        return None
    from app.passwords import SecretKeyMissing, decrypt_password

    try:
        return decrypt_password(job.password_ciphertext, settings)
    except SecretKeyMissing as exc:
        raise DocumentError(str(exc)) from None


# -- page ------------------------------------------------------------------------------


def _finish_page(
    job_id: str, number: int, *, error: str | None = None, recognize_ms: float | None = None
) -> list[Message]:
    if jobs.complete_page(job_id, number, error=error, recognize_ms=recognize_ms):
        return [(ASSEMBLE, (job_id,))]
    return []


def _assemble_if_ready(job_id: str) -> list[Message]:
    return [(ASSEMBLE, (job_id,))] if jobs.ready_for_assembly(job_id) else []


def _drop_if_cancelled(job_id: str, settings: Settings) -> None:
    """Deletes a cancelled job's work objects, including any a task in flight wrote after
    the cancel call deleted them."""
    job = jobs.get_job(job_id)
    if job is not None and job.state == JobState.CANCELLED:
        get_storage(settings).delete_prefix(work_prefix(job.tenant, job_id))


def process_page(job_id: str, number: int, settings: Settings) -> list[Message]:
    """Render → layout → order → route → text layer or crop; one region batch to the gpu."""
    page = jobs.claim_page(job_id, number)
    if page is None:
        _drop_if_cancelled(job_id, settings)
        return _assemble_if_ready(job_id)
    if page.state == PageState.RECOGNIZING:
        # Layout was recorded by an earlier delivery; its region batch may have been lost.
        return [(RECOGNIZE, (job_id, number))]
    if page.attempts > settings.task_max_attempts:
        reason = page.error or "the worker was lost each time"
        return _finish_page(
            job_id, number, error=f"gave up after {page.attempts - 1} attempts: {reason}"
        )
    job = page.job
    logs.bind(tenant=job.tenant)
    try:
        pending = _layout_page(job, number, settings)
    except DocumentError as exc:
        return _finish_page(job_id, number, error=str(exc))
    if pending is None:  # the page ended (its job cancelled) while it was rendered
        _drop_if_cancelled(job_id, settings)
        return _assemble_if_ready(job_id)
    if pending:
        return [(RECOGNIZE, (job_id, number))]
    return _finish_page(job_id, number)


@dataclass(frozen=True, slots=True)
class PageOptions:
    text_mode: str
    dpi: int
    extract: str | None

    @classmethod
    def of(cls, job: Job, settings: Settings) -> PageOptions:
        options = job.options or {}
        return cls(
            text_mode=options.get("text_mode") or settings.text_mode,
            dpi=int(options.get("dpi") or settings.render_dpi),
            extract=options.get("extract"),
        )


def _layout_page(job: Job, number: int, settings: Settings) -> int | None:
    """Does a page's cpu work and records it; returns how many regions need recognition,
    None when the page had ended meanwhile (cancelled) and nothing was recorded."""
    options = PageOptions.of(job, settings)
    storage = get_storage(settings)
    path = fetch_original(job.tenant, job.content_sha256, settings)
    media_type = job.media_type
    assert media_type is not None, "prepare refuses documents of no known type"

    password = _password(job, settings)
    started = time.perf_counter()
    rendered = render_page(
        path,
        media_type,
        number,
        options.dpi,
        settings.render_max_pixels,
        password=password,
        timeout=settings.render_timeout_seconds,
        max_image_pixels=settings.max_image_pixels,
    )
    render_ms = (time.perf_counter() - started) * 1000
    metrics.observe("render", render_ms / 1000)
    image = rendered.image
    height, width = image.shape[:2]
    if settings.page_image_max_side:
        storage.put(
            page_image_key(job.tenant, job.id, number),
            page_image(image, settings.page_image_max_side),
            "image/jpeg",
        )

    layout_ms = 0.0
    held: list[list[TextLine]] = []
    if options.extract:
        regions = [
            LayoutRegion(label="page", bbox=(0.0, 0.0, float(width), float(height)), score=1.0)
        ]
        layout_name = "none"
    else:
        engine = registry.layout_engine(settings)
        started = time.perf_counter()
        found = engine.detect(image)
        _check_region_count(len(found), "layout found", settings)
        layout_ms = (time.perf_counter() - started) * 1000
        metrics.observe("layout", layout_ms / 1000)
        layout_name = f"{engine.name}/{engine.version}"
        started = time.perf_counter()
        detector = registry.line_detector(settings)
        lines = detector.detect(image) if detector is not None else []
        regions, held = place_lines(found, lines, width, height, first_page=number == 1)
        _check_region_count(len(regions), "layout and text lines made", settings)
        if detector is None:
            held = []  # not looked for: the recognizer finds each crop's lines itself
        else:
            metrics.observe("lines", time.perf_counter() - started)
            layout_name += f"+{detector.name}"

    started = time.perf_counter()
    text_layer, texts = _text_layer(
        path, media_type, number, rendered.scale, regions, options, password
    )
    if text_layer is not None:
        metrics.observe("text_layer", time.perf_counter() - started)
    routes = routing_table(settings.label_routes)
    rows: list[dict[str, Any]] = []
    crops = {}
    lines_of: dict[int, list[Quad]] = {}
    for index, region in enumerate(regions):
        share = line_share(region.bbox, held[index]) if held else 0.0
        route = None if options.extract else route_region(region, routes, width, height, share)
        task = route.task.value if route else EXTRACT
        row: dict[str, Any] = {
            "index": index,
            "label": region.label,
            "source_label": region.source_label,
            "note": route.note if route else None,
            "task": task,
            "score": region.score,
            "bbox": [float(v) for v in region.bbox],
            "polygon": [list(p) for p in region.polygon] if region.polygon else None,
            "state": RegionState.DONE,
        }
        text = texts.get(index)
        if task == RecognitionTask.ABANDON:
            row["source"] = RegionSource.NONE
        elif task == RecognitionTask.SKIP:
            key = result_key(job.tenant, job.id, image_link(number, index))
            storage.put(key, encode_png(crop_region(image, region.bbox, 0)), "image/png")
            row.update(source=RegionSource.IMAGE, image_key=key)
        elif text is not None:
            row.update(source=RegionSource.TEXT_LAYER, content=text, engine="pdfium-text-layer")
        elif held:
            crops[index], lines_of[index] = crop_with_lines(
                image, region.bbox, [line.quad for line in held[index]], settings.crop_margin
            )
            row["state"] = RegionState.PENDING
        else:
            crops[index] = crop_region(image, region.bbox, settings.crop_margin)
            row["state"] = RegionState.PENDING
        rows.append(row)
    if crops:
        bundle = bundle_crops(crops, lines_of)
        storage.put(crops_key(job.tenant, job.id, number), bundle, "application/zip")
    page_values = {
        "dpi": rendered.dpi,
        "width_px": width,
        "height_px": height,
        "render_ms": render_ms,
        "layout_ms": layout_ms,
        "layout_engine": layout_name,
        "text_layer": text_layer,
    }
    started = time.perf_counter()
    pending = jobs.record_layout(job.id, number, page_values, rows)
    metrics.observe("record", time.perf_counter() - started)
    if pending is None:
        return None
    log.info(
        "laid out: %d regions, %d to recognize (render %.0f ms, layout %.0f ms, %s)",
        len(rows),
        pending,
        render_ms,
        layout_ms,
        layout_name,
    )
    for row in rows:
        if row["state"] != RegionState.PENDING:
            metrics.REGIONS.labels(row["task"], row["source"], row["state"]).inc()
    return pending


def _text_layer(
    path: Path,
    media_type: str,
    number: int,
    scale: float,
    regions: list[LayoutRegion],
    options: PageOptions,
    password: str | None = None,
) -> tuple[str | None, dict[int, str]]:
    """The page's text-layer verdict (None when not consulted) and the text of each region
    index that takes it: in `auto` mode the regions that pass the trust check (so a
    born-digital page never waits for the recognizer), in `text` mode all; `ocr` none."""
    if media_type != PDF or options.text_mode == "ocr" or options.extract:
        return None, {}
    from workers.textlayer import read_region_texts

    with open_pdf(path, password) as pdf:
        layer = read_region_texts(pdf, number - 1, scale, [r.bbox for r in regions])
    texts = {
        index: found.text
        for index, found in enumerate(layer.regions)
        if options.text_mode == "text" or found.trusted
    }
    return layer.status, texts


# -- recognize -------------------------------------------------------------------------


def recognize_page(job_id: str, number: int, settings: Settings) -> list[Message]:
    """Recognizes every pending region of one page in one engine call, so a batching engine
    has them all in flight together, and records each result by its key."""
    claim = jobs.claim_recognition(job_id, number)
    if claim is None:
        _drop_if_cancelled(job_id, settings)
        return _assemble_if_ready(job_id)
    if claim.attempts > settings.task_max_attempts:
        return _finish_page(
            job_id, number, error=f"recognition gave up after {claim.attempts - 1} attempts"
        )
    if not claim.regions:
        return _finish_page(job_id, number)
    job = claim.job
    logs.bind(tenant=job.tenant)
    template = (job.options or {}).get("extract")
    bundle = get_storage(settings).get(crops_key(job.tenant, job_id, number))
    crops, lines = unbundle_crops(bundle), unbundle_lines(bundle)
    requests = [
        RecognitionRequest(
            key=str(region.index),
            image=crops[region.index],
            task=RecognitionTask.TEXT if region.task == EXTRACT else RecognitionTask(region.task),
            template=template if region.task == EXTRACT else None,
            lines=lines.get(region.index),
        )
        for region in claim.regions
    ]
    engine = registry.recognizer(settings)
    in_flight = metrics.ENGINE_IN_FLIGHT.labels(engine.name)
    in_flight.inc(len(requests))
    started = time.perf_counter()
    try:
        results = engine.recognize(requests)
    finally:
        in_flight.dec(len(requests))
    elapsed_ms = (time.perf_counter() - started) * 1000
    metrics.observe("recognize", elapsed_ms / 1000)
    log.info("recognized %d regions in %.0f ms (%s)", len(results), elapsed_ms, engine.name)
    engine_name = f"{engine.name}/{engine.version}"
    unreachable = [r for r in results if r.unavailable]
    started = time.perf_counter()
    jobs.record_region_results(
        job_id, number, [_result_row(r, engine_name) for r in results if not r.unavailable]
    )
    metrics.observe("record", time.perf_counter() - started)
    tasks = {str(region.index): region.task for region in claim.regions}
    for result in results:
        if not result.unavailable:
            state = RegionState.DONE if result.ok else RegionState.FAILED
            metrics.REGIONS.labels(tasks[result.key], RegionSource.OCR, state).inc()
        for kind in ("prompt", "completion"):
            tokens = getattr(result, f"{kind}_tokens")
            if tokens:
                metrics.ENGINE_TOKENS.labels(engine.name, kind).inc(tokens)
    if unreachable:
        # Those regions stay pending: the page goes back to the queue until the server is back.
        raise EngineUnavailable(
            f"{len(unreachable)} regions: {unreachable[0].error or 'server unreachable'}"
        )
    return _finish_page(job_id, number, recognize_ms=elapsed_ms)


def _result_row(result: RecognitionResult, engine_name: str) -> dict[str, Any]:
    return {
        "index": int(result.key),
        "state": RegionState.DONE if result.ok else RegionState.FAILED,
        "source": RegionSource.OCR,
        "content": result.content,
        "engine": engine_name,
        "error": result.error,
        "finish_reason": result.finish_reason,
        "truncated": result.truncated,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
    }


# -- assemble --------------------------------------------------------------------------


def assemble_job(job_id: str, settings: Settings) -> list[Message]:
    """Writes the job's markdown and JSON in reading order and sets its final state."""
    job = jobs.begin_assemble(job_id)
    if job is None:
        return []
    logs.bind(tenant=job.tenant)
    started = time.perf_counter()
    storage = get_storage(settings)
    pages = [_assembly_page(page) for page in job.pages]
    template = (job.options or {}).get("extract")
    document = assemble.document_json(job_id=job.id, filename=job.filename, pages=pages)
    if template:
        document["extraction"] = _extractions(pages, template)
        markdown = "```json\n" + json.dumps(document["extraction"], ensure_ascii=False, indent=2)
        markdown += "\n```\n"
    else:
        markdown = assemble.document_markdown(pages)
    md_key = result_key(job.tenant, job.id, "document.md")
    json_key = result_key(job.tenant, job.id, "document.json")
    storage.put(md_key, markdown.encode(), "text/markdown; charset=utf-8")
    storage.put(
        json_key,
        json.dumps(document, ensure_ascii=False, indent=1).encode(),
        "application/json",
    )
    if jobs.finish_job(job.id, md_key, json_key) == JobState.CANCELLED:
        # Cancelled while this assembly ran: the job has no result.
        storage.delete_prefix(md_key)
        storage.delete_prefix(json_key)
    storage.delete_prefix(work_prefix(job.tenant, job.id))
    metrics.observe("assemble", time.perf_counter() - started)
    log.info("assembled %d pages", len(pages))
    return []


def _assembly_page(page: Any) -> assemble.AssemblyPage:
    return assemble.AssemblyPage(
        number=page.number,
        width=page.width_px,
        height=page.height_px,
        state=page.state,
        dpi=page.dpi,
        error=page.error,
        text_layer=page.text_layer,
        regions=[
            assemble.AssemblyRegion(
                index=r.index,
                label=r.label,
                source_label=r.source_label,
                note=r.note,
                task=r.task,
                bbox=list(r.bbox),
                content=r.content,
                source=r.source,
                engine=r.engine,
                state=r.state,
                score=r.score,
                polygon=r.polygon,
                image=image_link(page.number, r.index) if r.image_key else None,
                error=r.error,
                finish_reason=r.finish_reason,
                truncated=r.truncated,
            )
            for r in page.regions
        ],
    )


def _extractions(pages: list[assemble.AssemblyPage], template: str) -> list[dict[str, Any]]:
    """Each page's answer parsed against the template; the raw text is kept either way."""
    from workers.engines.glmocr import parse_extraction

    out = []
    for page in pages:
        region = next((r for r in page.regions if r.task == EXTRACT), None)
        raw = region.content if region else None
        entry: dict[str, Any] = {"page": page.number, "data": None, "raw": raw, "error": None}
        if region is None or region.state != RegionState.DONE or raw is None:
            entry["error"] = (region.error if region else None) or page.error or "not recognized"
        else:
            parsed = parse_extraction(raw, template)
            entry["data"], entry["error"] = parsed.data, parsed.error
        out.append(entry)
    return out
