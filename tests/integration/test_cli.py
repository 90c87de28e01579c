"""The `pagemill` command as a real subprocess against the session's distributed stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import documents, services
from tests.support.private import postgres_cluster

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")


def pagemill(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAGEMILL_")}
    # The console script imports this checkout's code, not whichever is installed editable.
    base["PYTHONPATH"] = str(services.ROOT)
    return subprocess.run(
        [PAGEMILL, *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Submission:
    result: subprocess.CompletedProcess[str]
    jobs: dict[str, str]  # file name → job id
    batch_id: str | None

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


def _submit(env: dict[str, str], *args: str) -> Submission:
    result = pagemill("submit", *args, env=env)
    jobs: dict[str, str] = {}
    batch_id = None
    for line in result.stdout.splitlines():
        first, _, second = line.partition("\t")
        if first == "batch":
            batch_id = second
        elif second and len(first) == 32:
            jobs[Path(second).name] = first
    return Submission(result, jobs, batch_id)


@pytest.fixture(scope="module")
def cli_env(stack_env: dict[str, str], stack_workers: dict[str, object]) -> dict[str, str]:
    # Wide enough that rich does not wrap the summary table of a 32-character job id.
    return {**stack_env, "COLUMNS": "250"}


@pytest.fixture(scope="module")
def succeeded(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Submission:
    """`pagemill submit FILE FOLDER --batch NAME --wait`, everything readable."""
    root = tmp_path_factory.mktemp("cli-ok")
    report = documents.make_scanned_pdf(
        root / "report.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS)]
    )
    folder = root / "scans"
    (folder / "deeper").mkdir(parents=True)
    documents.make_image(folder / "first.png", "PNG", None, ["The first scan says hello."])
    documents.make_image(folder / "deeper" / "second.png", "PNG", None, ["Second says goodbye."])
    (folder / ".hidden.png").write_bytes(b"not looked at")
    return _submit(cli_env, str(report), str(folder), "--batch", "cli-good", "--wait")


@pytest.fixture(scope="module")
def with_failure(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Submission:
    """The same with a text file in the folder: one job fails."""
    folder = tmp_path_factory.mktemp("cli-bad")
    documents.make_image(folder / "page.png", "PNG", None, ["A readable page."])
    (folder / "notes.txt").write_text("just some notes, not a document\n")
    return _submit(cli_env, str(folder), "--batch", "cli-bad", "--wait")


# -- submit ----------------------------------------------------------------------------


def test_submit_recurses_into_folders_and_prints_ids(succeeded: Submission) -> None:
    assert succeeded.result.returncode == 0, succeeded.output
    assert set(succeeded.jobs) == {"report.pdf", "first.png", "second.png"}, succeeded.output
    assert len(set(succeeded.jobs.values())) == 3
    lines = succeeded.result.stdout.splitlines()
    # One line per file in argument order, a folder's files sorted by path, then the batch.
    assert [line.split("\t", 1)[1].split("/cli-ok", 1)[1] for line in lines[:3]] == [
        "0/report.pdf",
        "0/scans/deeper/second.png",
        "0/scans/first.png",
    ]
    assert lines[3] == f"batch\t{succeeded.batch_id}"
    assert succeeded.batch_id and len(succeeded.batch_id) == 32


def test_submit_wait_prints_a_summary_of_every_job(succeeded: Submission) -> None:
    out = succeeded.result.stdout
    for job_id in succeeded.jobs.values():
        summary_line = next(line for line in out.splitlines() if job_id in line and "│" in line)
        assert "succeeded" in summary_line, out
    assert "3/3 documents" in succeeded.result.stderr  # the progress bar's last state


def test_submit_exits_1_when_a_job_fails_and_shows_the_error(with_failure: Submission) -> None:
    assert with_failure.result.returncode == 1, with_failure.output
    assert set(with_failure.jobs) == {"page.png", "notes.txt"}
    assert with_failure.batch_id
    lines = with_failure.result.stdout.splitlines()
    failed = next(line for line in lines if with_failure.jobs["notes.txt"] in line and "│" in line)
    assert "failed" in failed and "not a document: plain text" in failed, with_failure.output
    good = next(line for line in lines if with_failure.jobs["page.png"] in line and "│" in line)
    assert "succeeded" in good


def test_submit_of_a_missing_path_exits_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = pagemill("submit", str(tmp_path / "nope.pdf"), env=cli_env)
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr


def test_submit_with_invalid_options_exits_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    image = documents.make_image(tmp_path / "x.png", "PNG", None, ["x"])
    for args in (("--extract", "{not json"), ("--mode", "sometimes"), ("--dpi", "5")):
        result = pagemill("submit", str(image), *args, env=cli_env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "invalid options" in result.stderr
        assert result.stdout == ""  # nothing was submitted


# -- status ----------------------------------------------------------------------------


def _fields(stdout: str) -> dict[str, str]:
    fields = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    return fields


def test_status_of_a_succeeded_job(cli_env: dict[str, str], succeeded: Submission) -> None:
    job_id = succeeded.jobs["report.pdf"]
    result = pagemill("status", job_id, env=cli_env)
    assert result.returncode == 0, result.stderr
    fields = _fields(result.stdout)
    assert fields["job"] == job_id
    assert fields["file"] == "report.pdf"
    assert fields["state"] == "succeeded"
    assert fields["pages"] == "1/1 done, 0 failed"
    assert fields["time"].endswith(" s")
    assert "error" not in fields


def test_status_of_a_failed_job_shows_its_error(
    cli_env: dict[str, str], with_failure: Submission
) -> None:
    result = pagemill("status", with_failure.jobs["notes.txt"], env=cli_env)
    assert result.returncode == 0, result.stderr
    fields = _fields(result.stdout)
    assert fields["state"] == "failed"
    assert fields["pages"].startswith("0/")
    assert fields["error"] == "not a document: plain text"


def test_status_of_a_batch(cli_env: dict[str, str], with_failure: Submission) -> None:
    assert with_failure.batch_id
    result = pagemill("status", with_failure.batch_id, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert f"batch {with_failure.batch_id} cli-bad" in result.stderr
    assert "partial" in result.stderr
    assert "'succeeded': 1" in result.stderr and "'failed': 1" in result.stderr
    for name, job_id in with_failure.jobs.items():
        line = next(line for line in result.stdout.splitlines() if job_id in line)
        assert name in line
        assert ("failed" if name == "notes.txt" else "succeeded") in line


def test_status_json(cli_env: dict[str, str], succeeded: Submission) -> None:
    job_id = succeeded.jobs["report.pdf"]
    result = pagemill("status", job_id, "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["id"] == job_id and job["state"] == "succeeded"
    assert job["batch_id"] == succeeded.batch_id
    assert job["progress"]["pages_done"] == job["progress"]["pages_total"] == 1
    assert [page["number"] for page in job["pages"]] == [1]
    assert job["result"]["json"].endswith(f"/v1/jobs/{job_id}/result?format=json")

    assert succeeded.batch_id
    batch = json.loads(pagemill("status", succeeded.batch_id, "--json", env=cli_env).stdout)
    assert batch["state"] == "succeeded" and batch["jobs_by_state"] == {"succeeded": 3}
    assert batch["name"] == "cli-good" and batch["jobs_total"] == 3


def test_status_of_an_unknown_id_exits_2(cli_env: dict[str, str]) -> None:
    result = pagemill("status", "f" * 32, env=cli_env)
    assert result.returncode == 2
    assert "no job or batch" in result.stderr


# -- result ----------------------------------------------------------------------------


def test_result_markdown_to_a_file(
    cli_env: dict[str, str], succeeded: Submission, tmp_path: Path
) -> None:
    target = tmp_path / "report.md"
    result = pagemill(
        "result", succeeded.jobs["report.pdf"], "--format", "md", "-o", str(target), env=cli_env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    text = target.read_text(encoding="utf-8")
    for word in ("quarterly", "river", "rainfall", "spillway", "bridge"):
        assert word in text.lower(), (word, text)


def test_result_json_to_stdout(cli_env: dict[str, str], succeeded: Submission) -> None:
    job_id = succeeded.jobs["second.png"]
    result = pagemill("result", job_id, "--format", "json", env=cli_env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["job_id"] == job_id and document["filename"] == "second.png"
    text = " ".join(r["content"] or "" for p in document["pages"] for r in p["regions"])
    assert "goodbye" in text.lower()


def test_result_of_a_failed_job_exits_1_with_its_error(
    cli_env: dict[str, str], with_failure: Submission, tmp_path: Path
) -> None:
    target = tmp_path / "notes.md"
    result = pagemill("result", with_failure.jobs["notes.txt"], "-o", str(target), env=cli_env)
    assert result.returncode == 1
    assert "failed" in result.stderr and "not a document: plain text" in result.stderr
    assert not target.exists()


def test_result_with_a_bad_format_exits_2(cli_env: dict[str, str], succeeded: Submission) -> None:
    result = pagemill("result", succeeded.jobs["report.pdf"], "--format", "pdf", env=cli_env)
    assert result.returncode == 2 and "md or json" in result.stderr


# -- refusing an un-migrated database --------------------------------------------------


@pytest.fixture(scope="module")
def unmigrated_env(cli_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with services.postgres_database() as url:
        yield {**cli_env, "PAGEMILL_DATABASE_URL": url}


@pytest.mark.parametrize(
    "args",
    [("status", "x"), ("worker", "cpu"), ("result", "x"), ("submit", "{pdf}")],
    ids=["status", "worker", "result", "submit"],
)
def test_commands_refuse_an_unmigrated_database(
    unmigrated_env: dict[str, str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    pdf = documents.make_born_digital_pdf(tmp_path / "a.pdf", [(None, ["x"])])
    argv = [arg.format(pdf=pdf) for arg in args]
    result = pagemill(*argv, env=unmigrated_env, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "not migrated" in result.stderr and "pagemill migrate" in result.stderr


# -- configuration and outages: one clear line, no traceback ---------------------------


def _one_clear_line(result: subprocess.CompletedProcess[str], code: int, *secrets: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    for secret in secrets:
        assert secret not in output, output
    return result.stderr


def test_submit_with_a_wrong_s3_secret_names_the_credentials(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    pdf = documents.make_born_digital_pdf(tmp_path / "a.pdf", [(None, ["x"])])
    env = {**cli_env, "PAGEMILL_S3_SECRET_KEY": "not-the-secret-4711"}
    stderr = _one_clear_line(pagemill("submit", str(pdf), env=env), 2, "not-the-secret-4711")
    assert "storage refused the credentials (SignatureDoesNotMatch)" in stderr, stderr
    assert "PAGEMILL_S3_SECRET_KEY" in stderr


def _jobs_named(cli_env: dict[str, str], name: str) -> list[tuple[object, ...]]:
    import psycopg

    url = cli_env["PAGEMILL_DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id FROM jobs WHERE filename = %s", (name,)).fetchall()


def test_submit_with_the_broker_down_exits_1_and_leaves_no_job(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    pdf = documents.make_born_digital_pdf(tmp_path / "broker-down.pdf", [(None, ["x"])])
    env = {**cli_env, "PAGEMILL_BROKER_URL": f"redis://127.0.0.1:{services.free_port()}/0"}
    stderr = _one_clear_line(pagemill("submit", str(pdf), "--batch", "down", env=env), 1)
    assert "broker unavailable" in stderr and "PAGEMILL_BROKER_URL" in stderr, stderr
    assert _jobs_named(cli_env, "broker-down.pdf") == []


def test_submit_with_a_batch_name_too_long_exits_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    pdf = documents.make_born_digital_pdf(tmp_path / "long-batch.pdf", [(None, ["x"])])
    result = pagemill("submit", str(pdf), "--batch", "b" * 300, env=cli_env)
    assert "255" in _one_clear_line(result, 2)
    assert _jobs_named(cli_env, "long-batch.pdf") == []


COMMANDS = [("status", "x"), ("result", "x"), ("submit", "{pdf}"), ("worker", "cpu"), ("migrate",)]


@pytest.mark.parametrize("args", COMMANDS, ids=[args[0] for args in COMMANDS])
def test_an_unreachable_database_is_not_called_unmigrated(
    cli_env: dict[str, str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    pdf = documents.make_born_digital_pdf(tmp_path / "a.pdf", [(None, ["x"])])
    port = services.free_port()
    url = f"postgresql+psycopg://postgres:pw-9931@127.0.0.1:{port}/pagemill"
    env = {**cli_env, "PAGEMILL_DATABASE_URL": url}
    result = pagemill(*[arg.format(pdf=pdf) for arg in args], env=env, timeout=60)
    stderr = _one_clear_line(result, 2, "pw-9931")
    assert f"cannot connect to the database 'pagemill' at 127.0.0.1:{port}" in stderr, stderr
    assert "not migrated" not in stderr


@pytest.fixture(scope="module")
def password_database() -> Iterator[str]:
    """A Postgres of its own that checks passwords (the shared one trusts everyone)."""
    with postgres_cluster("right-pw-5150") as cluster:
        yield cluster.url("wrong-pw-2718")


@pytest.mark.parametrize("args", COMMANDS, ids=[args[0] for args in COMMANDS])
def test_a_refused_database_password_is_named(
    cli_env: dict[str, str], password_database: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    pdf = documents.make_born_digital_pdf(tmp_path / "a.pdf", [(None, ["x"])])
    env = {**cli_env, "PAGEMILL_DATABASE_URL": password_database}
    result = pagemill(*[arg.format(pdf=pdf) for arg in args], env=env, timeout=60)
    stderr = _one_clear_line(result, 2, "wrong-pw-2718", "right-pw-5150")
    assert "refused user 'postgres' (password authentication failed" in stderr, stderr
    assert "PAGEMILL_DATABASE_URL" in stderr and "not migrated" not in stderr
