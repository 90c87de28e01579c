"""Watching work: server-sent events, signed webhooks with retries, `pagemill top`. A real
`pagemill api`, a real cpu worker, Postgres and Redis of their own, and a real HTTP receiver
that fails the first attempts of every notification."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import documents, services

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")
SECRET = "whsec-watch-tests-7f3a"
FAIL_FIRST = 2  # the receiver answers 500 to the first two attempts of each notification
# Every text region kept as a figure crop: the whole pipeline on one cpu worker.
FIGURES_ONLY = json.dumps({"text": "skip", "paragraph_title": "skip", "doc_title": "skip"})
TERMINAL = ("succeeded", "partial", "failed", "cancelled")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A webhook receiver on loopback: 500 for the first FAIL_FIRST attempts of each
    delivery id, then 200. Keeps every request."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    delivery = self.headers.get("X-Pagemill-Delivery", "")
                    seen = sum(
                        1
                        for r in receiver.requests
                        if r.headers.get("x-pagemill-delivery") == delivery
                    )
                    status = 500 if seen < FAIL_FIRST else 200
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", services.free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def watch_env(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A database and a broker of their own, so a sweep here sees only this module's work."""
    folder = tmp_path_factory.mktemp("watch")
    with services.postgres_database() as url:
        env = {
            **stack_env,
            "PAGEMILL_DATABASE_URL": url,
            **services.broker_env("watch"),
            "PAGEMILL_DATA_DIR": str(folder / "data"),
            "PAGEMILL_LABEL_ROUTES": FIGURES_ONLY,
            "PAGEMILL_WEBHOOK_SECRET": SECRET,
            "PAGEMILL_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
            "PAGEMILL_WEBHOOK_BACKOFF_SECONDS": "0.3",
            "PAGEMILL_EVENTS_POLL_SECONDS": "0.2",
            "PAGEMILL_EVENTS_HEARTBEAT_SECONDS": "1",
        }
        services.configure(env)
        from app.db import migrate

        migrate()
        try:
            yield env
        finally:
            services.configure(stack_env)


@pytest.fixture(scope="module")
def watch_workers(
    watch_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    with services.workers(watch_env, {"cpu": 1}, log_dir=tmp_path_factory.mktemp("watch-logs")):
        yield


@pytest.fixture(scope="module")
def keys(watch_env: dict[str, str]) -> dict[str, str]:
    keys = {
        "watch": services.api_key(watch_env, "watch", "test_watch"),
        "other": services.api_key(watch_env, "other", "test_watch"),
    }
    services.configure(watch_env)
    return keys


@pytest.fixture(scope="module")
def api(
    watch_env: dict[str, str],
    watch_workers: None,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[httpx.Client]:
    log_path = tmp_path_factory.mktemp("watch-api") / "api.log"
    with (
        services.api_server(watch_env, log_path) as url,
        httpx.Client(base_url=url, timeout=60, headers=services.bearer(keys["watch"])) as client,
    ):
        yield client


@pytest.fixture
def env(watch_env: dict[str, str]) -> dict[str, str]:
    services.configure(watch_env)
    return watch_env


def _png(folder: Path, name: str, words: str) -> tuple[str, tuple[str, bytes, str]]:
    path = documents.make_image(folder / name, "PNG", None, [words])
    return ("files", (name, path.read_bytes(), "image/png"))


def _slow_pdf(folder: Path, pages: int, lines: int = 250) -> Path:
    """A PDF whose pages take pdfium a second or two each: work stays in flight a while."""
    content = documents.slow_page_content(lines)
    return documents.make_raw_pdf(folder / "slow.pdf", [((0, 0, 595, 842), content)] * pages)


def _wait(predicate: Any, what: str, timeout: float = 240.0) -> Any:
    """Polls until predicate() is truthy (a guard against hangs, not a check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"{what} not after {timeout} s")


def _events(response: httpx.Response) -> Iterator[tuple[str, str | None, str | None, Any]]:
    """(kind, event name, id, data) of each block of a text/event-stream; kind is "event",
    "comment" or "retry"."""
    name: str | None = None
    event_id: str | None = None
    data: str | None = None
    for line in response.iter_lines():
        if line == "":
            if data is not None:
                yield ("event", name, event_id, json.loads(data))
            name = event_id = data = None
        elif line.startswith(":"):
            yield ("comment", None, None, line)
        elif line.startswith("retry:"):
            yield ("retry", None, None, line)
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]


def _verify(header: str, body: bytes) -> bool:
    """The receiver's check, written from the README's description of the scheme."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(
        SECRET.encode(), fields["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 300


# -- server-sent events ----------------------------------------------------------------


def test_a_job_stream_shows_its_progress_and_ends_with_its_final_state(
    api: httpx.Client, tmp_path: Path
) -> None:
    pdf = _slow_pdf(tmp_path, pages=3, lines=150)
    response = api.post(
        "/v1/jobs", files={"files": ("slow.pdf", pdf.read_bytes(), "application/pdf")}
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["jobs"][0]["id"]
    seen = []
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for kind, name, event_id, data in _events(stream):
            if kind == "event":
                seen.append((name, event_id, data))
    assert seen, "no event"
    names = [name for name, _, _ in seen]
    states = [data["state"] for _, _, data in seen]
    done = [data["pages_done"] for _, _, data in seen]
    assert names[0] == "state" and states[0] in ("queued", "running")
    assert states[-1] == "succeeded" and done[-1] == 3
    assert done == sorted(done)  # page counts only grow
    assert "progress" in names  # at least one page counted while the job ran
    assert len({event_id for _, event_id, _ in seen}) == len(seen)  # one id per change
    # Every event changes something: a state change is named `state`, the rest `progress`.
    for (_, _, before), (name, _, after) in itertools.pairwise(seen):
        assert before != after
        assert name == ("state" if before["state"] != after["state"] else "progress")
    # Reconnecting with the last id: the client saw the end, so 204 (EventSource stops).
    final_id = seen[-1][1]
    again = api.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": final_id})
    assert again.status_code == 204
    # With an older id it is sent the final state, and only that.
    with api.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": seen[0][1]}
    ) as stream:
        replay = [data for kind, _, _, data in _events(stream) if kind == "event"]
    assert replay == [seen[-1][2]]


def test_a_quiet_stream_gets_keep_alives_then_the_cancel(
    api: httpx.Client, env: dict[str, str]
) -> None:
    """A job that nothing processes (its row alone, no message): comments keep the stream
    open until the job is cancelled, which ends it."""
    from app import jobs

    job_id = jobs.create_job(
        filename="quiet.pdf",
        sha256="0" * 64,
        size_bytes=1,
        media_type=None,
        options={},
        tenant="watch",
    )
    kinds: list[str] = []
    states: list[str] = []
    cancelled = False
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        for kind, _, _, data in _events(stream):
            kinds.append(kind)
            if kind == "event":
                states.append(data["state"])
            if kinds.count("comment") == 2 and not cancelled:
                assert api.delete(f"/v1/jobs/{job_id}").status_code == 200
                cancelled = True
    assert kinds[0] == "retry"
    assert kinds.count("comment") >= 2
    assert states == ["queued", "cancelled"]


def test_a_batch_stream_counts_jobs_and_pages_until_the_batch_ends(
    api: httpx.Client, tmp_path: Path
) -> None:
    files = [_png(tmp_path, f"b{i}.png", f"Batch page number {i}.") for i in range(3)]
    files.append(("files", ("notes.txt", b"not a document\n", "text/plain")))
    response = api.post("/v1/jobs", files=files, data={"batch_name": "sse-batch"})
    assert response.status_code == 201, response.text
    batch_id = response.json()["batch_id"]
    with api.stream("GET", f"/v1/batches/{batch_id}/events") as stream:
        assert stream.status_code == 200
        seen = [data for kind, _, _, data in _events(stream) if kind == "event"]
    ended = [data["jobs_ended"] for data in seen]
    assert ended == sorted(ended)
    final = seen[-1]
    assert final["state"] == "partial"  # three succeeded, the text file failed
    assert final["jobs_total"] == 4 and final["jobs_ended"] == 4
    assert final["jobs_by_state"] == {"failed": 1, "succeeded": 3}
    assert final["pages_done"] == 3


def test_streams_of_another_tenant_are_404_like_unknown_ids(
    api: httpx.Client, keys: dict[str, str], tmp_path: Path
) -> None:
    response = api.post("/v1/jobs", files=[_png(tmp_path, "t.png", "Tenant check.")] * 2)
    body = response.json()
    job_id, batch_id = body["jobs"][0]["id"], body["batch_id"]
    other = services.bearer(keys["other"])
    for path in (f"/v1/jobs/{job_id}/events", f"/v1/batches/{batch_id}/events"):
        answer = api.get(path, headers=other)
        assert answer.status_code == 404, answer.text
        unknown = api.get(path.replace(job_id, "f" * 32).replace(batch_id, "f" * 32))
        assert unknown.status_code == 404
        assert api.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401


# -- webhooks --------------------------------------------------------------------------


def _webhooks_done(api: httpx.Client, path: str) -> list[dict[str, Any]] | None:
    rows: list[dict[str, Any]] = api.get(path).json()["webhooks"]
    return rows if rows and rows[-1]["state"] in ("delivered", "gave_up") else None


def test_webhooks_are_signed_retried_and_recorded(
    api: httpx.Client, receiver: Receiver, env: dict[str, str], tmp_path: Path
) -> None:
    files = [_png(tmp_path, f"w{i}.png", f"Webhook page {i}.") for i in range(2)]
    response = api.post(
        "/v1/jobs",
        files=files,
        data={
            "callback_url": f"{receiver.url}/jobs",
            "batch_callback_url": f"{receiver.url}/batch",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    batch_id, job_ids = body["batch_id"], [job["id"] for job in body["jobs"]]
    assert body["jobs"][0]["options"]["callback_url"] == f"{receiver.url}/jobs"

    batch_rows = _wait(lambda: _webhooks_done(api, f"/v1/batches/{batch_id}"), "batch webhook")
    job_rows = {
        job_id: _wait(lambda j=job_id: _webhooks_done(api, f"/v1/jobs/{j}"), "job webhook")
        for job_id in job_ids
    }

    # The status: every attempt, 500 twice, then delivered with 200, one event id.
    for rows in [batch_rows, *job_rows.values()]:
        assert [r["attempt"] for r in rows] == [1, 2, 3]
        assert [r["state"] for r in rows] == ["failed", "failed", "delivered"]
        assert [r["status_code"] for r in rows] == [500, 500, 200]
        assert rows[0]["error"].startswith("HTTP 500")
        assert len({r["event_id"] for r in rows}) == 1
        assert all(r["finished_at"] for r in rows)

    # What the receiver got: three requests per notification, each signed, same id.
    job_requests = receiver.of("/jobs")
    batch_requests = receiver.of("/batch")
    by_delivery = Counter(r.headers["x-pagemill-delivery"] for r in job_requests)
    assert sorted(by_delivery.values()) == [3, 3]
    assert len(batch_requests) == 3
    for request in job_requests + batch_requests:
        assert _verify(request.headers["x-pagemill-signature"], request.body)
        assert not _verify(request.headers["x-pagemill-signature"], request.body + b" ")
        assert request.headers["content-type"] == "application/json"
    delivered = [json.loads(r.body) for r in job_requests if r.answered == 200]
    assert sorted(d["job"]["id"] for d in delivered) == sorted(job_ids)
    assert all(d["event"] == "job.ended" and d["job"]["state"] == "succeeded" for d in delivered)
    final_batch = json.loads(batch_requests[-1].body)
    assert final_batch["event"] == "batch.ended"
    assert final_batch["delivery_id"] == batch_requests[-1].headers["x-pagemill-delivery"]
    assert final_batch["batch"]["state"] == "succeeded"
    assert final_batch["batch"]["jobs_total"] == 2

    # `pagemill status` shows the attempts too.
    shown = subprocess.run(
        [PAGEMILL, "status", job_ids[0]],
        env=services.process_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "webhook   attempt 1 failed" in shown.stdout
    assert "webhook   attempt 3 delivered" in shown.stdout and "HTTP 200" in shown.stdout
    print(
        f"\nwebhooks: {len(job_requests) + len(batch_requests)} deliveries to the receiver, "
        f"{sum(1 for r in job_requests + batch_requests if r.answered != 200)} retried, "
        f"{len(by_delivery) + 1} notifications delivered"
    )


def test_a_batch_is_not_ended_while_its_submission_goes_on(
    api: httpx.Client, receiver: Receiver, env: dict[str, str]
) -> None:
    """Its first job ends before the second exists: no batch webhook until the submission
    is sealed and the last job has ended."""
    from app import jobs
    from app.db import session_scope
    from app.webhooks import deliveries_of

    batch_id = jobs.create_batch("sealed", "watch", f"{receiver.url}/sealed")

    def job() -> str:
        return jobs.create_job(
            filename="s.png",
            sha256="2" * 64,
            size_bytes=1,
            media_type=None,
            options={},
            batch_id=batch_id,
            tenant="watch",
        )

    def notified() -> int:
        with session_scope() as session:
            return len(deliveries_of(session, batch_id=batch_id))

    jobs.cancel_job(job())
    assert notified() == 0  # every job so far has ended, but more are coming
    second = job()
    jobs.seal_batch(batch_id)
    assert notified() == 0  # sealed, but the second job runs
    jobs.cancel_job(second)
    assert notified() == 1
    jobs.seal_batch(batch_id)  # again: nothing more
    rows = _wait(lambda: _webhooks_done(api, f"/v1/batches/{batch_id}"), "the batch webhook")
    assert rows[-1]["state"] == "delivered"
    assert len({r["event_id"] for r in rows}) == 1
    assert json.loads(receiver.of("/sealed")[-1].body)["batch"]["state"] == "cancelled"


def test_a_bad_callback_url_is_refused_before_anything_is_created(
    api: httpx.Client, tmp_path: Path
) -> None:
    for field, url in (("callback_url", "ftp://example.com/x"), ("batch_callback_url", "nope")):
        response = api.post(
            "/v1/jobs", files=[_png(tmp_path, "bad-cb.png", "Bad callback.")], data={field: url}
        )
        assert response.status_code == 422, response.text
        assert "callback_url" in response.text


def test_the_sweeper_resends_a_webhook_whose_message_was_lost(
    api: httpx.Client, receiver: Receiver, env: dict[str, str]
) -> None:
    """A pending attempt long past due and never sent (as when the process died between the
    commit and the send): the sweep sends it, and it is delivered."""
    from app import jobs
    from app.db import session_scope
    from app.models import DeliveryState, WebhookDelivery, utcnow
    from app.sweeper import Sweeper

    job_id = jobs.create_job(
        filename="lost.png",
        sha256="1" * 64,
        size_bytes=1,
        media_type=None,
        options={},
        tenant="watch",
    )
    jobs.cancel_job(job_id)  # ended, and no callback_url: nothing sent by itself
    event = uuid.uuid4().hex
    with session_scope() as session:
        session.add(
            WebhookDelivery(
                event_id=event,
                tenant="watch",
                job_id=job_id,
                url=f"{receiver.url}/lost",
                attempt=1,
                state=DeliveryState.PENDING,
                due_at=utcnow() - timedelta(minutes=5),
            )
        )
    counts = Sweeper().sweep()
    assert counts.get("webhooks_resent") == 1, counts
    _wait(lambda: receiver.of("/lost"), "the re-sent webhook")
    rows = _wait(lambda: _webhooks_done(api, f"/v1/jobs/{job_id}"), "its record")
    assert rows[-1]["state"] == "delivered"
    assert Sweeper().sweep().get("webhooks_resent") is None  # nothing left to re-send


# -- pagemill top ------------------------------------------------------------------------


def _top_once(env: dict[str, str]) -> str:
    done = subprocess.run(
        [PAGEMILL, "top", "--once"],
        env={**services.process_env(env), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_top_once_shows_work_in_flight_then_throughput_and_failures(
    api: httpx.Client, env: dict[str, str], tmp_path: Path
) -> None:
    pdf = _slow_pdf(tmp_path, pages=6)
    files = [
        ("files", ("slow.pdf", pdf.read_bytes(), "application/pdf")),
        ("files", ("broken.pdf", b"%PDF-1.7 not really", "application/pdf")),
    ]
    response = api.post("/v1/jobs", files=files)
    assert response.status_code == 201, response.text
    slow_id = next(j["id"] for j in response.json()["jobs"] if j["filename"] == "slow.pdf")

    def in_flight() -> str | None:
        frame = _top_once(env)
        return frame if f"page {slow_id[:8]}/" in frame else None

    frame = _wait(in_flight, "a page of the slow job held in top", timeout=180)
    assert "queues" in frame and "cpu" in frame and "workers" in frame
    assert "cpu-" in frame  # the Celery worker holding it, named by inspect
    assert "s ago" in frame  # its heartbeat's age
    _wait(lambda: api.get(f"/v1/jobs/{slow_id}").json()["state"] in TERMINAL, "the slow job")
    frame = _top_once(env)
    rate_line = next(line for line in frame.splitlines() if "pages/s" in line)
    pages = int(rate_line.split("(")[1].split(" pages")[0])
    assert pages >= 6, rate_line  # the slow job's pages finished within the last minute
    assert "broken.pdf" in frame  # a recent failure, with its reason
    assert f"page {slow_id[:8]}/" not in frame  # nothing of it is held any more


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_top_live_redraws_in_a_terminal_and_quits_on_q(
    env: dict[str, str], watch_workers: None
) -> None:
    session = f"pm-top-{uuid.uuid4().hex[:8]}"
    exports = " ".join(
        shlex.quote(f"{k}={v}")
        for k, v in services.process_env(env).items()
        if k.startswith("PAGEMILL_") or k == "PYTHONPATH"
    )
    command = f"env {exports} {PAGEMILL} top --interval 0.5"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "60", command],
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    try:

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        first = _wait(
            lambda: (s := screen()) and "press q to quit" in s and s, "the first frame", 60
        )
        assert "queues" in first and "workers" in first and "recent failures" in first
        clock = next(line for line in first.splitlines() if "pagemill top" in line)
        # Redrawn: the clock in the header moves on.
        _wait(lambda: clock not in screen() and "pagemill top" in screen(), "a second frame", 30)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        _wait(
            lambda: (
                subprocess.run(
                    ["tmux", "has-session", "-t", session], capture_output=True
                ).returncode
                != 0
            ),
            "top to quit on q",
            30,
        )
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
