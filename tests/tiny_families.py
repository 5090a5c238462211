"""Tiny random models of the families users deploy, saved as the real ones ship.

Each has a small byte-level BPE tokenizer trained here, wrapped the way the family's real
tokenizer is: XLM-RoBERTa's `<s> ... </s>` with no `token_type_ids`, ModernBERT's
`[CLS] ... [SEP]` with no `token_type_ids`, Qwen3's text then `<|endoftext|>`, padded on
the left, with no `token_type_ids`.
"""

from __future__ import annotations

from pathlib import Path


CORPUS = [f"{a} {b} {c}" for a in ("the cat", "a dog", "my phone", "the river", "paris", "rome", "quantum bits")
          for b in ("sat on", "is in", "runs past", "was near", "talks about") for c in ("the mat.", "france.",
          "italy.", "the hill.", "a query.", "a passage.", "the document.")]


def bpe_tokenizer(specials: list[str], template: str, pad: str, padding_side: str = "right", **names: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=names.get("unk_token")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ids = {token: tokenizer.token_to_id(token) for token in specials}
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, pair=template.replace("$A", "$A $B") if "$B" not in template else template,
        special_tokens=[(t, ids[t]) for t in specials if t in template])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=pad, padding_side=padding_side,
                                      model_input_names=["input_ids", "attention_mask"], model_max_length=128,
                                      **names)
    return wrapped, ids


def xlm_roberta_tokenizer():
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    return bpe_tokenizer(specials, "<s> $A </s>", "<pad>", bos_token="<s>", eos_token="</s>", cls_token="<s>",
                         sep_token="</s>", unk_token="<unk>", mask_token="<mask>")


def modernbert_tokenizer():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return bpe_tokenizer(specials, "[CLS] $A [SEP]", "[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                         unk_token="[UNK]", mask_token="[MASK]")


def qwen3_tokenizer():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return bpe_tokenizer(specials, "$A <|endoftext|>", "<|endoftext|>", padding_side="left",
                         eos_token="<|endoftext|>")


def xlm_roberta_config(tokenizer, ids, **extra):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=132, type_vocab_size=1,
                            pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], **extra)


def modernbert_config(tokenizer, ids):
    from transformers import ModernBertConfig

    return ModernBertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=128, local_attention=16,
                            global_attn_every_n_layers=2, pad_token_id=ids["[PAD]"], cls_token_id=ids["[CLS]"],
                            sep_token_id=ids["[SEP]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
                            reference_compile=False)


def qwen3_config(tokenizer, ids, **extra):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                       pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                       **{"max_position_embeddings": 128, **extra})


def qwen3_reranker(folder: Path) -> Path:
    """A Qwen3-Reranker as the real one is saved (a `Qwen3ForCausalLM` and its tokenizer, with
    positions past the family's 8,192), random and tiny."""
    import torch
    from transformers import Qwen3ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "yes", "no"]
    tokenizer, ids = bpe_tokenizer(specials, "$A <|endoftext|>", "<|endoftext|>", padding_side="left",
                                   eos_token="<|endoftext|>")
    torch.manual_seed(7)
    config = qwen3_config(tokenizer, ids, architectures=["Qwen3ForCausalLM"], max_position_embeddings=40960)
    Qwen3ForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def embedders(root: Path) -> dict[str, Path]:
    from conftest import tiny_sentence_transformer

    tok_x, ids_x = xlm_roberta_tokenizer()
    tok_m, ids_m = modernbert_tokenizer()
    tok_q, ids_q = qwen3_tokenizer()
    return {
        "xlm-roberta": tiny_sentence_transformer(root / "xlm-roberta", xlm_roberta_config(tok_x, ids_x), tok_x),
        "modernbert": tiny_sentence_transformer(root / "modernbert", modernbert_config(tok_m, ids_m), tok_m),
        "qwen3": tiny_sentence_transformer(root / "qwen3", qwen3_config(tok_q, ids_q), tok_q, pooling="lasttoken"),
    }


def rerankers(root: Path) -> dict[str, Path]:
    import torch
    from transformers import Qwen3ForSequenceClassification, XLMRobertaForSequenceClassification

    built = {}
    for name, (tokenizer, ids), make, model_class in (
        ("xlm-roberta", xlm_roberta_tokenizer(), xlm_roberta_config, XLMRobertaForSequenceClassification),
        ("qwen3", qwen3_tokenizer(), qwen3_config, Qwen3ForSequenceClassification),
    ):
        torch.manual_seed(1)
        folder = root / f"{name}-reranker"
        if name == "qwen3":
            tokenizer.padding_side = "right"  # sequence classification reads the last real token either way
        model_class(make(tokenizer, ids, num_labels=1)).eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        built[name] = folder
    return built


def clip(folder: Path, text: tuple[int, int, int] = (32, 2, 2), vision: tuple[int, int, int, int, int] = (32, 2, 2, 32, 8),
         projection: int = 16) -> Path:
    """A CLIP with 2-layer text and vision towers, a byte-level BPE in CLIP's vocab.json /
    merges.txt format (loaded by `CLIPTokenizer`) and a 32-pixel image processor; other
    shapes on request: `text` (hidden, layers, heads), `vision` (hidden, layers, heads,
    image size, patch size), as the GPU check builds ViT-B/32's."""
    import json

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    characters = list(bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("a", "t</w>"), ("c", "at</w>"), ("d", "o"), ("do", "g</w>")]
    vocab = characters + [c + "</w>" for c in characters] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    side = vision[3]
    images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    ids = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    torch.manual_seed(2)
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": text[0], "intermediate_size": 2 * text[0] if text[0] < 64
                     else 4 * text[0], "num_hidden_layers": text[1], "num_attention_heads": text[2],
                     "max_position_embeddings": 77, "bos_token_id": ids[0], "eos_token_id": ids[1],
                     "pad_token_id": ids[1]},
        vision_config={"hidden_size": vision[0], "intermediate_size": 2 * vision[0] if vision[0] < 64 else 4 * vision[0],
                       "num_hidden_layers": vision[1], "num_attention_heads": vision[2], "image_size": vision[3],
                       "patch_size": vision[4]},
        projection_dim=projection,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    return folder


def clap(folder: Path) -> Path:
    """A CLAP with 2-layer RoBERTa text and HTSAT audio towers, a byte-level BPE in RoBERTa's
    vocab.json / merges.txt format and a 16-mel, 1-second feature extractor at 48 kHz."""
    import json

    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    characters = list(bytes_to_unicode().values())
    merges = [("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e"), ("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t"), ("Ġ", "d")]
    vocab = specials + characters + ["".join(m) for m in merges]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    features = ClapFeatureExtractor(feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=1,
                                    fft_window_size=1024, truncation="rand_trunc", padding="repeatpad")
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(3)
    config = ClapConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 66, "pad_token_id": 1,
                     "projection_dim": 16},
        audio_config={"num_mel_bins": 16, "spec_size": 64, "window_size": 4, "patch_size": 2, "patch_stride": 2,
                      "patch_embeds_hidden_size": 16, "depths": [1, 1], "num_attention_heads": [2, 2],
                      "hidden_size": 32, "projection_dim": 16, "enable_fusion": False},
        projection_dim=16,
    )
    ClapModel(config).eval().save_pretrained(folder)
    return folder


def colpali(folder: Path) -> Path:
    """A ColPali as `vidore/colpali-v1.3-hf` ships (`ColPaliForRetrieval`, `ColPaliProcessor`):
    a 2-layer Gemma and SigLIP tower on 56-pixel pictures (16 image tokens), 16-dimensional
    token vectors, a byte-level BPE wrapped as Gemma's tokenizer."""
    import torch
    from transformers import (ColPaliConfig, ColPaliForRetrieval, ColPaliProcessor, GemmaTokenizerFast,
                              PaliGemmaConfig, SiglipImageProcessor)

    bpe, _ = bpe_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], "<bos> $A", "<pad>", bos_token="<bos>",
                           eos_token="<eos>", unk_token="<unk>")
    tokenizer = GemmaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", add_bos_token=False, add_eos_token=False)
    images = SiglipImageProcessor(size={"height": 56, "width": 56})
    images.image_seq_length = 16
    processor = ColPaliProcessor(image_processor=images, tokenizer=tokenizer)
    processor.save_pretrained(folder)
    torch.manual_seed(3)
    vlm = PaliGemmaConfig(
        text_config={"model_type": "gemma", "vocab_size": len(processor.tokenizer), "hidden_size": 32,
                     "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 256},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 56, "patch_size": 14, "projection_dim": 32},
        image_token_index=processor.image_token_id, projection_dim=32, hidden_size=32)
    ColPaliForRetrieval(ColPaliConfig(vlm_config=vlm, embedding_dim=16)).eval().save_pretrained(folder)
    return folder


def colqwen2(folder: Path) -> Path:
    """A ColQwen2 as `vidore/colqwen2-v1.0-hf` ships (`ColQwen2ForRetrieval`, `ColQwen2Processor`):
    a 2-layer Qwen2-VL on pictures of 4 to 16 merged patches (its own resolution per picture),
    16-dimensional token vectors, a byte-level BPE wrapped as Qwen2's tokenizer, padded on the left."""
    import torch
    from transformers import (ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor, Qwen2TokenizerFast,
                              Qwen2VLConfig, Qwen2VLImageProcessor)

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    bpe, ids = bpe_tokenizer(specials, "$A", "<|endoftext|>", padding_side="left", eos_token="<|im_end|>")
    tokenizer = Qwen2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, padding_side="left")
    images = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2,
                                   temporal_patch_size=2)
    ColQwen2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(4)
    vlm = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    ColQwen2ForRetrieval(ColQwen2Config(vlm_config=vlm, embedding_dim=16)).eval().save_pretrained(folder)
    return folder
