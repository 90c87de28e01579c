"""Hostile and broken inputs through the real pipeline (Postgres, Redis, SeaweedFS, worker
processes): each ends as a readable error on its own job or page, never a crash, and the
rest of its batch succeeds. Document passwords never appear in clear anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from app import jobs
from app.db import session_scope
from app.models import Job, Page
from app.queue import ASSEMBLE, PAGE, PREPARE, RECOGNIZE
from app.settings import Settings
from app.storage import get_storage
from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents, services

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")
PASSWORD = "Tr0ub4dor&3-horse-battery"
GOOD_LINES = ("A good document sits in the same batch.", "It is read from its text layer.")


@pytest.fixture(scope="module")
def hostile_env(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The session's database and storage, with a broker, data dir, secret key and limits
    of its own."""
    env = {
        **stack_env,
        **services.broker_env("hostile"),
        "PAGEMILL_DATA_DIR": str(tmp_path_factory.mktemp("hostile") / "data"),
        "PAGEMILL_SECRET_KEY": Fernet.generate_key().decode(),
        "PAGEMILL_MAX_PAGES_PER_DOCUMENT": "5",
        "PAGEMILL_RENDER_TIMEOUT_SECONDS": "10",  # the slow page takes ~20 s unloaded
    }
    yield env
    services.configure(stack_env)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-logs")


@pytest.fixture(scope="module")
def hostile_workers(hostile_env: dict[str, str], logs: Path) -> Iterator[None]:
    with services.workers(hostile_env, {"cpu": 1, "gpu": 1}, log_dir=logs):
        yield


@pytest.fixture
def hostile(hostile_env: dict[str, str], hostile_workers: None) -> dict[str, str]:
    services.configure(hostile_env)
    return hostile_env


def _job(job_id: str) -> Job:
    job = jobs.get_job(job_id)
    assert job is not None
    return job


def _pages(job_id: str) -> list[Page]:
    with session_scope() as session:
        return list(session.query(Page).filter_by(job_id=job_id).order_by(Page.number))


def _result(job_id: str, fmt: str = "json") -> bytes:
    job = _job(job_id)
    key = job.result_json_key if fmt == "json" else job.result_markdown_key
    assert key is not None, f"{job.filename}: {job.state} {job.error}"
    return get_storage().get(key)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PAGEMILL, *args],
        env=services.process_env({"COLUMNS": "250"} | env),
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- one batch of hostile documents ----------------------------------------------------


@pytest.fixture(scope="module")
def batch(
    hostile_env: dict[str, str], hostile_workers: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Every kind of broken document in one batch with a good one; name → job id."""
    services.configure(hostile_env)
    folder = tmp_path_factory.mktemp("hostile-docs")
    good = documents.make_born_digital_pdf(folder / "good.pdf", [(None, GOOD_LINES)])
    scan = documents.make_image(
        folder / "scan.png", "PNG", documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS
    )
    files = {
        "good.pdf": good,
        "truncated.pdf": documents.make_truncated_pdf(folder / "truncated.pdf", good),
        "bad-xref.pdf": documents.make_bad_xref_pdf(folder / "bad-xref.pdf", good),
        "encrypted.pdf": documents.make_encrypted_pdf(folder / "encrypted.pdf", good, PASSWORD),
        "zero-pages.pdf": documents.make_zero_page_pdf(folder / "zero-pages.pdf"),
        "six-pages.pdf": documents.make_raw_pdf(
            folder / "six-pages.pdf", [((0, 0, 595, 842), b"")] * 6
        ),
        "sizes.pdf": documents.make_raw_pdf(
            folder / "sizes.pdf",
            [
                ((0, 0, 14_400, 14_400), documents.text_line("A page of two hundred inches", 200)),
                ((0, 0, 200_000, 200_000), documents.text_line("An absurd page")),
            ],
        ),
        "slow.pdf": documents.make_raw_pdf(
            folder / "slow.pdf",
            [
                ((0, 0, 595, 842), documents.text_line("This page draws at once.")),
                ((0, 0, 595, 842), documents.slow_page_content()),
            ],
        ),
        "bomb.png": documents.make_png_bomb(folder / "bomb.png"),
        "bomb.jpg": documents.make_jpeg_bomb(folder / "bomb.jpg"),
        "bomb.tif": documents.make_tiff_bomb(folder / "bomb.tif"),
        "png-named.pdf": folder / "png-named.pdf",
        "pdf-named.jpg": folder / "pdf-named.jpg",
    }
    files["png-named.pdf"].write_bytes(scan.read_bytes())
    files["pdf-named.jpg"].write_bytes(good.read_bytes())
    batch_id = jobs.create_batch("hostile")
    ids = {name: submit_file(path, batch_id=batch_id).job_id for name, path in files.items()}
    small = Settings(max_upload_bytes=100)
    ids["too-large.pdf"] = submit_file(
        good, filename="too-large.pdf", batch_id=batch_id, settings=small
    ).job_id
    wait_for_jobs(list(ids.values()), timeout=600)
    return {**ids, "batch": batch_id}


EXPECTED_FAILURES = {
    "too-large.pdf": "file too large",
    "truncated.pdf": "corrupt or unreadable PDF",
    "encrypted.pdf": "encrypted PDF: a password is required to open it",
    "zero-pages.pdf": "empty or broken PDF",
    "six-pages.pdf": "too many pages: 6 (the limit is 5)",
    "bomb.png": "image too large",
    "bomb.jpg": "image too large",
    "bomb.tif": "image too large",
}


@pytest.mark.parametrize(("name", "error"), sorted(EXPECTED_FAILURES.items()))
def test_unusable_documents_fail_their_job_with_the_reason(
    hostile: dict[str, str], batch: dict[str, str], name: str, error: str
) -> None:
    job = _job(batch[name])
    assert job.state == "failed", (job.state, job.error)
    assert job.error is not None and error in job.error, job.error
    assert job.pages_done == 0 and not _pages(job.id)


@pytest.mark.parametrize("name", ["good.pdf", "bad-xref.pdf", "pdf-named.jpg"])
def test_good_pdfs_in_the_batch_succeed(
    hostile: dict[str, str], batch: dict[str, str], name: str
) -> None:
    """A PDF whose cross-reference table is wrong is repaired by pdfium, and one named .jpg
    is a PDF all the same."""
    job = _job(batch[name])
    assert job.state == "succeeded", (job.state, job.error)
    assert job.media_type == "application/pdf"
    markdown = _result(job.id, "md").decode()
    assert "good document sits in the same batch" in markdown, markdown


def test_a_png_named_pdf_is_read_as_a_png(hostile: dict[str, str], batch: dict[str, str]) -> None:
    job = _job(batch["png-named.pdf"])
    assert (job.state, job.media_type) == ("succeeded", "image/png"), job.error
    assert "spillway" in _result(job.id, "md").decode().lower()


def test_huge_page_is_rendered_smaller_and_an_absurd_one_fails_alone(
    hostile: dict[str, str], batch: dict[str, str]
) -> None:
    job = _job(batch["sizes.pdf"])
    assert job.state == "partial", (job.state, job.error)
    big, absurd = _pages(job.id)
    assert big.state == "succeeded", big.error
    settings = Settings()
    assert big.width_px is not None and big.height_px is not None and big.dpi is not None
    assert big.width_px * big.height_px <= settings.render_max_pixels
    assert big.dpi < settings.render_dpi  # recorded: the page was rendered at a lower dpi
    document = json.loads(_result(job.id))
    assert document["pages"][0]["dpi"] == pytest.approx(big.dpi)
    assert absurd.state == "failed"
    assert absurd.error is not None and "200000 x 200000 pt is not a real page" in absurd.error


def test_page_slower_than_the_render_timeout_fails_alone(
    hostile: dict[str, str], batch: dict[str, str]
) -> None:
    job = _job(batch["slow.pdf"])
    assert job.state == "partial", (job.state, job.error)
    fast, slow = _pages(job.id)
    assert fast.state == "succeeded", fast.error
    assert slow.state == "failed"
    assert slow.error == "rendering took longer than 10 s (PAGEMILL_RENDER_TIMEOUT_SECONDS)"
    assert slow.attempts == 1, "a render timeout is final, not retried"


def test_pagemill_status_shows_every_error(hostile: dict[str, str], batch: dict[str, str]) -> None:
    listing = _cli(hostile, "status", batch["batch"])
    assert listing.returncode == 0, listing.stderr
    output = listing.stdout + listing.stderr
    for error in EXPECTED_FAILURES.values():
        assert error in output, output
    one = _cli(hostile, "status", batch["slow.pdf"], "--pages")
    assert "page 2: failed: rendering took longer than 10 s" in one.stdout, one.stdout


# -- limits, run through the pipeline functions with their own settings ------------------


@pytest.fixture
def inline(hostile_env: dict[str, str]) -> Iterator[Settings]:
    """The database and storage of the stack, a broker no worker reads: the test runs each
    step itself, with settings of its own."""
    env = {**hostile_env, **services.broker_env("hostile-inline")}
    services.configure(env)
    yield Settings()
    services.configure(hostile_env)


def _run_inline(job_id: str, settings: Settings) -> None:
    """Each message the pipeline returns, run in this process until none is left."""
    from workers import pipeline

    step: dict[str, Callable[..., list[pipeline.Message]]] = {
        PREPARE: pipeline.prepare_document,
        PAGE: pipeline.process_page,
        RECOGNIZE: pipeline.recognize_page,
        ASSEMBLE: pipeline.assemble_job,
    }
    messages: list[pipeline.Message] = [(PREPARE, (job_id,))]
    while messages:
        name, args = messages.pop(0)
        messages.extend(step[name](*args, settings))


def test_a_page_with_more_regions_than_allowed_fails_alone(
    inline: Settings, tmp_path: Path
) -> None:
    pdf = documents.make_born_digital_pdf(
        tmp_path / "regions.pdf",
        [
            (None, ["A single short line."]),
            (documents.SAMPLE_TITLE, [*documents.SAMPLE_PARAGRAPHS, *GOOD_LINES]),
        ],
    )
    settings = inline.model_copy(update={"max_regions_per_page": 1})
    job_id = submit_file(pdf, settings=settings).job_id
    _run_inline(job_id, settings)
    job = _job(job_id)
    one, many = _pages(job_id)
    assert one.state == "succeeded", one.error
    assert many.state == "failed" and many.error is not None
    assert many.error.startswith("too many regions: layout found ")
    assert "(the limit is 1, PAGEMILL_MAX_REGIONS_PER_PAGE)" in many.error
    assert job.state == "partial"


# -- document passwords ----------------------------------------------------------------


@pytest.fixture(scope="module")
def api(hostile_env: dict[str, str], hostile_workers: None, logs: Path) -> Iterator[httpx.Client]:
    key = services.api_key(hostile_env)
    with (
        services.api_server(hostile_env, logs / "api.log") as url,
        httpx.Client(base_url=url, timeout=60, headers=services.bearer(key)) as client,
    ):
        yield client


def _wait_api(api: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if body["state"] in ("succeeded", "partial", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("locked")
    source = documents.make_born_digital_pdf(folder / "plain.pdf", [(None, GOOD_LINES)])
    return documents.make_encrypted_pdf(folder / "locked.pdf", source, PASSWORD)


def test_encrypted_pdf_with_its_password_through_the_api(
    hostile: dict[str, str], api: httpx.Client, locked: Path, logs: Path
) -> None:
    response = api.post(
        "/v1/jobs",
        files={"files": ("locked.pdf", locked.read_bytes(), "application/pdf")},
        data={"password": PASSWORD, "mode": "text"},
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["jobs"][0]["id"]
    status = _wait_api(api, job_id)
    assert status["state"] == "succeeded", (status["error"], status["pages"])
    assert (
        "good document sits in the same batch"
        in api.get(f"/v1/jobs/{job_id}/result?format=md").text
    )
    # The password is nowhere in clear: responses, results, database rows, logs.
    seen = [response.text, json.dumps(status), _result(job_id).decode(), _result(job_id, "md")]
    seen.append(api.get(f"/v1/jobs/{job_id}/result?format=json").text)
    with session_scope() as session:
        for table in ("jobs", "pages", "regions"):
            column = "id" if table == "jobs" else "job_id"
            rows = session.execute(
                text(f"SELECT * FROM {table} WHERE {column} = :id"), {"id": job_id}
            ).all()
            assert rows
            seen.extend(str(tuple(row)) for row in rows)
    ciphertext = _job(job_id).password_ciphertext
    assert ciphertext and ciphertext != PASSWORD
    seen.extend(path.read_text(errors="replace") for path in logs.glob("*.log"))
    for blob in seen:
        assert PASSWORD not in str(blob)


def test_wrong_or_missing_password_fails_the_job_clearly(
    hostile: dict[str, str], api: httpx.Client, locked: Path
) -> None:
    wrong = api.post(
        "/v1/jobs",
        files={"files": ("locked.pdf", locked.read_bytes(), "application/pdf")},
        data={"password": "not-it"},
    )
    assert wrong.status_code == 201, wrong.text
    status = _wait_api(api, wrong.json()["jobs"][0]["id"])
    assert status["state"] == "failed"
    assert status["error"] == "encrypted PDF: the password given does not open it"


def test_cli_submit_with_a_password_file(
    hostile: dict[str, str], locked: Path, tmp_path: Path, logs: Path
) -> None:
    secret = tmp_path / "password.txt"
    secret.write_text(PASSWORD + "\n")
    submitted = _cli(hostile, "submit", str(locked), "--password", f"@{secret}", "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.split()[0]
    shown = _cli(hostile, "status", job_id, "--json")
    assert json.loads(shown.stdout)["state"] == "succeeded"
    for blob in (submitted.stdout, submitted.stderr, shown.stdout, shown.stderr):
        assert PASSWORD not in blob


def test_distributed_submit_without_a_secret_key_refuses_a_password(
    hostile: dict[str, str], locked: Path
) -> None:
    env = {k: v for k, v in hostile.items() if k != "PAGEMILL_SECRET_KEY"}
    refused = _cli(env, "submit", str(locked), "--password", "whatever")
    assert refused.returncode == 2
    assert "PAGEMILL_SECRET_KEY is not set" in refused.stderr


# -- file names ------------------------------------------------------------------------

NAMES = {
    "../../etc/passwd.pdf": "../../etc/passwd.pdf",
    "\x1b]0;pwned\x07evil\x1b[2J.pdf": "]0;pwnedevil[2J.pdf",
    "rapport-été-漢字.pdf": "rapport-été-漢字.pdf",
}


def test_file_names_are_labels_never_keys_or_paths(
    hostile: dict[str, str], api: httpx.Client, tmp_path: Path
) -> None:
    from app.submit import submit_stream

    pdf = documents.make_born_digital_pdf(tmp_path / "named.pdf", [(None, GOOD_LINES)])
    # Through the API (multipart carries the name as given) and the submitter itself.
    ids = {}
    for given in NAMES:
        if "\x1b" in given:
            with pdf.open("rb") as f:
                ids[given] = submit_stream(f, given).job_id
        else:
            response = api.post(
                "/v1/jobs",
                files={"files": (given, pdf.read_bytes(), "application/pdf")},
                data={"mode": "text"},
            )
            assert response.status_code == 201, response.text
            ids[given] = response.json()["jobs"][0]["id"]
    for given, job_id in ids.items():
        status = _wait_api(api, job_id)
        assert status["state"] == "succeeded", (status["error"], status["pages"])
        assert status["filename"] == NAMES[given]
        assert json.loads(_result(job_id))["filename"] == NAMES[given]
        job = _job(job_id)
        keys = [job.result_json_key or "", job.result_markdown_key or ""]
        assert all(key.startswith(f"results/{job_id}/") for key in keys), keys
    # No object in storage is named after a file.
    storage: Any = get_storage()
    listed = storage.client.list_objects_v2(Bucket=storage.bucket)
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert keys
    for key in keys:
        for word in ("passwd", "etc", "pwned", "rapport", "漢字", ".."):
            assert word not in key, key


def test_embedded_run_writes_odd_names_inside_out(tmp_path: Path) -> None:
    """`pagemill run` (embedded: its own workers, SQLite, a generated secret key): names
    with control characters, unicode, markup and 250 characters land inside OUT, and an
    encrypted PDF opens with --password."""
    docs = tmp_path / "docs"
    docs.mkdir()
    good = documents.make_born_digital_pdf(tmp_path / "good.pdf", [(None, GOOD_LINES)])
    names = ["bell\x07and\nnewline.pdf", "été 漢字.pdf", "x" * 250 + ".pdf"]
    for name in names:
        (docs / name).write_bytes(good.read_bytes())
    documents.make_encrypted_pdf(docs / "locked.pdf", good, PASSWORD)
    (docs / "[bold]broken.pdf").write_bytes(b"%PDF-1.4 nothing else")
    env = services.process_env({"COLUMNS": "250"} | {"PAGEMILL_DATA_DIR": str(tmp_path / "state")})
    run = subprocess.run(
        [PAGEMILL, "run", "docs", "-o", "out", "--mode", "text", "--password", PASSWORD],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "4 of 5 documents succeeded" in run.stderr, run.stderr
    assert "[bold]broken.pdf" in run.stderr  # shown as it is, not as markup
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(
        n + s
        for n in ("bell_and_newline", "locked", "x" * 200, "été 漢字")
        for s in (".json", ".md")
    )
    assert "good document" in (tmp_path / "out" / "locked.md").read_text(encoding="utf-8")
    key = tmp_path / "state" / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600
    for log in (tmp_path / "state" / "logs").glob("*.log"):
        assert PASSWORD not in log.read_text(errors="replace")


def test_killing_pagemill_run_stops_its_workers(tmp_path: Path) -> None:
    """SIGTERM to `pagemill run` (a user's `kill`, a CI timeout) leaves no worker behind:
    they run in sessions of their own, so nothing else would stop them."""
    from app.processes import child_pids

    pages = [((0, 0, 595, 842), documents.text_line(f"Page {n}")) for n in range(200)]
    pdf = documents.make_raw_pdf(tmp_path / "long.pdf", pages)
    env = services.process_env({"COLUMNS": "250"} | {"PAGEMILL_DATA_DIR": str(tmp_path / "state")})
    run = subprocess.Popen(
        [PAGEMILL, "run", str(pdf), "-o", str(tmp_path / "out"), "--mode", "text"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers: set[int] = set()
    database = tmp_path / "state" / "pagemill.db"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        for pid in child_pids(run.pid):
            workers.add(pid)
            workers.update(child_pids(pid))
        if len(workers) >= 4 and database.exists() and b"running" in _job_states(database):
            break
        time.sleep(0.2)
    assert run.poll() is None and len(workers) >= 4, workers
    run.terminate()
    run.wait(120)
    alive = {pid for pid in workers if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
    assert alive == set(), f"workers left running: {alive}"


def _job_states(database: Path) -> bytes:
    import sqlite3

    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as conn:
        return b" ".join(row[0].encode() for row in conn.execute("SELECT state FROM jobs"))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
