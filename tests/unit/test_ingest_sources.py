"""Reading bulk sources: s3:// addresses, manifest lines and their byte offsets, and resuming
a manifest from its cursor (app/ingest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import SourceError
from app.ingest import MAX_MANIFEST_LINE, S3Url, _lines, iter_entries, parse_s3_url
from app.settings import Settings


def test_s3_urls() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == S3Url("bucket", "a/b/")
    assert parse_s3_url("s3://bucket") == S3Url("bucket", "")
    assert str(parse_s3_url("s3://my.bucket-1/k")) == "s3://my.bucket-1/k"
    for bad in ("bucket/key", "s3://", "s3://UPPER/key", "s3://a/key", "http://bucket/key"):
        with pytest.raises(SourceError, match="not an s3://BUCKET/KEY address"):
            parse_s3_url(bad)


def test_lines_carry_the_offset_after_each() -> None:
    data = b'{"a": 1}\n\n{"b": 2}\r\nlast'
    chunks = iter([data[:3], data[3:12], data[12:]])
    assert list(_lines(chunks, 100)) == [
        (b'{"a": 1}', 109),
        (b"", 110),
        (b'{"b": 2}\r', 120),
        (b"last", 124),
    ]


def test_an_overlong_line_is_dropped_not_buffered() -> None:
    long = b"x" * (MAX_MANIFEST_LINE + 10)
    chunks = iter([long[i : i + 4096] for i in range(0, len(long), 4096)] + [b"\nnext\n"])
    found = list(_lines(chunks, 0))
    assert found == [(None, len(long) + 1), (b"next", len(long) + 6)]


def test_a_manifest_resumes_after_its_cursor(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"source": "/data/a.pdf", "options": {"dpi": 100}}),
                "[1, 2]",
                json.dumps({"source": "s3://b/k/c.png", "filename": "scan c"}),
                json.dumps({"source": "s3://b/k/d.png"}),
            ]
        )
    )
    settings = Settings(data_dir=tmp_path)
    source = {"manifest": str(manifest)}
    everything = list(iter_entries(source, "", settings))
    assert [(e.source, e.filename, e.options) for e in everything] == [
        ("/data/a.pdf", "/data/a.pdf", {"dpi": 100}),
        ("", "", {}),
        ("s3://b/k/c.png", "scan c", {}),
        ("s3://b/k/d.png", "k/d.png", {}),
    ]
    assert everything[1].error == 'manifest line 2: needs {"source": "PATH or s3://BUCKET/KEY"}'
    # From the second entry's cursor on: the third and fourth, with their line numbers.
    rest = list(iter_entries(source, everything[1].cursor, settings))
    assert [e.source for e in rest] == ["s3://b/k/c.png", "s3://b/k/d.png"]
    assert [e.cursor.split(":")[1] for e in rest] == ["3", "4"]
    assert rest == everything[2:]


def test_inline_entries_resume_by_index(tmp_path: Path) -> None:
    source = {"entries": [{"source": "s3://b/x"}, {"source": "s3://b/y"}, {"nope": 1}]}
    settings = Settings(data_dir=tmp_path)
    entries = list(iter_entries(source, "1", settings))
    assert [e.source for e in entries] == ["s3://b/y", ""]
    assert entries[1].error == 'entry 3: needs {"source": "PATH or s3://BUCKET/KEY"}'
