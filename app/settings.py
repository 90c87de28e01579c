"""The one settings object. Every field reads `PAGEMILL_<NAME>` from the environment.

With nothing set, pagemill runs embedded: SQLite, a local storage folder and a broker that
needs no server, all under `data_dir`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RouteName = Literal["text", "formula", "table", "skip", "abandon"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGEMILL_", extra="ignore")

    # -- where state lives -------------------------------------------------------------
    data_dir: Path = Path(".pagemill")
    # URLs may carry passwords: kept out of the settings' repr, logged only redacted.
    database_url: str | None = Field(default=None, repr=False)  # default: SQLite in data_dir
    broker_url: str | None = Field(default=None, repr=False)  # default: filesystem broker
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
    s3_secret_key: SecretStr | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    storage_dir: Path | None = None  # default: <data_dir>/storage

    # -- limits and retries ------------------------------------------------------------
    # Each limit ends as a readable error on its job (upload, pages, image pixels) or page
    # (render time, regions); the rest of the batch goes on.
    max_upload_bytes: int = 512 * 1024 * 1024  # larger uploads are refused before storing
    max_pages_per_document: int = 10_000  # a longer document fails its job at prepare
    # Images (PNG, JPEG, TIFF, WebP) declaring more pixels than this in their header are
    # refused before decoding: a few-kilobyte file can declare a 40-gigabyte bitmap. The
    # default takes an A0 scan at 300 dpi (140 Mpx).
    max_image_pixels: int = 200_000_000
    # A PDF page still drawing after this long fails (pdfium's progressive renderer is
    # asked to pause and abandoned); the page task's Celery time limit is the backstop.
    render_timeout_seconds: float = 120.0
    # A page whose layout finds more regions than this fails: no real page has that many,
    # and each region is a crop and a recognition request.
    max_regions_per_page: int = 1_000
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

    # -- bulk ingestion (`pagemill submit s3://...`, --manifest, POST /v1/batches) --------
    # Documents one ingestion enqueues per second at most (0: no limit).
    ingest_rate: float = Field(default=200.0, ge=0)
    # Ingestion pauses while the cpu queue holds more messages than this (0: never pauses).
    ingest_max_queued: int = Field(default=5_000, ge=0)
    # Documents one ingestion reads (hashes) and copies at once: the work is waiting on S3.
    ingest_threads: int = Field(default=8, ge=1, le=64)
    # Documents recorded per transaction (their jobs and the ingestion's cursor together).
    ingest_chunk: int = Field(default=100, ge=1, le=10_000)
    # The `ingest` task works this long, then sends itself again to go on where it stopped.
    ingest_slice_seconds: float = Field(default=60.0, gt=0)
    # Source buckets each tenant may ingest from through the API, e.g.
    # '{"acme": ["acme-scans"]}' (read with the S3 credentials above). The CLI, an
    # operator's tool, may name any bucket but pagemill's own.
    ingest_buckets: dict[str, list[str]] = Field(default_factory=dict)
    # -- webhooks (a job's or batch's callback_url) -------------------------------------
    # Key of the HMAC-SHA256 signature on every delivery (X-Pagemill-Signature); without
    # it deliveries go out unsigned. Never logged.
    webhook_secret: SecretStr | None = None
    webhook_max_attempts: int = Field(default=8, ge=1)  # then the delivery is given up
    # Retries wait webhook_backoff_seconds * 2**(attempt-1), at most the maximum, with jitter.
    webhook_backoff_seconds: float = 5.0
    webhook_backoff_max_seconds: float = 600.0
    webhook_timeout_seconds: float = 10.0  # per attempt: connect, send and the answer
    # Callback URLs resolving to private, loopback or link-local addresses are refused (a
    # callback must not reach into the network pagemill runs in); true allows them.
    webhook_allow_private: bool = False
    # A delivery still waiting this long after it was due lost its message: the sweeper
    # sends it again.
    webhook_resend_after_seconds: float = 60.0

    # -- server-sent events (GET /v1/jobs/{id}/events) -----------------------------------
    events_poll_seconds: float = 1.0  # how often a stream reads its job's or batch's row
    events_heartbeat_seconds: float = 15.0  # a comment line when nothing changed this long
    # A stream ends after this long (the client reconnects with Last-Event-ID and misses
    # nothing), so no connection outlives a deploy or a proxy's idle limit by much.
    events_max_seconds: float = 300.0

    # -- render and layout -------------------------------------------------------------
    render_dpi: int = 200
    render_max_pixels: int = 40_000_000  # a page is rendered smaller if it would exceed this
    # Each rendered page is also kept as a JPEG this many pixels on its longest side, for
    # the web page (GET /v1/jobs/{id}/pages/{n}/image); 0 keeps none.
    page_image_max_side: int = Field(default=1200, ge=0, le=10_000)
    layout_engine: Literal["rapid", "paddlex", "transformers"] = "rapid"
    layout_min_score: float = 0.35
    crop_margin: int = 8
    # Threads of each ONNX model (rapid-layout, rapidocr) and of the torch layout model on
    # CPU, per process; 0 = one per core.
    # With several worker processes per machine, 1 avoids them fighting over the cores.
    onnx_threads: int = 0
    text_mode: Literal["auto", "ocr", "text"] = "auto"
    # Text lines are detected once per page (rapidocr's detection model, in the page task):
    # lines that no layout region holds become text regions, so no text is dropped, and
    # rapidocr recognizes each region's lines without detecting them again. Off: regions
    # are read as the layout model found them.
    line_detection: bool = True
    # Longer side, in pixels, the page is scaled to for line detection.
    line_detection_side: int = 1280
    # Overrides of the label → task table (workers.labels.DEFAULT_ROUTES), e.g.
    # PAGEMILL_LABEL_ROUTES='{"header": "text"}'.
    label_routes: dict[str, RouteName] = Field(default_factory=dict)

    # PP-DocLayout-V3, through transformers or PaddleX: shared settings.
    # Hub id or local folder of the safetensors weights (transformers engine).
    layout_model: str = "PaddlePaddle/PP-DocLayoutV3_safetensors"
    layout_device: str = "cpu"  # cpu | cuda:N (PaddleX: cuda:N is gpu:N)
    layout_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    layout_batch_size: int = 8  # pages per forward pass, at most
    # After the first page arrives, how long the engine waits for more before a pass.
    layout_batch_wait_ms: float = 5.0
    layout_threshold: float | dict[str, float] = 0.3  # one value, or per label (+ "default")
    layout_nms: bool = True
    # Nested boxes: large | small | union, or per label as GLM-OCR configures it.
    layout_merge_mode: str | dict[str, str] = "large"
    # Share of the GPU's memory the layout model may take (the rest is vLLM's); None = no cap.
    layout_gpu_memory_fraction: float | None = None
    layout_concurrency: int = 16  # pages one `pagemill worker layout` process holds at once
    # PaddleX only: the exported inference model.
    paddlex_model_name: str = "PP-DocLayoutV3"
    paddlex_model_dir: Path | None = None
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
    openai_api_key: SecretStr | None = None
    openai_model: str = "zai-org/GLM-OCR"
    openai_concurrency: int = 32
    openai_timeout_seconds: float = 120.0
    openai_max_retries: int = 5

    # Key that encrypts document passwords in the database (a Fernet key: 32 url-safe
    # base64 bytes). Embedded, one is generated into <data_dir>/secret.key (mode 0600);
    # distributed, the API and every worker must share it, or passwords are refused.
    secret_key: SecretStr | None = None

    # -- logs and metrics --------------------------------------------------------------
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    # Each worker process set serves Prometheus metrics and its health on this port (one
    # port more per GPU with --gpus); 0 turns it off.
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)

    # -- API ---------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str | None = None  # base of result links, when behind a proxy
    # "on": every /v1 route needs `Authorization: Bearer KEY` (`pagemill keys create`);
    # "off" (only when set explicitly) serves everyone as the tenant "default".
    api_auth: Literal["on", "off"] = "on"
    presign_seconds: int = Field(default=900, ge=1, le=604_800)  # presigned URLs (S3: ≤ 7 days)
    # `pagemill flower`: user:password[,user:password...] (or --basic-auth-file).
    flower_basic_auth: SecretStr | None = None

    @field_validator(
        "label_routes",
        "vllm_engine_args",
        "vllm_limit_mm_per_prompt",
        "ingest_buckets",
        mode="before",
    )
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
