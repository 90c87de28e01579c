"""Where the real-page corpus is: `shared/corpus` beside this checkout (as CI lays it out),
else the workplace's copy."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path:
    for candidate in (ROOT.parent / "shared" / "corpus", Path("/work/shared/corpus")):
        if (candidate / "manifest.json").is_file():
            return candidate
    return ROOT.parent / "shared" / "corpus"


CORPUS = corpus_dir()
