"""A ColPali-family model in Infinity's model interface: queries (texts) and pages (images)
through the model's own processor and forward pass, each item's token vectors out.

`encode_pre` takes a batch as Infinity's queue forms it, texts and pictures mixed, and
prepares each group with the processor (`process_queries`, `process_images`); `encode_core`
runs the model once per group; `encode_post` returns, in the batch's order, one float32
matrix per item: the normalised vectors of the tokens it really has (padding left out, as
the model's output zeroes it).
"""

from __future__ import annotations

import copy
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from infinity_emb.transformer.abstract import BaseEmbedder

from embedding_worker.engine.kinds.hybrid.encoders import device_and_dtype


class PageEncoder(BaseEmbedder):
    capabilities = {"embed", "image_embed"}
    real_tokens_safe = False  # a vision-language model: engine/cpu/real_tokens.py leaves it alone
    packable = False  # transformers' code reads its linear layers' `weight` (engine/cpu/kernels.py)

    def __init__(self, path: Path, architecture: str, engine_args: Any) -> None:
        import transformers
        from transformers import AutoProcessor

        self.engine_args = engine_args
        self.device, self.dtype = device_and_dtype(engine_args)
        self.processor = AutoProcessor.from_pretrained(path)
        model_class = getattr(transformers, architecture)
        self.model = model_class.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        self.dimension = int(self.model.config.embedding_dim)
        self.max_length = None
        self.image_side, self.page_pixels = _picture_size(self.processor.image_processor)
        self.page_tokens = _page_tokens(self.processor, self.page_pixels)
        # Infinity counts usage in a thread of its own while `encode_pre` tokenizes: a fast
        # tokenizer is not safe for concurrent calls, so counting has its own, one call at a time
        self._counting = copy.deepcopy(self.processor.tokenizer)
        self._counting_lock = threading.Lock()

    def encode_pre(self, items: list[Any]) -> tuple[list[tuple[list[int], Any]], int]:
        texts = [(i, item) for i, item in enumerate(items) if isinstance(item, str)]
        pictures = [(i, item) for i, item in enumerate(items) if not isinstance(item, str)]
        groups = []
        if texts:
            groups.append(([i for i, _ in texts], self.processor.process_queries([t for _, t in texts],
                                                                                return_tensors="pt")))
        if pictures:
            groups.append(([i for i, _ in pictures], self.processor.process_images([p for _, p in pictures],
                                                                                  return_tensors="pt")))
        return groups, len(items)

    def encode_core(self, features: tuple[list[tuple[list[int], Any]], int]) -> tuple[list, int]:
        groups, count = features
        done = []
        with torch.inference_mode():
            for positions, batch in groups:
                batch = {name: value.to(self.device) for name, value in batch.items()}
                if "pixel_values" in batch:
                    batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
                vectors = self.model(**batch).embeddings
                real = batch["attention_mask"].bool()
                done.append((positions, [v[m].float().cpu().numpy() for v, m in zip(vectors, real)]))
        return done, count

    def encode_post(self, output: tuple[list, int]) -> list[np.ndarray]:
        groups, count = output
        found: list[Any] = [None] * count
        for positions, matrices in groups:
            for position, matrix in zip(positions, matrices):
                found[position] = matrix
        return found

    def tokenize_lengths(self, sentences: list[str]) -> list[int]:
        with self._counting_lock:
            encoded = self._counting(list(sentences), add_special_tokens=False, return_attention_mask=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def warmup(self, *, batch_size: int = 64, n_tokens: int = 1) -> tuple[float, float, str]:
        return 0.0, 0.0, "no warm-up"


def _picture_size(image_processor: Any) -> tuple[int, int]:
    """The side (pixels) and the pixels of the picture the processor makes of a page: a
    fixed square (ColPali's SigLIP processor), or the most pixels a picture keeps
    (ColQwen2's `max_pixels`)."""
    size = getattr(image_processor, "size", None) or {}
    if "height" in size and "width" in size:
        return max(size["height"], size["width"]), size["height"] * size["width"]
    pixels = getattr(image_processor, "max_pixels", None) or size.get("longest_edge") or 1024 * 1024
    return math.isqrt(int(pixels)), int(pixels)


def _page_tokens(processor: Any, pixels: int) -> int:
    """The most token vectors one page gives: its picture's tokens (ColPali's fixed
    `image_seq_length`; one per merged patch of ColQwen2's most pixels) and the image
    prompt's."""
    fixed = getattr(processor, "image_seq_length", None)
    if not fixed:
        images = processor.image_processor
        side = getattr(images, "patch_size", 14) * getattr(images, "merge_size", 2)
        fixed = pixels // (side * side)
    prompt = processor.tokenizer(getattr(processor, "visual_prompt_prefix", ""))["input_ids"]
    return int(fixed) + len(prompt) + 2
