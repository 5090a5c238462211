"""The sparse-encoder peer, run with the reference libraries' environment
(`.cache/bench/hybrid-references`, from tests/data/hybrid/requirements.txt):

    python bench/hybrid_peer.py build <folder> <tokenizer>   # splade-v3's shape, random weights, saved by SparseEncoder
    python bench/hybrid_peer.py serve <folder> <dtype>

`serve` loads the model, then for each line of stdin (a JSON list of texts) encodes them with
`SparseEncoder.encode` (batch size 32) and prints the seconds it took and the first text's
non-zero weights as JSON.
"""

from __future__ import annotations

import json
import sys
import time


def build(folder: str, tokenizer_source: str) -> None:
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    base = folder + "-mlm"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, model_max_length=512)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size)).eval().save_pretrained(base)
    tokenizer.save_pretrained(base)
    SparseEncoder(modules=[MLMTransformer(base, max_seq_length=512), SpladePooling("max")]).save(folder)


def serve(folder: str, dtype: str) -> None:
    import torch
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(folder, device="cpu", model_kwargs={"torch_dtype": getattr(torch, dtype)})
    print("ready", flush=True)
    for line in sys.stdin:
        texts = json.loads(line)
        started = time.perf_counter()
        encoded = model.encode(texts, batch_size=32, convert_to_sparse_tensor=True)
        elapsed = time.perf_counter() - started
        first = encoded[0].coalesce()
        print(json.dumps({"seconds": elapsed, "indices": first.indices()[0].tolist(),
                          "values": first.values().float().tolist()}), flush=True)


if __name__ == "__main__":
    {"build": build, "serve": serve}[sys.argv[1]](*sys.argv[2:])
