"""`pagemill run` in embedded mode: nothing configured, no servers; it starts its own workers
on a broker that needs no server, SQLite and a local storage folder, and stops them after.

How the test knows the workers are gone: every process `pagemill run` starts inherits its
environment, so each has this test's unique PAGEMILL_DATA_DIR in /proc/<pid>/environ. While
the run goes on, the test records the pids of the Celery processes carrying that value (so
it knows it would see them); after the run it scans /proc again and finds none. Other
pagemill workers on this machine (other test sessions, other engineers) have other data
dirs and cannot be confused with these; a pid reused by an unrelated process would not carry
the value either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import documents
from tests.support.text import character_error_rate

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")

SUB_TITLE = "Annual Survey of Forest Birds"
SUB_PARAGRAPHS = (
    "Volunteers counted owls and woodpeckers along the eastern trail.",
    "The number of nesting pairs grew by a fifth since the last survey.",
)
DIGITAL_PARAGRAPHS = (
    "This letter was typed on a computer and never printed.",
    "Its words come straight from the text layer of the file.",
)


def _text(title: str | None, paragraphs: tuple[str, ...]) -> str:
    return "\n".join(([title] if title else []) + list(paragraphs))


def _marked_processes(marker: bytes) -> dict[int, str]:
    """Live processes whose environment holds `marker`, with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie runs nothing
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    workers_seen: dict[int, str] = field(default_factory=dict)
    left_over: dict[int, str] = field(default_factory=dict)


def _run(home: Path, *args: str, timeout: float = 300) -> Run:
    """`pagemill run ARGS` in `home` with a clean environment: no PAGEMILL_* but the data
    dir. Watches /proc for the workers while it runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAGEMILL_")}
    data_dir = home / "state"
    env["PAGEMILL_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"  # rich's summary table: keep each row on one line
    marker = f"PAGEMILL_DATA_DIR={data_dir}".encode()
    process = subprocess.Popen(
        [PAGEMILL, "run", *args],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"pagemill run still running after {timeout} s")
        seen.update((pid, cmd) for pid, cmd in _marked_processes(marker).items() if "celery" in cmd)
        time.sleep(0.1)
    stdout, stderr = process.communicate()
    left_over = _marked_processes(marker)
    return Run(process.returncode, stdout.decode(), stderr.decode(), seen, left_over)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded")


@pytest.fixture(scope="module")
def mixed_run(home: Path) -> Iterator[Run]:
    docs = home / "docs"
    (docs / "sub").mkdir(parents=True)
    documents.make_scanned_pdf(
        docs / "report.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS)]
    )
    documents.make_scanned_pdf(docs / "sub" / "report.pdf", [(SUB_TITLE, SUB_PARAGRAPHS)])
    documents.make_born_digital_pdf(docs / "letter.pdf", [(None, DIGITAL_PARAGRAPHS)])
    (docs / "notes.txt").write_text("just some notes, not a document\n")
    yield _run(home, "docs", "-o", "out")


def test_embedded_run_reports_the_failure(mixed_run: Run) -> None:
    assert mixed_run.returncode == 1, mixed_run.stderr
    assert "4 documents submitted" in mixed_run.stderr
    assert "3 of 4 documents succeeded" in mixed_run.stderr
    row = next(line for line in mixed_run.stderr.splitlines() if "notes.txt" in line)
    assert "failed" in row and "not a document: plain text" in row, mixed_run.stderr
    # Only the failure is in the table.
    assert "report.pdf" not in mixed_run.stderr.split("succeeded; results in")[1]


def test_embedded_run_writes_every_good_document(home: Path, mixed_run: Run) -> None:
    out = home / "out"
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [
        "letter.json",
        "letter.md",
        "report.json",
        "report.md",
        "sub/report.json",
        "sub/report.md",
    ]


@pytest.mark.parametrize(
    ("name", "title", "paragraphs"),
    [
        ("report", documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS),
        ("sub/report", SUB_TITLE, SUB_PARAGRAPHS),
        ("letter", None, DIGITAL_PARAGRAPHS),
    ],
)
def test_embedded_markdown_is_accurate(
    home: Path, mixed_run: Run, name: str, title: str | None, paragraphs: tuple[str, ...]
) -> None:
    markdown = (home / "out" / f"{name}.md").read_text(encoding="utf-8")
    cer = character_error_rate(_text(title, paragraphs), markdown)
    assert cer < 0.10, f"{name}: CER {cer:.3f}\n{markdown}"
    document = json.loads((home / "out" / f"{name}.json").read_text(encoding="utf-8"))
    assert document["filename"] == Path(name).name + ".pdf"
    (page,) = document["pages"]
    assert page["state"] == "succeeded" and page["regions"]


def test_scanned_pages_are_ocred(home: Path, mixed_run: Run) -> None:
    document = json.loads((home / "out" / "report.json").read_text(encoding="utf-8"))
    sources = {r["source"] for r in document["pages"][0]["regions"] if r["content"]}
    assert sources == {"ocr"}


def test_born_digital_text_comes_from_the_text_layer(home: Path, mixed_run: Run) -> None:
    document = json.loads((home / "out" / "letter.json").read_text(encoding="utf-8"))
    (page,) = document["pages"]
    assert page["text_layer"] == "trusted"
    with_text = [r for r in page["regions"] if r["content"]]
    assert with_text
    assert {r["source"] for r in with_text} == {"text_layer"}, with_text
    assert {r["engine"] for r in with_text} == {"pdfium-text-layer"}


def test_embedded_state_stays_under_the_data_dir(home: Path, mixed_run: Run) -> None:
    state = home / "state"
    assert (state / "pagemill.db").is_file()
    assert (state / "storage" / "default" / "originals").is_dir()  # the tenant "default"
    assert (state / "broker").is_dir()
    # Nothing in the working directory but what the test made and the outputs.
    assert not (home / ".pagemill").exists()
    assert {"docs", "out", "state"} <= {p.name for p in home.iterdir()}


def test_no_worker_processes_remain(mixed_run: Run) -> None:
    roles = {cmd.split(" -Q ", 1)[1].split()[0] for cmd in mixed_run.workers_seen.values()}
    assert roles == {"cpu", "gpu"}, mixed_run.workers_seen  # the check can see workers
    assert mixed_run.left_over == {}, mixed_run.left_over


def test_second_run_with_good_documents_exits_0(home: Path, mixed_run: Run) -> None:
    docs = home / "more"
    docs.mkdir()
    documents.make_image(docs / "hello.png", "PNG", None, ["A second run says hello."])
    second = _run(home, "more", "-o", "out2")
    assert second.returncode == 0, second.stderr
    assert "1 of 1 documents succeeded" in second.stderr
    assert "hello" in (home / "out2" / "hello.md").read_text(encoding="utf-8").lower()
    assert second.left_over == {}, second.left_over


def test_documents_with_the_same_stem_do_not_overwrite_each_other(home: Path) -> None:
    """scan.pdf beside scan.png, and a scan.png given as a file from another folder: three
    documents, so three results, whatever names the runner gives them."""
    docs = {
        "pair/scan.pdf": ("The portable document speaks of lighthouses.",),
        "pair/scan.png": ("The picture speaks of harbours.",),
        "single/scan.png": ("Another folder speaks of glaciers.",),
    }
    for relative, paragraphs in docs.items():
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".pdf":
            # A realistic page: a lone line at the top is read as a running header.
            body = (*documents.SAMPLE_PARAGRAPHS, *paragraphs)
            documents.make_born_digital_pdf(path, [(documents.SAMPLE_TITLE, body)])
        else:
            documents.make_image(path, "PNG", None, paragraphs)
    result = _run(home, "pair", "single/scan.png", "-o", "same-stem")
    assert result.returncode == 0, result.stderr
    assert "3 of 3 documents succeeded" in result.stderr
    markdown = {
        str(p.relative_to(home / "same-stem")): p.read_text(encoding="utf-8").lower()
        for p in (home / "same-stem").rglob("*.md")
    }
    for word in ("lighthouses", "harbours", "glaciers"):
        holders = [name for name, text in markdown.items() if word in text]
        assert len(holders) == 1, f"{word!r} is in {holders}; written: {sorted(markdown)}"
