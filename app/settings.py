"""The one settings object. Every field reads `PAGEMILL_<NAME>` from the environment.

With nothing set, pagemill runs embedded: SQLite, a local storage folder and a broker that
needs no server, all under `data_dir`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RouteName = Literal["text", "formula", "table", "skip", "abandon"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGEMILL_", extra="ignore")

    # -- where state lives -------------------------------------------------------------
    data_dir: Path = Path(".pagemill")
    database_url: str | None = None  # default: sqlite:///<data_dir>/pagemill.db
    broker_url: str | None = None  # default: filesystem broker under <data_dir>/broker
    broker_polling_interval: float = 0.02  # filesystem broker only
    # Redis hands an unacknowledged message to another worker after this long: the time to
    # recover work from a worker machine that died. Longer than any task may run.
    broker_visibility_timeout: int = 3600
    # Redis only: a prefix on every broker key, so several deployments share one Redis.
    broker_key_prefix: str = ""

    # Object storage: S3 when s3_endpoint or s3_bucket is set, else a local folder.
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    storage_dir: Path | None = None  # default: <data_dir>/storage

    # -- limits and retries ------------------------------------------------------------
    max_upload_bytes: int = 512 * 1024 * 1024
    max_pages_per_document: int = 10_000
    task_max_attempts: int = 3  # a poison message ends after this many deliveries
    retry_backoff_seconds: float = 2.0

    # -- leases and the sweeper (`pagemill sweeper`) --------------------------------------
    # A worker process refreshes the heartbeat of the work it holds this often.
    heartbeat_seconds: float = 10.0
    # Work whose heartbeat is older than this has lost its holder (a killed worker): the
    # sweeper sends it again, so it waits about this long instead of the visibility timeout.
    lease_seconds: float = 60.0
    # Waiting work (queued, or between stages) this old while its queue is empty cannot have
    # a message in the broker: the sweeper sends it again.
    stuck_after_seconds: float = 300.0
    # A job whose last page finished this long ago and is still not assembled gets its
    # `assemble` sent again.
    assembly_grace_seconds: float = 60.0
    sweep_interval_seconds: float = 30.0
    # How long a task keeps trying to send its next message while the broker is unreachable
    # before it gives up its delivery (the message goes back; the sweeper is the net).
    send_retry_seconds: float = 30.0
    inline_image_max_bytes: int = 256 * 1024  # crops larger than this go through storage

    # -- render and layout -------------------------------------------------------------
    render_dpi: int = 200
    render_max_pixels: int = 40_000_000  # a page is rendered smaller if it would exceed this
    layout_engine: Literal["rapid", "paddlex"] = "rapid"
    layout_min_score: float = 0.35
    crop_margin: int = 8
    # Threads of each ONNX model (rapid-layout, rapidocr) per process; 0 = one per core.
    # With several worker processes per machine, 1 avoids them fighting over the cores.
    onnx_threads: int = 0
    text_mode: Literal["auto", "ocr", "text"] = "auto"
    # Overrides of the label → task table (workers.labels.DEFAULT_ROUTES), e.g.
    # PAGEMILL_LABEL_ROUTES='{"header": "text"}'.
    label_routes: dict[str, RouteName] = Field(default_factory=dict)

    # PP-DocLayout-V3 through PaddleX.
    paddlex_model_name: str = "PP-DocLayoutV3"
    paddlex_model_dir: Path | None = None
    paddlex_device: str = "cpu"
    paddlex_batch_size: int = 1
    paddlex_threshold: float | dict[str, float] = 0.3  # one value, or per label
    paddlex_layout_nms: bool = True
    # layout_merge_bboxes_mode: large | small | union, or per label as GLM-OCR configures it.
    paddlex_merge_mode: str | dict[str, str] = "large"
    paddlex_layout_shape_mode: str = "auto"

    # -- recognition -------------------------------------------------------------------
    recognizer: Literal["rapidocr", "vllm", "openai"] = "rapidocr"
    page_concurrency: int = 4  # page messages one gpu worker holds at once
    max_tokens: int = 4096
    min_pixels: int = 12_544  # 112 * 112
    max_pixels: int = 1_003_520  # 28 * 28 * 1280
    repetition_window: int = 48  # chars; a tail repeated this often is a runaway
    repetition_max_repeats: int = 8

    # vLLM in-process engine (GLM-OCR).
    vllm_model: str = "zai-org/GLM-OCR"
    vllm_dtype: str = "auto"
    vllm_gpu_memory_utilization: float = 0.9
    vllm_max_model_len: int = 8192
    vllm_max_num_seqs: int = 256
    vllm_max_num_batched_tokens: int | None = None
    vllm_speculative_config: dict[str, Any] | None = None  # {"method": "mtp", ...}
    vllm_limit_mm_per_prompt: dict[str, int] = Field(default_factory=lambda: {"image": 1})
    vllm_engine_args: dict[str, Any] = Field(default_factory=dict)  # anything else

    # OpenAI-compatible server (e.g. an existing `vllm serve`).
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: str | None = None
    openai_model: str = "zai-org/GLM-OCR"
    openai_concurrency: int = 32
    openai_timeout_seconds: float = 120.0
    openai_max_retries: int = 5

    # -- API ---------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str | None = None  # base of result links, when behind a proxy

    @field_validator("label_routes", "vllm_engine_args", "vllm_limit_mm_per_prompt", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @property
    def embedded(self) -> bool:
        """True when no broker server is configured: `pagemill run` starts its own workers."""
        return self.broker_url is None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'pagemill.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "storage").resolve()

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_endpoint or self.s3_bucket)


@lru_cache
def get_settings() -> Settings:
    return Settings()
