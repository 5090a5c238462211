"""Visual documents: pages per second through the worker's service (PDF rendering, batching and
the forward pass included), bytes per page in each encoding, and what `pool_factor` costs in
ranking, on models built on the spot (no trained ColPali's weights can be had offline here):

- the tiny ColPali and ColQwen2 of the tests (2 layers, 16-dimensional vectors): the path's
  own cost, and the ranking agreement of pooled pages (their vectors come from pages
  rendered from text on white, so background patches repeat, as on real pages);
- a random ColQwen2 of the real one's shape (Qwen2-VL-2B: 28 text layers of 1,536, a
  32-layer vision tower of 1,280; 128-dimensional vectors; 768 visual tokens a page at
  most), a few pages: the forward pass's cost on this CPU at its default precision.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, timed_requests, worker_for

QUERIES = ["quarterly revenue by region", "the safety instructions for the pump", "a table of results",
           "who signed the contract", "the cat sat on the mat", "figure 3 shows the error", "paris and rome",
           "installation steps", "total cost in euros", "the river near the hill", "quantum bits", "appendix b"]


def _tests_module(name: str):
    sys.path.insert(0, str(ROOT / "tests"))
    return __import__(name)


def text_pdf(pages: int, seed: int = 0) -> bytes:
    """`pages` A4 pages of generated text lines and a box or two, written by Pillow."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    words = " ".join(QUERIES).split()
    pictures = []
    for _ in range(pages):
        page = Image.new("RGB", (595, 842), "white")
        draw = ImageDraw.Draw(page)
        for line in range(int(rng.integers(8, 30))):
            draw.text((40, 40 + 24 * line), " ".join(rng.choice(words, int(rng.integers(3, 10)))), fill="black")
        for _ in range(int(rng.integers(0, 3))):
            x, y = int(rng.integers(40, 400)), int(rng.integers(100, 700))
            draw.rectangle((x, y, x + 150, y + 80), outline="black", fill=tuple(int(c) for c in rng.integers(120, 255, 3)))
        pictures.append(page)
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="PDF", save_all=True, append_images=pictures[1:], resolution=72)
    return buffer.getvalue()


class Served:
    """A worker built in this process and the one event loop its engines run on."""

    def __init__(self, name: str, folder: Path, **variables: str) -> None:
        self.name, self.loop = name, asyncio.new_event_loop()
        self.worker = worker_for("torch", MODEL_NAMES=str(folder), SERVED_MODEL_NAMES=name, **variables)
        self.model = self.worker.registry.resolve(name)
        self.run(self.worker.registry.start())

    def run(self, work):
        return self.loop.run_until_complete(work)

    def embed(self, inputs: list, **options) -> list[np.ndarray]:
        from embedding_worker.api.schemas import EmbeddingRequest

        answer = self.run(self.worker.handler.service.embed(EmbeddingRequest(model=self.name, input=inputs, **options)))
        return [np.asarray(item.embedding, dtype=np.float32) for item in answer.data]

    def close(self) -> None:
        self.run(self.worker.registry.stop())
        self.loop.close()


def _pages_per_second(served: Served, document: bytes, pages: int, per_request: int, concurrency: int) -> float:
    from embedding_worker.api.schemas import EmbeddingRequest

    reference = base64.b64encode(document).decode()
    service = served.worker.handler.service

    async def run() -> float:
        requests = [EmbeddingRequest(model=served.name, input=[{"pdf": reference,
                                                                "pages": list(range(i, i + per_request))}])
                    for i in range(0, pages, per_request)]
        return await timed_requests(service, requests, concurrency)

    return round(pages / served.run(run()), 2)


def _maxsim(query: np.ndarray, page: np.ndarray) -> float:
    return float((query @ page.T).max(axis=1).sum())


def pooling_agreement(served: Served, pages: int = 24) -> list[dict]:
    """For each pool_factor: vectors kept, and how the MaxSim order of `pages` for each query
    compares with the unpooled one (top-1 kept, top-3 overlap, Kendall's tau)."""
    from scipy.stats import kendalltau

    document = "data:application/pdf;base64," + base64.b64encode(text_pdf(pages, seed=1)).decode()
    queries = served.embed(QUERIES)
    whole = served.embed([{"pdf": document}])
    base = np.array([[_maxsim(q, p) for p in whole] for q in queries])
    rows = []
    for factor in (2, 3, 4):
        pooled = served.embed([{"pdf": document}], pool_factor=factor)
        scores = np.array([[_maxsim(q, p) for p in pooled] for q in queries])
        top1 = np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(base, scores)])
        top3 = np.mean([len(set(np.argsort(-a)[:3]) & set(np.argsort(-b)[:3])) / 3 for a, b in zip(base, scores)])
        tau = np.mean([kendalltau(a, b).statistic for a, b in zip(base, scores)])
        rows.append({"pool_factor": factor, "vectors_kept": round(sum(map(len, pooled)) / sum(map(len, whole)), 3),
                     "top1_kept": round(float(top1), 3), "top3_overlap": round(float(top3), 3),
                     "kendall_tau": round(float(tau), 3)})
    return rows


def page_bytes(matrix: np.ndarray) -> dict:
    """Bytes one page's vectors take in a JSON answer, in each encoding."""
    import orjson

    from embedding_worker import outputs

    sizes = {}
    for encoding in ("float", "base64", "base64_float16"):
        value = outputs.multi_vector(matrix, encoding)
        sizes[encoding] = len(orjson.dumps(value if isinstance(value, list) else value.model_dump(exclude_none=True)))
    return {"shape": list(matrix.shape), **sizes}


def real_size_colqwen2(folder: Path) -> Path:
    """A random ColQwen2 of colqwen2-v1.0's shape (Qwen2-VL-2B under it), bfloat16, saved as
    the -hf checkpoint ships; the tests' tokenizer (ids within its vocabulary)."""
    import torch
    from transformers import ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor, Qwen2VLConfig

    tiny = _tests_module("tiny_families").colqwen2(folder / "tiny")
    processor = ColQwen2Processor.from_pretrained(tiny)
    processor.image_processor.max_pixels = 768 * 28 * 28
    processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 768 * 28 * 28}
    processor.save_pretrained(folder / "model")
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in
           ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    vlm = Qwen2VLConfig(
        text_config={"vocab_size": 151_936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32_768,
                     "rope_theta": 1_000_000.0, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
        vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    config = ColQwen2Config(vlm_config=vlm, embedding_dim=128)
    with torch.device("meta"):
        model = ColQwen2ForRetrieval(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.fill_(1.0)
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float32) * 0.02)
        for name, buffer in model.named_buffers():
            if "inv_freq" in name:  # rotary frequencies: rebuilt, as the model's own __init__ makes them
                dim = buffer.numel() * 2
                base = 1_000_000.0 if "language" in name or "model.rotary" in name else 10_000.0
                buffer.copy_(1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)))
    model.save_pretrained(folder / "model")
    del model
    gc.collect()
    return folder / "model"


def visual(quick: bool = False) -> dict:
    from embedding_worker.engine.hardware import cpu_has_native_bf16

    families = _tests_module("tiny_families")
    root = Path(tempfile.mkdtemp(prefix="bench-visual-"))
    result: dict = {"dtype": "bfloat16" if cpu_has_native_bf16() else "float32", "tiny": {}}
    try:
        pages = 16 if quick else 48
        document = text_pdf(pages)
        for name in ("colpali", "colqwen2"):
            folder = getattr(families, name)(root / name)
            served = Served(name, folder, BATCH_SIZES="8", MAX_PDF_PAGES="64")
            result["tiny"][name] = {
                "pages_per_s": _pages_per_second(served, document, pages, per_request=8, concurrency=2),
                "render_pixels": served.model.page_pixels, "page_tokens_at_most": served.model.page_tokens}
            if name == "colpali":
                result["pooling"] = pooling_agreement(served, 12 if quick else 24)
            served.close()
        rng = np.random.default_rng(0)
        colpali_page = rng.normal(size=(1031, 128)).astype(np.float32)
        colpali_page /= np.linalg.norm(colpali_page, axis=1, keepdims=True)
        result["bytes_per_page"] = {"colpali (1,031 x 128, its fixed page)": page_bytes(colpali_page)}
        if not quick:
            folder = real_size_colqwen2(root / "real")
            served = Served("colqwen2-size", folder, BATCH_SIZES="2")
            reference = "data:application/pdf;base64," + base64.b64encode(text_pdf(3, seed=2)).decode()
            served.embed(["warm up"])
            started = time.perf_counter()
            found = served.embed([{"pdf": reference}])
            seconds = time.perf_counter() - started
            result["real_size_colqwen2"] = {"pages": 3, "seconds_per_page": round(seconds / 3, 1),
                                            "page_vectors": [list(m.shape) for m in found]}
            result["bytes_per_page"]["colqwen2 (a real-size page)"] = page_bytes(found[0])
            served.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(ROOT / "src"))
    print(json.dumps(visual("--quick" in sys.argv), indent=2))
