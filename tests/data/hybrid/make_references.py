"""Build the tiny sparse and multi-vector models in tests/data/hybrid, saved by their own
libraries, and their outputs from those libraries (references.json).

The libraries pin versions the worker cannot share (PyLate pins sentence-transformers
5.3.0; the worker runs 3.4.1), so this runs in an environment of its own, once, and its
output is committed:

    python3.11 -m venv /tmp/hybrid-references
    /tmp/hybrid-references/bin/pip install -r tests/data/hybrid/requirements.txt
    /tmp/hybrid-references/bin/python tests/data/hybrid/make_references.py

Models (random weights, seeded; what matters is the layout and the arithmetic):
- splade-max: BERT masked-LM + SpladePooling(max, relu), as `SparseEncoder.save` writes it;
- splade-sum: the same with SpladePooling(sum, log1p_relu) (OpenSearch's activation);
- bge-m3: XLM-RoBERTa with its dense modules, `colbert_linear.pt` and `sparse_linear.pt`;
- colbert: PyLate's `ColBERT` on a BERT, with [Q]/[D] prefixes, query expansion to 16
  tokens, documents cut at 32.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
WORDS = ("the a of to and in is was for on with as by at from that this it be are or an which "
         "river market engine quiet purple seven doctor garden rapid history window signal ocean silver "
         "theory bread mountain letter circuit winter music paper forest paris rome france italy capital "
         "city cat dog sat mat phone query passage document search vector sparse dense retrieval model "
         "token weight late interaction hybrid database store index rank score best first last").split()
TEXTS = [
    "The capital of France is Paris.",
    "  Rome is the capital of Italy; the city is old!  ",
    "A cat sat on the mat.",
    "Sparse, dense and late-interaction vectors: hybrid retrieval (search) in one database.",
    "river " * 40 + "mountain",  # past the ColBERT document length
    "SEARCH the Index, then RANK by score?",
]
QUERIES = ["what is the capital of France?", "hybrid search with sparse vectors", "cat"]


def bert_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    punctuation = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *punctuation, *WORDS,
                  *(f"##{s}" for s in ("s", "ed", "ing", "er", "ly"))]
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=128)


def xlm_roberta_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    punctuation = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    vocabulary = {token: i for i, token in enumerate([*specials, *punctuation, *WORDS,
                                                      *(w.capitalize() for w in WORDS), "<mask>"])}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocabulary["<s>"]), ("</s>", vocabulary["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                   model_input_names=["input_ids", "attention_mask"], model_max_length=128)


def tiny_bert_config(vocab_size: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)


def splade(out: Path, work: Path, pooling: str, activation: str) -> dict:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling
    from transformers import BertForMaskedLM

    base = work / f"mlm-{pooling}"
    tokenizer = bert_tokenizer(base)
    torch.manual_seed(1)
    BertForMaskedLM(tiny_bert_config(len(tokenizer))).eval().save_pretrained(base)
    tokenizer.save_pretrained(base)
    model = SparseEncoder(modules=[MLMTransformer(str(base)),
                                   SpladePooling(pooling_strategy=pooling, activation_function=activation)])
    model.save(str(out))
    model = SparseEncoder(str(out), device="cpu")
    encoded = model.encode(TEXTS, convert_to_sparse_tensor=True).coalesce()
    rows = []
    for i in range(len(TEXTS)):
        row = encoded[i].coalesce()
        indices, values = row.indices()[0].numpy(), row.values().numpy()
        order = np.argsort(indices)
        rows.append({"indices": indices[order].tolist(), "values": values[order].tolist()})
    top = model.encode(TEXTS, convert_to_sparse_tensor=True, max_active_dims=5).coalesce()
    top_rows = [sorted(top[i].coalesce().indices()[0].tolist()) for i in range(len(TEXTS))]
    return {"texts": TEXTS, "sparse": rows, "top5_indices": top_rows}


def bge_m3(out: Path) -> dict:
    from FlagEmbedding import BGEM3FlagModel
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tokenizer = xlm_roberta_tokenizer(out)
    torch.manual_seed(2)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              type_vocab_size=1)
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    dense = SentenceTransformer(modules=[Transformer(str(out)), Pooling(32, pooling_mode="cls"), Normalize()])
    dense.save(str(out))
    torch.save(torch.nn.Linear(32, 32).state_dict(), out / "colbert_linear.pt")
    sparse_linear = torch.nn.Linear(32, 1)
    torch.nn.init.constant_(sparse_linear.bias, 0.3)  # most tokens weigh > 0, some not, as in the real one
    torch.save(sparse_linear.state_dict(), out / "sparse_linear.pt")
    model = BGEM3FlagModel(str(out), use_fp16=False, devices="cpu")
    found = model.encode(TEXTS, batch_size=4, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    sparse = []
    for weights in found["lexical_weights"]:
        ids = sorted(int(k) for k in weights)
        sparse.append({"indices": ids, "values": [float(weights[str(k)]) for k in ids]})
    return {"texts": TEXTS, "dense": np.asarray(found["dense_vecs"]).tolist(), "sparse": sparse,
            "multi_vector": [np.asarray(v).tolist() for v in found["colbert_vecs"]]}


def colbert(out: Path, work: Path) -> dict:
    from pylate import models, rank
    from transformers import BertModel

    base = work / "bert"
    tokenizer = bert_tokenizer(base)
    torch.manual_seed(3)
    BertModel(tiny_bert_config(len(tokenizer)), add_pooling_layer=False).eval().save_pretrained(base)
    tokenizer.save_pretrained(base)
    model = models.ColBERT(model_name_or_path=str(base), embedding_size=16, query_length=16, document_length=32,
                           device="cpu")
    model.save(str(out))
    model = models.ColBERT(model_name_or_path=str(out), device="cpu")
    queries = model.encode(QUERIES, is_query=True, batch_size=2)
    documents = model.encode(TEXTS, is_query=False, batch_size=4)
    ranked = rank.rerank(documents_ids=[list(range(len(TEXTS)))], queries_embeddings=[queries[0]],
                         documents_embeddings=[documents])
    return {"queries": QUERIES, "documents": TEXTS,
            "query_vectors": [np.asarray(v).tolist() for v in queries],
            "document_vectors": [np.asarray(v).tolist() for v in documents],
            "rerank_query": QUERIES[0], "rerank": [{"index": r["id"], "score": float(r["score"])} for r in ranked[0]]}


def main() -> None:
    import FlagEmbedding
    import pylate
    import sentence_transformers
    import transformers

    references = {"made_with": {"sentence-transformers": sentence_transformers.__version__,
                                "pylate": pylate.__version__, "FlagEmbedding": "1.4.2",
                                "transformers": transformers.__version__, "torch": torch.__version__}}
    del FlagEmbedding
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for name in ("splade-max", "splade-sum", "bge-m3", "colbert"):
            shutil.rmtree(HERE / name, ignore_errors=True)
        references["splade-max"] = splade(HERE / "splade-max", work, "max", "relu")
        references["splade-sum"] = splade(HERE / "splade-sum", work, "sum", "log1p_relu")
        references["bge-m3"] = bge_m3(HERE / "bge-m3")
        references["colbert"] = colbert(HERE / "colbert", work)
    for folder in HERE.iterdir():  # model cards are not needed to serve
        if folder.is_dir():
            (folder / "README.md").unlink(missing_ok=True)
    (HERE / "references.json").write_text(json.dumps(references) + "\n")


if __name__ == "__main__":
    main()
