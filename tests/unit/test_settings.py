"""app.settings: one settings object read from PAGEMILL_* variables, embedded by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PAGEMILL_* from the outside (the test session sets some)."""
    import os

    for key in [k for k in os.environ if k.startswith("PAGEMILL_")]:
        monkeypatch.delenv(key)


def test_embedded_defaults_resolve_under_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PAGEMILL_DATA_DIR", str(tmp_path / "state"))
    settings = Settings()
    assert settings.embedded
    assert settings.database_url is None and settings.broker_url is None
    db = (tmp_path / "state" / "pagemill.db").resolve()
    assert settings.resolved_database_url == f"sqlite:///{db}"
    assert settings.resolved_broker_url == "filesystem://"
    assert settings.broker_dir == (tmp_path / "state" / "broker").resolve()
    assert not settings.uses_s3
    assert settings.resolved_storage_dir == (tmp_path / "state" / "storage").resolve()
    assert settings.layout_engine == "rapid" and settings.recognizer == "rapidocr"


def test_relative_data_dir_resolves_against_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == Path(".pagemill")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/.pagemill/pagemill.db"
    assert settings.resolved_storage_dir == tmp_path.resolve() / ".pagemill" / "storage"


def test_distributed_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PAGEMILL_DATABASE_URL": "postgresql+psycopg://u:p@db:5432/pagemill",
        "PAGEMILL_BROKER_URL": "redis://redis:6379/0",
        "PAGEMILL_S3_ENDPOINT": "http://s3:8333",
        "PAGEMILL_S3_BUCKET": "ocr",
        "PAGEMILL_S3_PREFIX": "tenant-a/",
        "PAGEMILL_STORAGE_DIR": "/srv/store",
        "PAGEMILL_TASK_MAX_ATTEMPTS": "5",
        "PAGEMILL_RETRY_BACKOFF_SECONDS": "0.25",
        "PAGEMILL_RENDER_DPI": "300",
        "PAGEMILL_TEXT_MODE": "ocr",
        "PAGEMILL_RECOGNIZER": "vllm",
        "PAGEMILL_LAYOUT_ENGINE": "paddlex",
        "PAGEMILL_PUBLIC_URL": "https://ocr.example.org",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert not settings.embedded
    assert settings.resolved_database_url == env["PAGEMILL_DATABASE_URL"]
    assert settings.resolved_broker_url == env["PAGEMILL_BROKER_URL"]
    assert settings.uses_s3 and settings.s3_bucket == "ocr" and settings.s3_prefix == "tenant-a/"
    assert settings.resolved_storage_dir == Path("/srv/store")
    assert settings.task_max_attempts == 5 and settings.retry_backoff_seconds == 0.25
    assert settings.render_dpi == 300 and settings.text_mode == "ocr"
    assert settings.recognizer == "vllm" and settings.layout_engine == "paddlex"
    assert settings.public_url == "https://ocr.example.org"


def test_bucket_alone_means_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEMILL_S3_BUCKET", "ocr")
    assert Settings().uses_s3


def test_json_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEMILL_LABEL_ROUTES", '{"header": "text", "chart": "skip"}')
    monkeypatch.setenv("PAGEMILL_VLLM_ENGINE_ARGS", '{"enforce_eager": true, "seed": 3}')
    monkeypatch.setenv("PAGEMILL_VLLM_LIMIT_MM_PER_PROMPT", '{"image": 2}')
    monkeypatch.setenv("PAGEMILL_VLLM_SPECULATIVE_CONFIG", '{"method": "mtp", "k": 1}')
    monkeypatch.setenv("PAGEMILL_LAYOUT_THRESHOLD", '{"text": 0.5, "table": 0.4}')
    monkeypatch.setenv("PAGEMILL_LAYOUT_MERGE_MODE", '{"reference": "small", "text": "large"}')
    settings = Settings()
    assert settings.label_routes == {"header": "text", "chart": "skip"}
    assert settings.vllm_engine_args == {"enforce_eager": True, "seed": 3}
    assert settings.vllm_limit_mm_per_prompt == {"image": 2}
    assert settings.vllm_speculative_config == {"method": "mtp", "k": 1}
    assert settings.layout_threshold == {"text": 0.5, "table": 0.4}
    assert settings.layout_merge_mode == {"reference": "small", "text": "large"}


def test_json_field_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.label_routes == {}
    assert settings.vllm_limit_mm_per_prompt == {"image": 1}
    assert settings.vllm_speculative_config is None
    monkeypatch.setenv("PAGEMILL_LAYOUT_THRESHOLD", "0.45")
    assert Settings().layout_threshold == 0.45


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PAGEMILL_LABEL_ROUTES", '{"header": "shout"}'),  # not a route
        ("PAGEMILL_LABEL_ROUTES", "not json"),
        ("PAGEMILL_TEXT_MODE", "sometimes"),
        ("PAGEMILL_RECOGNIZER", "tesseract"),
        ("PAGEMILL_RENDER_DPI", "high"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises((ValidationError, ValueError)):
        Settings()


def test_unknown_pagemill_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEMILL_WORKER_ROLE", "cpu")  # set by worker_command, not a field
    monkeypatch.setenv("PAGEMILL_NO_SUCH_THING", "1")
    assert Settings().render_dpi == 200


def test_get_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("PAGEMILL_RENDER_DPI", "150")
    try:
        first = get_settings()
        monkeypatch.setenv("PAGEMILL_RENDER_DPI", "250")
        assert get_settings() is first and first.render_dpi == 150
        get_settings.cache_clear()
        assert get_settings().render_dpi == 250
    finally:
        get_settings.cache_clear()


def test_the_readme_lists_every_setting_with_its_default_and_meaning() -> None:
    """The README's settings table is generated from the Settings class (names, defaults)
    and .env.example (meanings): it must be regenerated when a setting changes."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "scripts/settings_table.py", "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("<!-- settings:begin -->") : readme.index("<!-- settings:end -->")]
    for name in Settings.model_fields:
        row = next(line for line in table.splitlines() if f"`PAGEMILL_{name.upper()}`" in line)
        assert not row.endswith("|  |"), f"PAGEMILL_{name.upper()} has no meaning"
