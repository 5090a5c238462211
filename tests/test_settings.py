"""Settings: every invalid environment fails at start-up with a one-line reason."""

from __future__ import annotations

import pytest

from embedding_worker.errors import SettingsError
from embedding_worker.settings import load_settings

VARIABLES = ["MODEL_NAMES", "SERVED_MODEL_NAMES", "BATCH_SIZES", "DTYPES", "BACKEND",
             "INFINITY_QUEUE_SIZE", "RUNPOD_MAX_CONCURRENCY", "REQUEST_TIMEOUT",
             "MAX_EMBED_INPUTS", "MAX_RERANK_DOCS", "MAX_INPUT_CHARS", "MODEL_REVISIONS",
             "BAKED_HF_CACHE", "RUNPOD_VOLUME_DIR", "ONNX_QUANTIZED", "TRUST_REMOTE_CODE", "DEVICE",
             "MODEL_PROMPTS", "MAX_IMAGES_PER_REQUEST", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS",
             "IMAGE_FETCH_TIMEOUT", "ALLOW_PRIVATE_URLS", "PACK_CPU_WEIGHTS", "MAX_AUDIO_SECONDS",
             "MAX_MEDIA_PER_REQUEST", "MAX_MEDIA_BYTES", "MEDIA_FETCH_TIMEOUT", "MAX_REQUEST_MEDIA_BYTES",
             "MAX_REQUEST_PIXELS", "MAX_AUDIO_SAMPLES", "MAX_REQUEST_AUDIO_SAMPLES", "MAX_AUDIO_SAMPLE_RATE",
             "MAX_OUTPUT_VALUES", "MAX_BATCH_TOKENS", "ENDPOINT_TYPE", "PORT", "PORT_HEALTH", "HEALTH_CHECK_PATH"]


@pytest.fixture
def env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def settings_from(env, **variables):
    for name, value in variables.items():
        env.setenv(name, value)
    return load_settings()


def failure(env, **variables) -> str:
    with pytest.raises(SettingsError) as caught:
        settings_from(env, **variables)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid settings: ")
    return message


def test_defaults(env):
    settings = settings_from(env, MODEL_NAMES="a/b")
    assert [m.model_dump() for m in settings.models] == [
        {"source": "a/b", "name": "a/b", "revision": None, "batch_size": 32, "dtype": "auto",
         "backend": "torch", "prompts": None, "kind": "auto"}
    ]
    assert settings.infinity_queue_size == 48000
    assert settings.runpod_max_concurrency == 300
    assert settings.limits.model_dump() == {
        "max_embed_inputs": 2048, "max_rerank_docs": 1000, "max_input_chars": 100_000, "max_media": 64
    }


def test_served_model_names_alias_each_model(env):
    settings = settings_from(env, MODEL_NAMES="/models/bge;org/reranker", SERVED_MODEL_NAMES="bge;rr")
    assert [(m.source, m.name) for m in settings.models] == [("/models/bge", "bge"), ("org/reranker", "rr")]


def test_trust_remote_code_and_onnx_int8_are_opt_in(env):
    settings = settings_from(env, MODEL_NAMES="a/b")
    assert settings.trust_remote_code is False and settings.onnx_quantized is False
    settings = settings_from(env, TRUST_REMOTE_CODE="true", ONNX_QUANTIZED="1")
    assert settings.trust_remote_code is True and settings.onnx_quantized is True


def test_packed_cpu_weights_are_on_unless_turned_off(env):
    assert settings_from(env, MODEL_NAMES="a/b").pack_cpu_weights is True
    assert settings_from(env, PACK_CPU_WEIGHTS="false").pack_cpu_weights is False
    assert settings_from(env, PACK_CPU_WEIGHTS="0").pack_cpu_weights is False


def test_model_revisions_align_with_models(env):
    settings = settings_from(env, MODEL_NAMES="a/b;c/d", MODEL_REVISIONS="v1.0;0123abcd")
    assert [(m.source, m.revision) for m in settings.models] == [("a/b", "v1.0"), ("c/d", "0123abcd")]


def test_limits_are_configurable(env):
    settings = settings_from(env, MODEL_NAMES="a/b", MAX_EMBED_INPUTS="4", MAX_RERANK_DOCS="5",
                             MAX_INPUT_CHARS="6", MAX_IMAGES_PER_REQUEST="7", MAX_IMAGE_BYTES="8",
                             MAX_IMAGE_PIXELS="9", IMAGE_FETCH_TIMEOUT="1.5", ALLOW_PRIVATE_URLS="true",
                             MAX_AUDIO_SECONDS="2.5")
    assert settings.limits.model_dump() == {
        "max_embed_inputs": 4, "max_rerank_docs": 5, "max_input_chars": 6, "max_media": 7
    }
    limits = settings.media_limits
    assert (limits.max_bytes, limits.max_pixels, limits.fetch_timeout, limits.allow_private_urls,
            limits.max_audio_seconds) == (8, 9, 1.5, True, 2.5)


def test_lists_empty_entries_and_broadcast(env):
    settings = settings_from(env, MODEL_NAMES=" a/b ;; c/d;", BATCH_SIZES="8;16", DTYPES="fp16",
                             BACKEND="optimum")
    assert [(m.name, m.batch_size, m.dtype, m.backend.value) for m in settings.models] == [
        ("a/b", 8, "float16", "optimum"),
        ("c/d", 16, "float16", "optimum"),
    ]


@pytest.mark.parametrize("spelling, infinity_name", [
    ("auto", "auto"), ("fp16", "float16"), ("FP16", "float16"), ("float16", "float16"),
    ("bfloat16", "bfloat16"), ("float32", "float32"), ("int8", "int8"), ("fp8", "fp8"),
])
def test_dtype_spellings_map_to_infinity_names(env, spelling, infinity_name):
    from infinity_emb.primitives import Dtype

    settings = settings_from(env, MODEL_NAMES="a/b", DTYPES=spelling)
    assert settings.models[0].dtype == infinity_name
    Dtype[infinity_name]  # what Infinity accepts


CASES = {
    "missing MODEL_NAMES": ({}, "MODEL_NAMES is required"),
    "MODEL_NAMES with no names": ({"MODEL_NAMES": " ; ;"}, "MODEL_NAMES: names no model"),
    "MODEL_NAMES with a path out": ({"MODEL_NAMES": "a/.."}, "MODEL_NAMES: 'a/..' is neither a local folder "
                                                              "nor a Hugging Face id (org/name)"),
    "MODEL_NAMES with a space": ({"MODEL_NAMES": "a/b;bad name"}, "MODEL_NAMES: 'bad name' is neither"),
    "MODEL_PROMPTS not JSON": ({"MODEL_PROMPTS": "query: "}, "MODEL_PROMPTS: is not valid JSON"),
    "MODEL_PROMPTS for no model": ({"MODEL_PROMPTS": '{"e/5": {"query": "q: "}}'},
                                   "MODEL_PROMPTS: names no deployed model: 'e/5'; deployed: a/b, c/d"),
    "MODEL_PROMPTS wrong count": ({"MODEL_PROMPTS": '[{"query": "q: "}]'}, "MODEL_PROMPTS: has 1 entries for 2 models"),
    "MODEL_PROMPTS not strings": ({"MODEL_PROMPTS": '{"a/b": {"query": 1}}'},
                                  'MODEL_PROMPTS: {"query": 1} is not an object of prompt name -> prefix string'),
    "DEVICE unknown": ({"DEVICE": "tpu"}, "DEVICE: 'tpu': Input should be 'auto', 'cuda' or 'cpu'"),
    "BATCH_SIZES not an integer": ({"BATCH_SIZES": "32;abc"}, "BATCH_SIZES: 'abc' is not a positive integer"),
    "BATCH_SIZES zero": ({"BATCH_SIZES": "0"}, "BATCH_SIZES: '0' is not a positive integer"),
    "BATCH_SIZES too many": ({"BATCH_SIZES": "1;2;3"}, "BATCH_SIZES: 3 values for 2 models ('1;2;3')"),
    "DTYPES unknown": ({"DTYPES": "fp4"}, "DTYPES: 'fp4' is not one of auto, fp32"),
    "DTYPES too many": ({"DTYPES": "fp16;fp16;auto"}, "DTYPES: 3 values for 2 models"),
    "BACKEND unknown": ({"BACKEND": "tensorrt"}, "BACKEND: 'tensorrt': Input should be 'torch', 'optimum' or 'ctranslate2'"),
    "queue size not a number": ({"INFINITY_QUEUE_SIZE": "lots"}, "INFINITY_QUEUE_SIZE: 'lots': Input should be a valid integer"),
    "queue size zero": ({"INFINITY_QUEUE_SIZE": "0"}, "INFINITY_QUEUE_SIZE: 0 is not positive"),
    "aliases of the wrong count": ({"SERVED_MODEL_NAMES": "x"}, "SERVED_MODEL_NAMES: 1 names for 2 models ('x')"),
    "revisions of the wrong count": ({"MODEL_REVISIONS": "main"}, "MODEL_REVISIONS: 1 revisions for 2 models ('main')"),
    "duplicate aliases": ({"SERVED_MODEL_NAMES": "x;x"}, "served model names must be unique; repeated: x"),
    "duplicate models": ({"MODEL_NAMES": "a/b;a/b"}, "served model names must be unique; repeated: a/b"),
    "limit not positive": ({"MAX_EMBED_INPUTS": "0"}, "MAX_EMBED_INPUTS: 0 is not positive"),
    "log format unknown": ({"LOG_FORMAT": "xml"}, "LOG_FORMAT: Input should be 'text' or 'json'"),
    "audio seconds not positive": ({"MAX_AUDIO_SECONDS": "0"}, "MAX_AUDIO_SECONDS: 0.0 is not positive"),
    "batch tokens negative": ({"MAX_BATCH_TOKENS": "-1"}, "MAX_BATCH_TOKENS: -1 is negative"),
    "output values not positive": ({"MAX_OUTPUT_VALUES": "0"}, "MAX_OUTPUT_VALUES: 0 is not positive"),
    "sample rate not a number": ({"MAX_AUDIO_SAMPLE_RATE": "fast"}, "MAX_AUDIO_SAMPLE_RATE: 'fast'"),
    "port past 65535": ({"PORT": "65536"}, "PORT: 65536 is not a port (1 to 65535)"),
    "unknown endpoint type": ({"ENDPOINT_TYPE": "serverless"}, "ENDPOINT_TYPE: Input should be 'queue' or 'load_balancer'"),
    "old media name still read": ({"MAX_IMAGE_BYTES": "0"}, "is not positive"),
    "limit not a number": ({"MAX_INPUT_CHARS": "many"}, "MAX_INPUT_CHARS: 'many': Input should be a valid integer"),
    "PACK_CPU_WEIGHTS not a boolean": ({"PACK_CPU_WEIGHTS": "maybe"},
                                       "PACK_CPU_WEIGHTS: Input should be a valid boolean"),
    "concurrency negative": ({"RUNPOD_MAX_CONCURRENCY": "-1"}, "RUNPOD_MAX_CONCURRENCY: -1 is not positive"),
}


@pytest.mark.parametrize("variables, reason", CASES.values(), ids=CASES.keys())
def test_invalid_environment(env, variables, reason):
    if "MODEL_NAMES" not in variables and reason != "MODEL_NAMES is required":
        variables = {"MODEL_NAMES": "a/b;c/d", **variables}
    assert reason in failure(env, **variables)


def test_every_problem_is_reported_together(env):
    message = failure(env, MODEL_NAMES="a/b", BATCH_SIZES="x", DTYPES="fp4", BACKEND="tpu")
    assert "BATCH_SIZES" in message and "DTYPES" in message and "BACKEND" in message


def test_queue_size_is_exported_for_infinity(env):
    import os

    env.setenv("INFINITY_QUEUE_SIZE", "1")  # records the original, restored after the test
    env.delenv("INFINITY_QUEUE_SIZE")
    settings = settings_from(env, MODEL_NAMES="a/b")
    settings.export_engine_environment()
    assert os.environ["INFINITY_QUEUE_SIZE"] == "48000"


def test_cpu_kernel_caches_are_bounded_unless_set(env):
    import os

    for name in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY"):
        env.setenv(name, "1")  # records the original, restored after the test
        env.delenv(name)
    env.setenv("LRU_CACHE_CAPACITY", "512")  # a deployment's own choice wins
    settings_from(env, MODEL_NAMES="a/b").export_engine_environment()
    assert (os.environ["LRU_CACHE_CAPACITY"], os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]) == ("512", "64")


def test_model_download_timeout_must_be_positive(env):
    assert settings_from(env, MODEL_NAMES="a/b").model_download_timeout == 300
    assert settings_from(env, MODEL_DOWNLOAD_TIMEOUT="0.5").model_download_timeout == 0.5
    for bad in ("0", "-1", "soon"):
        assert "MODEL_DOWNLOAD_TIMEOUT" in failure(env, MODEL_NAMES="a/b", MODEL_DOWNLOAD_TIMEOUT=bad)


def test_memory_trim_interval_is_seconds_or_zero_for_never(env):
    assert settings_from(env, MODEL_NAMES="a/b").memory_trim_interval == 5
    assert settings_from(env, MEMORY_TRIM_INTERVAL="0").memory_trim_interval == 0
    for bad in ("-0.1", "often", "[]"):
        assert "MEMORY_TRIM_INTERVAL" in failure(env, MODEL_NAMES="a/b", MEMORY_TRIM_INTERVAL=bad)


def test_model_prompts_by_name_or_in_order(env):
    by_name = settings_from(env, MODEL_NAMES="a/b;c/d", MODEL_PROMPTS='{"c/d": {"query": "query: "}}')
    assert [m.prompts for m in by_name.models] == [None, {"query": "query: "}]
    in_order = settings_from(env, MODEL_PROMPTS='[{"document": "passage: "}, null]')
    assert [m.prompts for m in in_order.models] == [{"document": "passage: "}, None]
