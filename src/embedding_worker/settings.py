"""Worker configuration, read from the environment once at start-up.

Every problem is collected and reported in one line (`SettingsError`); the entry point
prints it and exits non-zero.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from embedding_worker.engine.cpu.quota import available_cpus, limit_threads
from embedding_worker.engine.cpu.memory import bound_kernel_caches
from embedding_worker.errors import SettingsError
from embedding_worker.engine.hardware import Device
from embedding_worker.media.fetch import MediaLimits
from embedding_worker.prompts import parse_model_prompts
from embedding_worker.api.schemas import RequestLimits


class Backend(str, Enum):
    torch = "torch"
    optimum = "optimum"
    ctranslate2 = "ctranslate2"


# Spellings users write -> the names of Infinity's `Dtype` enum (which rejects "fp16").
DTYPE_SPELLINGS = {
    "auto": "auto",
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "fp8": "fp8",
}


class ModelSpec(BaseModel):
    """One model to serve: what to load and how."""

    source: str  # hub id or local path, as written in MODEL_NAMES
    name: str  # what clients call it: SERVED_MODEL_NAMES, else `source`
    revision: str | None = None  # MODEL_REVISIONS; None: the hub's default branch
    batch_size: int
    dtype: str  # an Infinity `Dtype` name
    backend: Backend
    prompts: dict[str, str] | None = None  # MODEL_PROMPTS: added to the model's own prompts
    kind: str = "auto"  # MODEL_KINDS: how to read its files (`engine/kinds/__init__.py`)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(";") if item.strip()]


class WorkerSettings(BaseSettings):
    """Environment variables the worker reads (names are case-insensitive)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    model_names: str
    served_model_names: str = ""
    model_revisions: str = ""
    model_prompts: str = ""
    model_kinds: str = "auto"  # per model: auto (from its files), infinity, or a kind's name
    batch_sizes: str = "32"
    dtypes: str = "auto"
    backend: Backend = Backend.torch
    device: Device = Device.auto
    infinity_queue_size: int = 48000
    runpod_max_concurrency: int = 300
    request_timeout: float = 300.0
    max_embed_inputs: int = 2048
    max_rerank_docs: int = 1000
    max_input_chars: int = 100_000
    # Media limits apply to images and audio alike; the names they had when only images were
    # served are still read (MAX_IMAGES_PER_REQUEST, MAX_IMAGE_BYTES, IMAGE_FETCH_TIMEOUT).
    max_media_per_request: int = Field(64, validation_alias=AliasChoices("max_media_per_request",
                                                                         "max_images_per_request"))
    max_media_bytes: int = Field(10 * 2**20, validation_alias=AliasChoices("max_media_bytes", "max_image_bytes"))
    max_request_media_bytes: int = 64 * 2**20  # fetched or inline bytes of all a request's media
    media_fetch_timeout: float = Field(10.0, validation_alias=AliasChoices("media_fetch_timeout",
                                                                           "image_fetch_timeout"))
    max_image_pixels: int = 40_000_000  # per image, from its header
    max_request_pixels: int = 200_000_000  # all a request's images together
    max_audio_seconds: float = 60.0  # longer audio clips are refused
    max_audio_samples: int = 5_760_000  # frames x channels per clip: 60 s of 48 kHz stereo
    max_request_audio_samples: int = 100_000_000  # all a request's clips together
    max_audio_sample_rate: int = 192_000  # Hz
    max_pdf_pages: int = 32  # PDF pages one request embeds (each about 1,030 token vectors on ColPali)
    max_output_values: int = 2**23  # numbers in one response: 2,048 vectors of 4,096 dimensions
    # tokens one request is read as (prompts and rerank queries counted each time they are read): the
    # largest body RunPod takes (30 MB) of plain text, and no field may multiply it
    max_request_tokens: int = 2**23
    max_batch_tokens: int = 32768  # padded tokens per forward pass; 0: only BATCH_SIZES bounds a batch
    long_inputs_chunked: bool = False  # embed texts past a model's limit whole, in windows (per request: chunked)
    log_format: Literal["text", "json"] = "text"  # one line per event: plain, or a JSON object
    # RunPod's two endpoint types: jobs from its queue, or HTTP straight from its load balancer
    endpoint_type: Literal["queue", "load_balancer"] = "queue"
    host: str = "0.0.0.0"  # load_balancer: the address to listen on (RunPod's load balancer reaches every one)
    port: int = 80  # load_balancer: the API's port (RunPod's PORT)
    port_health: int | None = None  # load_balancer: the health route's port; None: PORT
    health_check_path: str = "/ping"  # load_balancer: what RunPod polls
    allow_private_urls: bool = False  # fetch image URLs on loopback and private networks too
    onnx_quantized: bool = False
    trust_remote_code: bool = False  # runs code from the model repository: opt in per deployment
    pack_cpu_weights: bool = True  # oneDNN linear layers with packed weights on a CPU
    model_download_timeout: float = 300.0  # seconds a model download may go without progress
    memory_trim_interval: float = 5.0  # seconds between handing freed memory back; 0: never
    baked_hf_cache: str = "/opt/models/hub"
    runpod_volume_dir: str = "/runpod-volume"

    @field_validator("model_names")
    @classmethod
    def _at_least_one_model(cls, value: str) -> str:
        if not _split(value):
            raise ValueError("names no model; give `;`-separated Hugging Face ids or paths")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        for name in _split(value):
            if os.path.isdir(name) or name.startswith(("/", "./", "../", "~")):
                continue  # a folder: whether it holds a model is checked when it loads
            try:
                validate_repo_id(name)
            except HFValidationError:
                raise ValueError(f"{name!r} is neither a local folder nor a Hugging Face id (org/name)") from None
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _positive_integers(cls, value: str) -> str:
        for item in _split(value) or [value]:
            if not item.isdigit() or int(item) < 1:
                raise ValueError(f"{item!r} is not a positive integer")
        return value

    @field_validator("dtypes")
    @classmethod
    def _known_dtypes(cls, value: str) -> str:
        for item in _split(value) or [value]:
            if item.lower() not in DTYPE_SPELLINGS:
                raise ValueError(f"{item!r} is not one of {', '.join(DTYPE_SPELLINGS)}")
        return value

    @field_validator("model_kinds")
    @classmethod
    def _known_kinds(cls, value: str) -> str:
        from embedding_worker.engine.kinds import kind_names

        for item in _split(value):
            if item.lower() not in kind_names():
                raise ValueError(f"{item!r} is not one of {', '.join(kind_names())}")
        return value

    @field_validator(
        "infinity_queue_size",
        "runpod_max_concurrency",
        "request_timeout",
        "max_embed_inputs",
        "max_rerank_docs",
        "max_input_chars",
        "max_media_per_request",
        "max_media_bytes",
        "max_request_media_bytes",
        "media_fetch_timeout",
        "max_image_pixels",
        "max_request_pixels",
        "max_audio_seconds",
        "max_audio_samples",
        "max_request_audio_samples",
        "max_audio_sample_rate",
        "max_pdf_pages",
        "max_output_values",
        "max_request_tokens",
        "model_download_timeout",
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"{value!r} is not positive")
        return value

    @field_validator("port", "port_health")
    @classmethod
    def _a_port(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 65535:
            raise ValueError(f"{value} is not a port (1 to 65535)")
        return value

    @field_validator("port_health", mode="before")
    @classmethod
    def _empty_is_port(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("health_check_path")
    @classmethod
    def _a_path(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not a URL path (it starts with /, without spaces)")
        return value

    @field_validator("max_batch_tokens", "memory_trim_interval")
    @classmethod
    def _not_negative(cls, value: float, info: ValidationInfo) -> float:
        if value < 0:
            what = {"max_batch_tokens": "give padded tokens per forward pass, or 0 for no bound",
                    "memory_trim_interval": "give seconds, or 0 to never trim"}[info.field_name]
            raise ValueError(f"{value!r} is negative; {what}")
        return value

    @model_validator(mode="after")
    def _one_value_per_model(self) -> WorkerSettings:
        count = len(_split(self.model_names))
        problems = [
            f"{var}: {len(values)} values for {count} models ({raw!r}); give one per model or one for all"
            for var, raw, values in (
                ("BATCH_SIZES", self.batch_sizes, _split(self.batch_sizes)),
                ("DTYPES", self.dtypes, _split(self.dtypes)),
                ("MODEL_KINDS", self.model_kinds, _split(self.model_kinds) or ["auto"]),
            )
            if len(values) not in (1, count)
        ]
        revisions = _split(self.model_revisions)
        if revisions and len(revisions) != count:
            problems.append(
                f"MODEL_REVISIONS: {len(revisions)} revisions for {count} models "
                f"({self.model_revisions!r}); give one per model, in MODEL_NAMES order"
            )
        aliases = _split(self.served_model_names)
        if aliases and len(aliases) != count:
            problems.append(
                f"SERVED_MODEL_NAMES: {len(aliases)} names for {count} models "
                f"({self.served_model_names!r}); give one per model, in MODEL_NAMES order"
            )
        elif duplicates := sorted({n for n in self.served_names if self.served_names.count(n) > 1}):
            problems.append(f"served model names must be unique; repeated: {', '.join(duplicates)}")
        else:
            try:
                parse_model_prompts(self.model_prompts, _split(self.model_names), self.served_names)
            except ValueError as exc:
                problems.append(f"MODEL_PROMPTS: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def served_names(self) -> list[str]:
        return _split(self.served_model_names) or _split(self.model_names)

    @property
    def models(self) -> list[ModelSpec]:
        sources = _split(self.model_names)
        sizes = _per_model(_split(self.batch_sizes), len(sources))
        dtypes = _per_model(_split(self.dtypes), len(sources))
        revisions = _split(self.model_revisions) or [None] * len(sources)
        prompts = parse_model_prompts(self.model_prompts, sources, self.served_names)
        kinds = _per_model(_split(self.model_kinds.lower()) or ["auto"], len(sources))
        return [
            ModelSpec(
                source=source,
                name=name,
                revision=revision,
                batch_size=int(size),
                dtype=DTYPE_SPELLINGS[dtype.lower()],
                backend=self.backend,
                prompts=model_prompts,
                kind=kind,
            )
            for source, name, revision, size, dtype, model_prompts, kind in zip(
                sources, self.served_names, revisions, sizes, dtypes, prompts, kinds
            )
        ]

    @property
    def limits(self) -> RequestLimits:
        return RequestLimits(
            max_embed_inputs=self.max_embed_inputs,
            max_rerank_docs=self.max_rerank_docs,
            max_input_chars=self.max_input_chars,
            max_media=self.max_media_per_request,
        )

    @property
    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            max_bytes=self.max_media_bytes, max_request_bytes=self.max_request_media_bytes,
            fetch_timeout=self.media_fetch_timeout, allow_private_urls=self.allow_private_urls,
            max_pixels=self.max_image_pixels, max_request_pixels=self.max_request_pixels,
            max_audio_seconds=self.max_audio_seconds, max_audio_samples=self.max_audio_samples,
            max_request_audio_samples=self.max_request_audio_samples, max_sample_rate=self.max_audio_sample_rate,
            max_pdf_pages=self.max_pdf_pages,
        )

    def export_engine_environment(self) -> None:
        """Set the variables Infinity and the math libraries read when first imported."""
        os.environ["INFINITY_QUEUE_SIZE"] = str(self.infinity_queue_size)
        limit_threads(available_cpus())
        bound_kernel_caches()


def _per_model(values: list[str], count: int) -> list[str]:
    return values * count if len(values) == 1 else values


def load_settings() -> WorkerSettings:
    """Read and validate the environment; raise `SettingsError` naming every problem."""
    try:
        return WorkerSettings()
    except ValidationError as exc:
        raise SettingsError("invalid settings: " + "; ".join(_describe(e) for e in exc.errors())) from None


def _describe(error: dict) -> str:
    variable = "".join(str(part) for part in error["loc"][:1]).upper()
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{variable} is required"
    if error["type"] in ("int_parsing", "float_parsing", "enum"):
        return f"{variable}: {error['input']!r}: {message}"
    return f"{variable}: {message}" if variable else message
