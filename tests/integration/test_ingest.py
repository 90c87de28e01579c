"""Bulk ingestion from a customer's bucket and from manifests, on the session's real
SeaweedFS, Postgres and Redis: `pagemill submit s3://...` and `--manifest` as real
subprocesses, the ingestion's resumption in-process, and `POST /v1/batches` through a real
API server whose `ingest` task runs on the session's real workers.

The large prefix goes to a broker of its own that no worker reads: its jobs are created and
counted, not processed (the small end-to-end test processes documents)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.integration.test_cli import pagemill
from tests.support import buckets, documents, services

pytestmark = pytest.mark.integration

SOURCE = "customer-docs"
BULK = 3_000


@pytest.fixture(scope="module")
def source(s3: services.SeaweedFS) -> Any:
    client = buckets.client(s3.endpoint)
    buckets.ensure_bucket(client, SOURCE)
    return client


@pytest.fixture(autouse=True)
def _restore_env() -> Iterator[None]:
    """This process's PAGEMILL_* as they were: worker processes started later (the session's)
    inherit them, and must not get this module's broker or limits."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("PAGEMILL_")}
    yield
    services.configure(saved)


@pytest.fixture(scope="module")
def idle_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The stack with a broker no worker reads and no rate limit."""
    return {
        **stack_env,
        **services.broker_env("ingest-idle"),
        "PAGEMILL_INGEST_RATE": "0",
        "PAGEMILL_INGEST_MAX_QUEUED": "0",
    }


@pytest.fixture(scope="module")
def bulk_env(idle_env: dict[str, str]) -> dict[str, str]:
    """With a small upload limit, for the `pagemill submit` processes of the bulk tests."""
    return {**idle_env, "PAGEMILL_MAX_UPLOAD_BYTES": "4096"}


def _counts(stdout: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in stdout.splitlines() if "\t" in line)


def _batch_jobs(batch_id: str) -> list[Any]:
    from app.db import session_scope
    from app.models import Job

    with session_scope() as session:
        return list(session.execute(select(Job).where(Job.batch_id == batch_id)).scalars())


def _cpu_queue(env: dict[str, str]) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(env["PAGEMILL_BROKER_URL"])
    try:
        return list(client.lrange(env["PAGEMILL_BROKER_KEY_PREFIX"] + "cpu", 0, -1))
    finally:
        client.close()


def _cpu_queue_length(env: dict[str, str]) -> int:
    return len(_cpu_queue(env))


def _queued_ingestions(env: dict[str, str]) -> list[str]:
    """The batch ids of the ingest messages waiting in the cpu queue (kombu's JSON envelope
    around a base64 body of [args, kwargs, embed])."""
    ids = []
    for raw in _cpu_queue(env):
        message = json.loads(raw)
        if message["headers"]["task"] == "pagemill.ingest":
            args = json.loads(base64.b64decode(message["body"]))[0]
            ids.append(args[0])
    return ids


@pytest.fixture(scope="module")
def bulk(source: Any, bulk_env: dict[str, str]) -> dict[str, Any]:
    """A prefix of BULK tiny PNGs, a text file, one too large and a folder marker, submitted
    once with `pagemill submit s3://...`."""
    prefix = "scans/"
    buckets.fill_prefix(source, SOURCE, prefix, BULK)
    buckets.put_objects(
        source,
        SOURCE,
        [
            (f"{prefix}notes.txt", b"just some notes, not a document\n"),
            (f"{prefix}big.png", buckets.tiny_png(0)[:16] + b"\0" * 5000),
            (f"{prefix}sub/", b""),
        ],
    )
    done = pagemill("submit", f"s3://{SOURCE}/{prefix}", "--batch", "bulk", env=bulk_env)
    return {"prefix": prefix, "result": done}


def test_a_prefix_becomes_a_batch_of_jobs(bulk: dict[str, Any], idle_env: dict[str, str]) -> None:
    done = bulk["result"]
    assert done.returncode == 0, done.stdout + done.stderr
    counts = _counts(done.stdout)
    assert counts["submitted"] == str(BULK)
    assert counts["skipped"] == "0"
    assert counts["failed"] == "2"
    services.configure(idle_env)
    rows = _batch_jobs(counts["batch"])
    assert len(rows) == BULK + 2
    assert len({row.content_sha256 for row in rows if row.state == "queued"}) == BULK
    errors = {row.filename: row.error for row in rows if row.state == "failed"}
    assert errors["scans/notes.txt"] == "not a document: plain text"
    assert errors["scans/big.png"] == "file too large: 5016 bytes (the limit is 4096)"
    # A prepare was sent for each queued job, and for nothing else.
    assert _cpu_queue_length(idle_env) == BULK
    # The originals were copied into pagemill's storage under their content hash.
    from app.storage import get_storage, original_key

    storage = get_storage()
    first = next(row for row in rows if row.filename == "scans/doc-000007.png")
    assert storage.get(original_key("default", first.content_sha256)) == buckets.tiny_png(7)
    assert "failed: scans/notes.txt: not a document: plain text" in done.stderr
    shown = pagemill("status", counts["batch"], env={**idle_env, "COLUMNS": "250"})
    assert f"ingest    s3://{SOURCE}/scans/: done, submitted {BULK}, skipped 0, failed 2" in (
        shown.stdout
    ), shown.stdout[:2000]


def test_resubmitting_a_prefix_skips_what_is_queued(
    bulk: dict[str, Any], source: Any, idle_env: dict[str, str], bulk_env: dict[str, str]
) -> None:
    prefix = bulk["prefix"]
    buckets.fill_prefix(source, SOURCE, prefix, 5, start=BULK)  # five new documents
    again = pagemill("submit", f"s3://{SOURCE}/{prefix}", env=bulk_env)
    assert again.returncode == 0, again.stdout + again.stderr
    counts = _counts(again.stdout)
    assert (counts["submitted"], counts["skipped"], counts["failed"]) == (
        "5",
        str(BULK),
        "2",
    )
    services.configure(idle_env)
    new = {row.filename for row in _batch_jobs(counts["batch"]) if row.state == "queued"}
    assert new == {f"{prefix}doc-{n:06d}.png" for n in range(BULK, BULK + 5)}
    # Other options are another submission: nothing is skipped.
    other = pagemill("submit", f"s3://{SOURCE}/{prefix}doc-00000", "--dpi", "150", env=idle_env)
    assert _counts(other.stdout)["submitted"] == "10", other.stdout + other.stderr


def test_an_interrupted_ingestion_goes_on_from_its_cursor(
    source: Any, idle_env: dict[str, str]
) -> None:
    """The task's path: a slice records a chunk and stops; the next slice (another process,
    after a restart) goes on after it; a stale second run of the same slice records nothing."""
    buckets.fill_prefix(source, SOURCE, "resume/", 25, start=100_000)
    services.configure({**idle_env, "PAGEMILL_INGEST_CHUNK": "10"})
    from app import jobs
    from app.ingest import Outcome, ingest_step, start_ingest

    batch_id = start_ingest(tenant="default", prefix=f"s3://{SOURCE}/resume/")
    assert ingest_step(batch_id, seconds=0) == Outcome.MORE
    state = jobs.ingest_state(batch_id)
    assert state is not None and state.cursor == "resume/doc-100009.png"
    assert len(_batch_jobs(batch_id)) == 10
    # A duplicate delivery that read the same chunk finds the cursor moved: nothing recorded.
    assert jobs.record_ingest_chunk(batch_id, after="", cursor="x", jobs=[], skipped=0) is None
    assert ingest_step(batch_id) == Outcome.DONE
    rows = _batch_jobs(batch_id)
    assert sorted(row.filename for row in rows) == [
        f"resume/doc-{n:06d}.png" for n in range(100_000, 100_025)
    ]
    state = jobs.ingest_state(batch_id)
    assert state is not None and state.state == "done"


def test_cancelling_the_batch_stops_its_ingestion(source: Any, idle_env: dict[str, str]) -> None:
    buckets.fill_prefix(source, SOURCE, "cancel/", 3, start=300_000)
    services.configure(idle_env)
    from app import control, jobs
    from app.ingest import Outcome, ingest_step, start_ingest

    batch_id = start_ingest(tenant="default", prefix=f"s3://{SOURCE}/cancel/")
    assert control.cancel_batch(batch_id) is not None
    assert ingest_step(batch_id) == Outcome.DONE
    state = jobs.ingest_state(batch_id)
    assert state is not None and (state.state, state.error) == ("failed", "cancelled")
    assert _batch_jobs(batch_id) == []


def test_the_sweeper_resumes_a_task_ingestion_and_ends_a_dead_submitters(
    source: Any, idle_env: dict[str, str]
) -> None:
    services.configure({**idle_env, "PAGEMILL_INGEST_BUCKETS": json.dumps({"default": [SOURCE]})})
    from sqlalchemy import update

    from app import jobs
    from app.db import session_scope
    from app.ingest import start_ingest
    from app.models import Batch, utcnow
    from app.sweeper import Sweeper

    by_task = start_ingest(tenant="default", prefix=f"s3://{SOURCE}/scans/", from_api=True)
    by_cli = start_ingest(tenant="default", prefix=f"s3://{SOURCE}/scans/")
    fresh = start_ingest(tenant="default", prefix=f"s3://{SOURCE}/scans/")
    an_hour_ago = utcnow() - timedelta(hours=1)
    with session_scope() as session:
        session.execute(
            update(Batch)
            .where(Batch.id.in_([by_task, by_cli]))
            .values(ingest_updated_at=an_hour_ago)
        )
    sent_before = _queued_ingestions(idle_env)
    # The database is shared with other modules, whose ingestions may be stale too: the
    # checks are on this test's three.
    counts = Sweeper().sweep()
    assert counts.get("ingest_resent", 0) >= 1 and counts.get("ingest_ended", 0) >= 1, counts
    sent = _queued_ingestions(idle_env)
    assert sent.count(by_task) == sent_before.count(by_task) + 1
    assert sent.count(fresh) == sent_before.count(fresh)
    task_state, cli_state = jobs.ingest_state(by_task), jobs.ingest_state(by_cli)
    assert task_state is not None and task_state.state == "listing"
    assert cli_state is not None and cli_state.state == "failed"
    assert cli_state.error is not None and cli_state.error.startswith("interrupted")
    # Sent again just now: the next sweep leaves it (and the fresh one) alone.
    Sweeper().sweep()
    assert _queued_ingestions(idle_env).count(by_task) == sent.count(by_task)
    for batch_id in (by_task, fresh):
        jobs.end_ingest(batch_id, "stopped by the test")


def test_a_manifest_mixes_local_files_and_keys_and_reports_bad_lines(
    source: Any, idle_env: dict[str, str], tmp_path: Path
) -> None:
    local = tmp_path / "local.png"
    local.write_bytes(buckets.tiny_png(200_001))
    buckets.put_objects(source, SOURCE, [("manifest/a.png", buckets.tiny_png(200_002))])
    lines = [
        json.dumps({"source": str(local), "filename": "from-disk.png"}),
        json.dumps({"source": f"s3://{SOURCE}/manifest/a.png", "options": {"dpi": 150}}),
        "{not json",
        json.dumps({"path": "no source key"}),
        json.dumps({"source": f"s3://{SOURCE}/manifest/a.png", "options": {"dpi": 5}}),
        json.dumps({"source": f"s3://{SOURCE}/manifest/missing.png"}),
        "",
        json.dumps({"source": str(tmp_path / "nowhere.pdf")}),
        # The same document with other options is another job; with the same, a skip.
        json.dumps({"source": f"s3://{SOURCE}/manifest/a.png"}),
        json.dumps({"source": f"s3://{SOURCE}/manifest/a.png", "options": {"dpi": 150}}),
    ]
    manifest = tmp_path / "docs.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    done = pagemill("submit", "--manifest", str(manifest), env=idle_env)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = _counts(done.stdout)
    assert (counts["submitted"], counts["skipped"], counts["failed"]) == ("3", "1", "5")
    services.configure(idle_env)
    rows = _batch_jobs(counts["batch"])
    queued = sorted(
        (row.filename, json.dumps(row.options)) for row in rows if row.state == "queued"
    )
    assert queued == [
        ("from-disk.png", "{}"),
        ("manifest/a.png", '{"dpi": 150}'),
        ("manifest/a.png", "{}"),
    ]
    errors = sorted(row.error for row in rows if row.state == "failed")
    assert errors[0].startswith("invalid options: dpi: Input should be greater than or equal")
    assert errors[1].startswith("manifest line 3: not JSON")
    assert errors[2] == 'manifest line 4: needs {"source": "PATH or s3://BUCKET/KEY"}'
    assert errors[3] == f"no such file: {tmp_path / 'nowhere.pdf'}"
    assert errors[4] == f"s3://{SOURCE}/manifest/missing.png: no such object"
    assert "manifest line 3: not JSON" in done.stderr


def test_a_manifest_of_local_files_embedded(tmp_path: Path) -> None:
    """No servers at all (SQLite, the filesystem broker, a storage folder): a manifest of
    local files is ingested, and submitted again, skipped."""
    folder = tmp_path / "docs"
    folder.mkdir()
    lines = []
    for n in range(4):
        path = folder / f"{n}.png"
        path.write_bytes(buckets.tiny_png(400_000 + n))
        lines.append(json.dumps({"source": str(path)}))
    lines.append(json.dumps({"source": f"s3://{SOURCE}/scans/doc-000001.png"}))
    manifest = tmp_path / "local.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    env = {"PAGEMILL_DATA_DIR": str(tmp_path / "embedded")}
    first = pagemill("submit", "--manifest", str(manifest), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (_counts(first.stdout)["submitted"], _counts(first.stdout)["failed"]) == ("4", "1")
    assert "an s3:// source needs S3 storage" in first.stderr
    again = pagemill("submit", "--manifest", str(manifest), env=env)
    counts = _counts(again.stdout)
    assert (counts["submitted"], counts["skipped"], counts["failed"]) == ("0", "4", "1")
    originals = list((tmp_path / "embedded" / "storage" / "default" / "originals").rglob("*"))
    assert len([p for p in originals if p.is_file()]) == 4


def test_s3_sources_refused_clearly(idle_env: dict[str, str], tmp_path: Path) -> None:
    own = pagemill("submit", f"s3://{idle_env['PAGEMILL_S3_BUCKET']}/x/", env=idle_env)
    assert own.returncode == 2
    assert "is pagemill's own storage, not a source" in own.stderr
    missing = pagemill("submit", "s3://no-such-bucket-here/x/", env=idle_env)
    assert missing.returncode == 2
    assert "bucket no-such-bucket-here: no such bucket" in missing.stderr, missing.stderr
    embedded = pagemill(
        "submit", f"s3://{SOURCE}/scans/", env={"PAGEMILL_DATA_DIR": str(tmp_path / "embedded")}
    )
    assert embedded.returncode == 2
    assert "an s3:// source needs S3 storage" in embedded.stderr


def test_multipart_copy_above_the_copy_limit(
    source: Any, idle_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy path for objects over CopyObject's 5 GiB, with the limits scaled down (S3's
    smallest part is 5 MiB); a changed object is refused, not copied."""
    from app import storage as storage_module
    from app.storage import S3Storage, UnreadableObject, get_storage

    services.configure(idle_env)
    monkeypatch.setattr(storage_module, "COPY_OBJECT_LIMIT", 6 * 1024**2)
    monkeypatch.setattr(storage_module, "COPY_PART_BYTES", 5 * 1024**2)
    data = bytes(range(256)) * (12 * 1024**2 // 256 + 17)
    put = source.put_object(Bucket=SOURCE, Key="big/one.bin", Body=data)
    storage = get_storage()
    assert isinstance(storage, S3Storage)
    storage.copy_in(SOURCE, "big/one.bin", put["ETag"], len(data), "default/test/one.bin")
    assert storage.get("default/test/one.bin") == data
    with pytest.raises(UnreadableObject, match="changed while it was read"):
        storage.copy_in(SOURCE, "big/one.bin", '"0123"', len(data), "default/test/two.bin")
    assert not storage.exists("default/test/two.bin")


# -- the API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_env(stack_env: dict[str, str]) -> dict[str, str]:
    return {**stack_env, "PAGEMILL_INGEST_BUCKETS": json.dumps({"ingest-api": [SOURCE]})}


@pytest.fixture(scope="module")
def api(
    api_env: dict[str, str], stack_workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Clients of two tenants on a real API server; the first may read SOURCE."""
    owner = services.api_key(api_env, "ingest-api")
    other = services.api_key(api_env, "ingest-other")
    log_path = tmp_path_factory.mktemp("ingest-api") / "api.log"
    with (
        services.api_server(api_env, log_path) as url,
        httpx.Client(base_url=url, timeout=60, headers=services.bearer(owner)) as a,
        httpx.Client(base_url=url, timeout=60, headers=services.bearer(other)) as b,
    ):
        yield a, b


def _wait_batch(client: httpx.Client, batch_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/batches/{batch_id}").json()
        if body["state"] != "running":
            return body
        time.sleep(1)
    raise TimeoutError(f"batch {batch_id} still running: {body}")


def test_api_ingests_a_prefix_end_to_end_and_skips_on_resubmission(
    api: tuple[httpx.Client, httpx.Client], source: Any, tmp_path: Path
) -> None:
    owner, other = api
    scans = [
        documents.make_image(tmp_path / f"{n}.png", "PNG", None, [f"Ingested page number {n}."])
        for n in range(3)
    ]
    buckets.put_objects(source, SOURCE, [(f"e2e/{p.name}", p.read_bytes()) for p in scans])
    created = owner.post("/v1/batches", json={"source": f"s3://{SOURCE}/e2e/", "name": "e2e"})
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    assert created.json()["ingest"]["source"] == f"s3://{SOURCE}/e2e/"
    # Another tenant sees no such batch.
    assert other.get(f"/v1/batches/{batch_id}").status_code == 404
    body = _wait_batch(owner, batch_id)
    assert body["state"] == "succeeded", [(j["filename"], j["error"]) for j in body["jobs"]]
    assert body["ingest"] == {
        "source": f"s3://{SOURCE}/e2e/",
        "state": "done",
        "submitted": 3,
        "skipped": 0,
        "failed": 0,
        "error": None,
    }
    job = body["jobs"][0]
    markdown = owner.get(f"/v1/jobs/{job['id']}/result", params={"format": "md"})
    assert "Ingested page number" in markdown.text, markdown.text
    again = owner.post("/v1/batches", json={"source": f"s3://{SOURCE}/e2e/"})
    assert again.status_code == 202, again.text
    body = _wait_batch(owner, again.json()["id"])
    assert (body["ingest"]["submitted"], body["ingest"]["skipped"]) == (0, 3), body
    assert body["jobs_total"] == 0


def test_api_reads_only_the_tenants_buckets(
    api: tuple[httpx.Client, httpx.Client], stack_env: dict[str, str]
) -> None:
    owner, other = api
    refused = other.post("/v1/batches", json={"source": f"s3://{SOURCE}/e2e/"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["msg"] == (
        f"bucket {SOURCE} is not open to tenant ingest-other (PAGEMILL_INGEST_BUCKETS)"
    )
    assert refused.json()["detail"][0]["loc"] == ["body", "source"]
    own = owner.post("/v1/batches", json={"source": f"s3://{stack_env['PAGEMILL_S3_BUCKET']}/"})
    assert own.status_code == 422
    assert "not open to tenant ingest-api" in own.json()["detail"][0]["msg"]
    # An inline manifest naming another bucket, or a file on the server, fails per entry.
    mixed = owner.post(
        "/v1/batches",
        json={
            "entries": [
                {"source": "s3://someone-elses/doc.png"},
                {"source": "/etc/passwd"},
                {"source": f"s3://{SOURCE}/e2e/0.png", "options": {"dpi": 120}},
            ]
        },
    )
    assert mixed.status_code == 202, mixed.text
    body = _wait_batch(owner, mixed.json()["id"])
    assert (body["ingest"]["submitted"], body["ingest"]["failed"]) == (1, 2), body["jobs"]
    errors = sorted(j["error"] for j in body["jobs"] if j["state"] == "failed")
    assert errors == [
        "bucket someone-elses is not open to tenant ingest-api (PAGEMILL_INGEST_BUCKETS)",
        "local paths are not accepted from the API: use s3:// keys",
    ]
    bad = owner.post("/v1/batches", json={"source": "s3://x", "manifest": "s3://y/z"})
    assert bad.status_code == 422


def test_the_content_index_exists(idle_env: dict[str, str]) -> None:
    """The index that makes re-submission cheap exists on the real Postgres."""
    from sqlalchemy import inspect

    from app.db import get_engine

    services.configure(idle_env)
    names = {ix["name"] for ix in inspect(get_engine()).get_indexes("jobs")}
    assert "ix_jobs_tenant_sha256" in names
