"""Visual document retrieval: tiny random ColPali and ColQwen2 models, saved as their -hf
checkpoints ship, served from their files. Query and page vectors equal transformers' own
classes at float32; rerank equals the processor's `score_retrieval`; a PDF is embedded page
by page, each page equal to embedding its rendering; hostile PDFs end in one line, with the
worker's memory bounded, and the worker serves on."""

from __future__ import annotations

import base64
import io
import math
import os

import numpy as np
import pytest

import pdf_files
import tiny_families
from conftest import EMBEDDER_ID, RERANKER_ID, start_worker
from file_server import serve_files
from process_watch import PeakMemory, settle

LAYOUTS = {"colpali": ("ColPaliForRetrieval", tiny_families.colpali),
           "colqwen2": ("ColQwen2ForRetrieval", tiny_families.colqwen2)}
QUERIES = ["the cat sat on the mat.", "quantum bits in paris"]


def picture(seed: int, size: tuple[int, int] = (80, 60)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def png(seed: int, size: tuple[int, int] = (80, 60)) -> str:
    buffer = io.BytesIO()
    picture(seed, size).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pillow_pdf(count: int) -> bytes:
    """A PDF of `count` pages written by Pillow, each a different picture and size."""
    pages = [picture(10 + i, (90 + 20 * i, 120)) for i in range(count)]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="PDF", save_all=True, append_images=pages[1:], resolution=72)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("visual")
    return {name: build(root / name) for name, (_, build) in LAYOUTS.items()}


@pytest.fixture(scope="module")
def served(folders):
    running = start_worker(MODEL_NAMES=";".join(str(folders[name]) for name in LAYOUTS),
                           SERVED_MODEL_NAMES=";".join(LAYOUTS), DTYPES="float32", BATCH_SIZES="4",
                           ALLOW_PRIVATE_URLS="true", MAX_PDF_PAGES="6")
    yield running
    running.close()


@pytest.fixture(scope="module")
def reference(folders):
    """Each layout's transformers class and processor, as their model cards use them."""
    import torch
    import transformers

    found = {}
    for name, (architecture, _) in LAYOUTS.items():
        model = getattr(transformers, architecture).from_pretrained(folders[name]).eval()
        processor = transformers.AutoProcessor.from_pretrained(folders[name])

        def vectors(batch, model=model):
            with torch.no_grad():
                out = model(**batch).embeddings
            return [v[m.bool()].numpy() for v, m in zip(out, batch["attention_mask"])]

        found[name] = (processor, vectors)
    return found


def matrices(output) -> list[np.ndarray]:
    assert "data" in output, output
    return [np.array(item["embedding"], dtype=np.float32) for item in output["data"]]


def rendered_page(data: bytes, page: int, pixels: int):
    """A page rendered as the README says: to about the model's pixels, whatever its size."""
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    width, height = document[page].get_size()
    return document[page].render(scale=math.sqrt(pixels / (width * height))).to_pil().convert("RGB")


@pytest.mark.parametrize("name", LAYOUTS)
def test_query_and_page_vectors_equal_the_transformers_classes(served, reference, name):
    processor, vectors = reference[name]
    out = served.run({"model": name, "input": [QUERIES[0], {"image": png(1)}, QUERIES[1], {"image": png(2, (50, 90))}]})
    got = matrices(out)
    queries = vectors(processor.process_queries(QUERIES, return_tensors="pt"))
    pages = vectors(processor.process_images([picture(1), picture(2, (50, 90))], return_tensors="pt"))
    for mine, theirs in zip(got, [queries[0], pages[0], queries[1], pages[1]]):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, atol=1e-4)
    assert out["usage"]["prompt_tokens"] == sum(len(m) for m in got)  # every token the model read


@pytest.mark.parametrize("name", LAYOUTS)
def test_rerank_by_maxsim_equals_score_retrieval(served, reference, name):
    import torch

    processor, vectors = reference[name]
    documents = [picture(seed) for seed in (3, 4, 5)]
    out = served.run({"model": name, "query": QUERIES[0], "docs": [{"image": png(s)} for s in (3, 4, 5)],
                      "return_docs": True})
    scores = processor.score_retrieval([torch.from_numpy(v) for v in vectors(processor.process_queries(
        [QUERIES[0]], return_tensors="pt"))], [torch.from_numpy(v) for v in vectors(processor.process_images(
            documents, return_tensors="pt"))])[0].numpy()
    results = out["results"] if "results" in out else out
    assert [r["index"] for r in results] == list(np.argsort(-scores, kind="stable"))
    for result in results:
        assert result["relevance_score"] == pytest.approx(float(scores[result["index"]]), abs=1e-3)
        assert result["document"] == {"image": png(3 + result["index"])}
    openai = served.run({"openai_route": "/v1/rerank", "openai_input": {
        "model": name, "query": QUERIES[0], "documents": [{"image": png(s)} for s in (3, 4, 5)], "top_n": 1}})
    openai = openai[0] if isinstance(openai, list) else openai  # the OpenAI flavour's one-item stream
    assert [r["index"] for r in openai["results"]] == [results[0]["index"]]


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_pdf_is_embedded_page_by_page_each_equal_to_its_rendering(served, reference, name, folders):
    processor, vectors = reference[name]
    document = pillow_pdf(3)
    out = served.run({"model": name, "input": [QUERIES[0], {"pdf": b64(document)},
                                               {"pdf": "data:application/pdf;base64," + b64(document), "pages": [2, 0]}]})
    assert [(item["index"], item.get("page")) for item in out["data"]] == [
        (0, None), (1, 0), (1, 1), (1, 2), (2, 2), (2, 0)]
    got = matrices(out)
    pixels = served.registry.resolve(name).page_pixels
    pages = vectors(processor.process_images([rendered_page(document, page, pixels) for page in range(3)],
                                             return_tensors="pt"))
    for mine, page in zip(got[1:], [0, 1, 2, 2, 0]):
        np.testing.assert_allclose(mine, pages[page], atol=1e-4)


def test_pdf_urls_are_fetched(served):
    document = pillow_pdf(2)
    with serve_files({"/paper.pdf": (200, {"Content-Type": "application/pdf"}, document)}) as base:
        out = served.run({"model": "colpali", "modality": "pdf", "input": [f"{base}/paper.pdf"]})
    assert [item["page"] for item in out["data"]] == [0, 1]


@pytest.mark.parametrize("name", LAYOUTS)
def test_base64_matrices_float32_and_float16_decode_to_the_floats(served, name):
    body = {"model": name, "input": [{"image": png(6)}, QUERIES[0]]}
    floats = matrices(served.run(body))
    for encoding, dtype, tolerance in (("base64", "<f4", 0), ("base64_float16", "<f2", 2e-3)):
        out = served.run({**body, "encoding_format": encoding})
        for item, expected in zip(out["data"], floats):
            matrix = item["embedding"]
            assert matrix.get("dtype") == ("float16" if dtype == "<f2" else None)
            decoded = np.frombuffer(base64.b64decode(matrix["base64"]), dtype=dtype).reshape(matrix["shape"])
            np.testing.assert_allclose(decoded, expected, atol=tolerance)
            assert len(base64.b64decode(matrix["base64"])) == expected.size * (2 if dtype == "<f2" else 4)


def test_pool_factor_merges_page_vectors_and_leaves_queries(served):
    body = {"model": "colpali", "input": [QUERIES[0], {"image": png(7)}]}
    whole = matrices(served.run(body))
    for factor in (2, 3, 4):
        pooled = matrices(served.run({**body, "pool_factor": factor}))
        np.testing.assert_allclose(pooled[0], whole[0], atol=1e-6)  # a query is never pooled
        assert 1 <= len(pooled[1]) <= len(whole[1]) // factor
        np.testing.assert_allclose(np.linalg.norm(pooled[1], axis=1), 1, atol=1e-5)


def test_pooling_matches_a_direct_ward_clustering():
    """Each merged vector is the normalised mean of one Ward cluster of the rows of the
    cosine-distance matrix (colpali-engine's HierarchicalTokenPooler)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    from embedding_worker.engine.kinds.visual_documents.pooling import pool

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = fcluster(linkage(1 - vectors @ vectors.T, method="ward"), t=10, criterion="maxclust")
    expected = [vectors[labels == label].mean(axis=0) for label in sorted(set(labels))]
    expected = np.stack([v / np.linalg.norm(v) for v in expected])
    np.testing.assert_allclose(pool(vectors, 4), expected, atol=1e-5)
    assert pool(vectors[:1], 4).shape == (1, 8)


@pytest.mark.parametrize(("body", "expected"), [
    ({"dimensions": 8}, "dimensions: applies to dense embeddings only"),
    ({"embedding_types": ["dense"]}, "embedding_types: model 'colpali' cannot give dense"),
    ({"embedding_types": ["sparse"]}, "embedding_types: model 'colpali' cannot give sparse"),
    ({"encoding_format": "int8"}, "encoding_format: model 'colpali' gives token vectors as float, base64"),
    ({"pool_factor": 1}, "pool_factor"),
    ({"pool_factor": "2"}, "pool_factor"),
    ({"input": [{"pdf": "JVBERi0=", "pages": [-1]}]}, "input: item 0: pages must hold page numbers from 0"),
    ({"input": [{"pdf": "JVBERi0=", "pages": []}]}, "input: item 0: pages must be a non-empty list"),
    ({"input": [{"pdf": "JVBERi0=", "pages": [True]}]}, "input: item 0: pages must hold page numbers"),
    ({"input": [{"pdf": "file:///etc/passwd"}]}, "input: item 0: the 'file' scheme is not allowed"),
    ({"input": [{"pdf": "data:image/png;base64,JVBERi0="}]}, "input: item 0: a data URI must be data:application/pdf"),
    ({"input": [{"audio": "AAAA"}]}, "input: item 0 is audio"),
])
def test_options_that_do_not_fit_are_refused_in_one_line(served, body, expected):
    out = served.run({"model": "colpali", "input": [QUERIES[0]], **body})
    assert "error" in out and expected in out["error"] and "\n" not in out["error"], out


def test_pool_factor_and_pages_at_and_one_past_their_bounds(served):
    """pool_factor 2 to 1024; `pages` lists at most 10,000 numbers (the renderer then holds
    them to the PDF's pages and MAX_PDF_PAGES)."""
    assert len(served.run({"model": "colpali", "input": [{"image": png(1)}], "pool_factor": 1024})["data"][0][
        "embedding"]) == 1
    assert served.run({"model": "colpali", "input": [{"image": png(1)}], "pool_factor": 1025})["error"].startswith(
        "pool_factor: Input should be less than or equal to 1024")
    one = b64(pillow_pdf(1))
    at = served.run({"model": "colpali", "input": [{"pdf": one, "pages": list(range(10_000))}]})
    assert at["error"] == "input: item 0: the PDF has 1 page; page 1 is past its end (pages count from 0)"
    past = served.run({"model": "colpali", "input": [{"pdf": one, "pages": list(range(10_001))}]})
    assert past["error"] == "input: item 0: pages lists 10,001 numbers; at most 10,000"


def test_pages_at_and_past_the_request_bound(served):
    """MAX_PDF_PAGES=6: six pages are embedded; a seventh, in the same PDF or another one, is
    refused before anything is rendered; a page past the end is refused naming the count."""
    six, one = pillow_pdf(6), pillow_pdf(1)
    assert len(served.run({"model": "colpali", "input": [{"pdf": b64(six)}]})["data"]) == 6
    for body in ([{"pdf": b64(six)}, {"pdf": b64(one)}], [{"pdf": b64(pdf_files.pages_pdf(7))}]):
        out = served.run({"model": "colpali", "input": body})
        assert "MAX_PDF_PAGES" in out["error"] and "\n" not in out["error"], out
    out = served.run({"model": "colpali", "input": [{"pdf": b64(one), "pages": [0, 1]}]})
    assert out["error"] == "input: item 0: the PDF has 1 page; page 1 is past its end (pages count from 0)"


HOSTILE = {
    "declares 100,000 pages": (lambda: pdf_files.pages_pdf(1, declared=100_000), "input: item 0: the PDF has 100,000"),
    "a page of 100,000 points a side": (lambda: pdf_files.pages_pdf(1, size=(100_000, 100_000)),
                                        "input: item 0: the PDF page 0 is 100,000 x 100,000 points"),
    "a page 1 point wide": (lambda: pdf_files.pages_pdf(1, size=(1, 10_000)), "input: item 0: the PDF page 0 is 1 x"),
    "a compression bomb": (lambda: pdf_files.compression_bomb(2 * 2**30),
                           "input: item 0: the PDF could not be rendered within"),
    "not a PDF": (lambda: b"%PDF-1.7\n" + os.urandom(2000), "input: item 0: the PDF could not be read"),
    "a broken cross-reference table": (lambda: pdf_files.pages_pdf(2, xref=False), 2),  # pdfium repairs it
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_pdfs_end_in_one_line_within_the_memory_bound(served, case):
    build, expected = HOSTILE[case]
    data = build()
    settle(os.getpid())
    with PeakMemory(os.getpid()) as memory:
        out = served.run({"model": "colpali", "input": [{"pdf": b64(data)}]})
    if isinstance(expected, str):
        assert out.get("error", "").startswith(expected) and "\n" not in out["error"], out
    else:
        assert len(out["data"]) == expected
    assert memory.over_idle_mb < 150 + 3 * len(data) / 2**20  # the body's base64 and bytes; rendering is elsewhere
    assert len(served.run({"model": "colpali", "input": [{"pdf": b64(pillow_pdf(1))}]})["data"]) == 1


def test_models_show_the_kind_s_modalities_and_type(served):
    out = served.run({"openai_route": "/v1/models", "openai_input": {}})
    cards = {card["id"]: card["stats"] for card in (out[0] if isinstance(out, list) else out)["data"]}
    for name in LAYOUTS:
        assert cards[name]["modalities"] == ["text", "image", "pdf"]
        assert cards[name]["embedding_types"] == ["multi_vector"]
        assert "rerank" in cards[name]["capabilities"]


def test_pdfs_and_page_images_sent_to_other_models_are_refused(worker):
    out = worker.run({"model": EMBEDDER_ID, "input": [{"pdf": "JVBERi0="}]})
    assert out["error"].startswith("input: item 0 is a PDF; model") and "reads no pages" in out["error"]
    out = worker.run({"model": RERANKER_ID, "query": "q", "docs": ["a", {"image": png(1)}]})
    assert "documents: item 1 is an image" in out.get("error", ""), out


def test_text_documents_to_a_page_model_are_refused(served):
    out = served.run({"model": "colqwen2", "query": "q", "docs": [{"image": png(1)}, "a text"]})
    assert out["error"].startswith("documents: item 1 is text; model 'colqwen2' scores pictures of pages")


def test_model_kinds_names_the_layout_and_a_wrong_one_stops_start_up(folders):
    from embedding_worker.engine.kinds import find_kind
    from embedding_worker.errors import ModelLoadError

    assert find_kind(folders["colpali"], "colpali").traits.reads_pages
    with pytest.raises(ModelLoadError, match="is not a colqwen2 model"):
        find_kind(folders["colpali"], "colqwen2")


def test_the_readme_pdf_example_runs_and_answers_as_documented(served):
    """The README's request, with a PDF served on loopback in place of its URL, answers in the
    documented shape."""
    import json
    import re

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    examples = dict(re.findall(r"<!-- example: (.+?) -->\s*```json\n(.*?)```", readme, re.S))
    request = json.loads(examples["pdf embeddings request"])["input"]
    documented = json.loads(examples["pdf embeddings response"])
    with serve_files({"/report.pdf": (200, {"Content-Type": "application/pdf"}, pillow_pdf(5))}) as base:
        request["input"][0]["pdf"] = f"{base}/report.pdf"
        out = served.run({**request, "model": "colqwen2"})
    assert [(item["index"], item["page"]) for item in out["data"]] == [(0, 0), (0, 4)]
    for item, shown in zip(out["data"], documented["data"]):
        assert set(item) == set(shown) and set(item["embedding"]) == set(shown["embedding"])
        assert item["embedding"]["dtype"] == "float16" and item["embedding"]["shape"][1] == 16
    assert set(out) == set(documented) and out["usage"]["prompt_tokens"] == sum(
        item["embedding"]["shape"][0] for item in out["data"])


def test_a_page_weighs_its_tokens_in_the_backlog(served):
    """Admission and throughput count a page as the tokens it gives, not as a small picture."""
    model = served.registry.resolve("colqwen2")
    assert model.health.media_units == model.page_tokens
    before = model.health.started_units
    served.run({"model": "colqwen2", "input": [{"image": png(8)}, {"image": png(9)}]})
    assert model.health.started_units - before == 2 * model.page_tokens
