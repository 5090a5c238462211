"""Images: a tiny CLIP embeds images and text into one space through the embeddings API, in
both flavours; image URLs are fetched safely (local server on loopback only), and every bad
image fails its job in one line while the worker serves on."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

import tiny_families
from conftest import EMBEDDER_ID, start_worker
from file_server import serve_files
from embedding_worker.media import fetch as fetch_module
from embedding_worker.media import images as images_module

TEXTS = ["the cat", "a dog on the mat", "the " * 30 + "cat"]  # the last runs past 20 tokens


def picture(seed: int, size: int = 40):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8), "RGB")


def png(seed: int, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    picture(seed, size).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(seed: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png(seed)).decode()


@pytest.fixture(scope="module")
def image_server():
    with serve_files({
        "/cat.png": (200, {"Content-Type": "image/png"}, png(7)),
        "/big.png": (200, {"Content-Type": "image/png"}, png(8, size=400)),
        "/notes.txt": (200, {"Content-Type": "text/plain"}, b"not an image at all"),
        "/moved": (302, {"Location": "/cat.png"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
    }) as base:
        yield base


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return tiny_families.clip(tmp_path_factory.mktemp("clip") / "model")


@pytest.fixture(scope="module")
def served(clip_path, hub_cache):
    running = start_worker(MODEL_NAMES=f"{clip_path};{EMBEDDER_ID}", SERVED_MODEL_NAMES=f"clip;{EMBEDDER_ID}",
                           ALLOW_PRIVATE_URLS="true", MAX_IMAGE_BYTES="60000", MAX_IMAGES_PER_REQUEST="4")
    yield running
    running.close()


@pytest.fixture(scope="module")
def reference(clip_path):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(clip_path).eval(), CLIPProcessor.from_pretrained(clip_path)

    def normalised(features):
        return (features / features.norm(dim=-1, keepdim=True)).numpy()

    def image_vectors(pictures):
        with torch.no_grad():
            return normalised(model.get_image_features(**processor(images=pictures, return_tensors="pt")))

    def text_vectors(texts):
        with torch.no_grad():
            return normalised(model.get_text_features(**processor(text=texts, return_tensors="pt", padding=True)))

    return image_vectors, text_vectors


def vectors(output) -> np.ndarray:
    body = output[0] if isinstance(output, list) else output
    assert "data" in body, body
    return np.array([item["embedding"] for item in body["data"]])


def job(flavour: str, **body):
    return body if flavour == "standard" else {"openai_route": "/v1/embeddings", "openai_input": body}


@pytest.mark.parametrize("flavour", ["standard", "openai"])
def test_image_and_text_vectors_equal_clip_features(served, reference, flavour):
    image_vectors, text_vectors = reference
    expected_images = image_vectors([picture(1), picture(2)])
    as_objects = served.run(job(flavour, model="clip", input=[{"image": data_uri(1)}, {"image": data_uri(2)}]))
    assert np.abs(vectors(as_objects) - expected_images).max() <= 1e-5
    as_modality = served.run(job(flavour, model="clip", modality="image", input=[data_uri(1), data_uri(2)]))
    assert np.abs(vectors(as_modality) - expected_images).max() <= 1e-5
    bare_base64 = served.run(job(flavour, model="clip", input={"image": base64.b64encode(png(1)).decode()}))
    assert np.abs(vectors(bare_base64) - expected_images[:1]).max() <= 1e-5
    texts = served.run(job(flavour, model="clip", input=TEXTS))
    assert np.abs(vectors(texts) - text_vectors(TEXTS)).max() <= 1e-5


def test_mixed_input_keeps_input_order_and_counts_text_tokens(served, reference):
    image_vectors, text_vectors = reference
    output = served.run({"model": "clip", "input": [TEXTS[0], {"image": data_uri(3)}, {"text": TEXTS[1]}]})
    got = vectors(output)
    assert np.abs(got[0] - text_vectors([TEXTS[0]])[0]).max() <= 1e-5
    assert np.abs(got[1] - image_vectors([picture(3)])[0]).max() <= 1e-5
    assert np.abs(got[2] - text_vectors([TEXTS[1]])[0]).max() <= 1e-5
    text_only = served.run({"model": "clip", "input": [TEXTS[0], TEXTS[1]]})
    assert output["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] > 0


def test_dimensions_and_compact_formats_apply_to_images(served, reference):
    floats = vectors(served.run({"model": "clip", "input": [{"image": data_uri(4)}], "dimensions": 8}))
    assert floats.shape == (1, 8) and abs(np.linalg.norm(floats[0]) - 1) < 1e-6
    packed = served.run({"model": "clip", "input": [{"image": data_uri(4)}], "dimensions": 8,
                         "encoding_format": "ubinary"})
    assert [item["embedding"] for item in packed["data"]] == np.packbits(floats > 0, axis=-1).tolist()


def test_urls_are_fetched_and_redirects_followed_when_private_urls_are_allowed(served, reference, image_server):
    image_vectors, _ = reference
    from PIL import Image

    expected = image_vectors([Image.open(io.BytesIO(png(7))).convert("RGB")])
    for path in ("/cat.png", "/moved"):
        output = served.run({"model": "clip", "input": [{"image": image_server + path}]})
        assert np.abs(vectors(output) - expected).max() <= 1e-5


def test_models_say_which_take_images(served):
    cards = {card["id"]: card["stats"] for card in served.run({"openai_route": "/v1/models"})[0]["data"]}
    assert cards["clip"]["modalities"] == ["text", "image"] and "image_embed" in cards["clip"]["capabilities"]
    assert cards[EMBEDDER_ID]["modalities"] == ["text"]


def bad_cases(base: str) -> dict:
    truncated = base64.b64encode(png(5))[:60].decode()
    return {
        "not an image": ({"image": base + "/notes.txt"}, "input: item 0: is not an image Pillow can read"),
        "truncated base64": ({"image": truncated}, "input: item 0: the image could not be decoded: image file is truncated"),
        "broken base64": ({"image": "data:image/png;base64,@@@@"},
                          "input: item 0: is neither an http(s) URL nor a data:image URI, and not valid base64"),
        "404": ({"image": base + "/missing.png"}, f"input: item 0: fetching {base}/missing.png answered HTTP 404"),
        "file URL": ({"image": "file:///etc/passwd"}, "input: item 0: the 'file' scheme is not allowed; send an "
                                                      "http(s) URL, a data:image URI or base64"),
        "too large": ({"image": base + "/big.png"}, "input: item 0: the image has "),
        "too many": (None, "input: has 5 images; the limit is 4 (MAX_MEDIA_PER_REQUEST)"),
    }


@pytest.mark.parametrize("case", ["not an image", "truncated base64", "broken base64", "404", "file URL",
                                  "too large", "too many"])
def test_bad_images_fail_in_one_line_and_the_worker_serves_on(served, image_server, case):
    item, message = bad_cases(image_server)[case]
    items = [{"image": data_uri(1)}] * 5 if item is None else [item]
    output = served.run({"model": "clip", "input": items})
    assert list(output) == ["error"] and output["error"].startswith(message) and "\n" not in output["error"]
    assert "data" in served.run({"model": "clip", "input": [{"image": data_uri(1)}]})


def test_images_at_the_per_request_bound_and_bad_item_shapes(served):
    assert len(served.run({"model": "clip", "input": [{"image": data_uri(1)}] * 4})["data"]) == 4
    assert served.run({"model": "clip", "modality": "video", "input": ["x"]}) == {
        "error": "modality: Input should be 'text', 'image', 'audio' or 'pdf'"}
    assert served.run({"model": "clip", "input": [{"image": 7}]}) == {
        "error": "input: item 0: image must be a non-empty string"}
    assert served.run({"model": "clip", "input": [{"image": "x", "text": "y"}]})["error"].startswith(
        'input: item 0 must be a string, {"text": ...}, {"image": ...}, {"audio": ...} or {"pdf": ...}')
    assert served.run({"model": "clip", "modality": "image", "input": [""]}) == {
        "error": "input: item 0: image must be a non-empty string"}


def test_an_image_sent_to_a_text_only_model_fails_naming_what_it_can_do(served):
    output = served.run({"model": EMBEDDER_ID, "input": ["text", {"image": data_uri(1)}]})
    assert output == {"error": f"input: item 1 is an image; model '{EMBEDDER_ID}' takes text only "
                               "(it supports: embed)"}


@pytest.fixture(scope="module")
def strict(clip_path):
    running = start_worker(MODEL_NAMES=str(clip_path), SERVED_MODEL_NAMES="clip")
    yield running
    running.close()


def test_private_addresses_are_refused_by_default(strict, image_server):
    output = strict.run({"model": "clip", "input": [{"image": image_server + "/cat.png"}]})
    assert output["error"].startswith("input: item 0: the host '127.0.0.1' resolves to a private or local address "
                                      "(127.0.0.1); such URLs are refused unless ALLOW_PRIVATE_URLS=true")


def test_a_redirect_from_an_allowed_host_to_a_private_one_is_refused(strict, image_server, monkeypatch):
    # Treat the loopback test server as if it were public; the metadata address it redirects
    # to is refused before any connection is made.
    original = fetch_module.refused_address
    monkeypatch.setattr(fetch_module, "refused_address", lambda address: address != "127.0.0.1" and original(address))
    assert "data" in strict.run({"model": "clip", "input": [{"image": image_server + "/cat.png"}]})
    output = strict.run({"model": "clip", "input": [{"image": image_server + "/to-metadata"}]})
    assert output["error"].startswith("input: item 0: the host '169.254.169.254' resolves to a private or local "
                                      "address (169.254.169.254)")


@pytest.mark.parametrize("address, refused", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("::1", True), ("fd00:ec2::254", True),
    ("::ffff:127.0.0.1", True), ("0.0.0.0", True), ("93.184.216.34", False), ("2606:4700::1111", False),
])
def test_refused_ranges(address, refused):
    assert fetch_module.refused_address(address) is refused


def test_a_decompression_bomb_is_refused_before_decoding():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")  # 81 megapixels in a few kilobytes
    with pytest.raises(fetch_module.MediaError, match="the image has 9000x9000 pixels; the limit is 40000000"):
        images_module.decode(buffer.getvalue(), 40_000_000)
