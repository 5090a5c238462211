"""Audio: a tiny CLAP embeds audio and text into one space through the embeddings API, from
any common format at any sampling rate; every bad clip fails its job in one line while the
worker serves on.

The reference is transformers' `ClapModel` on the same samples: read with soundfile,
channels averaged, resampled to the model's 48 kHz with soxr where the clip has another rate
(the decoding and resampling are those libraries' own work; what is checked is that the
worker hands the model what they give)."""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pytest

import tiny_families
from conftest import EMBEDDER_ID, start_worker
from file_server import serve_files

RATE = 48_000
TEXTS = ["the cat", "a dog on the mat"]


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * rng.uniform(200, 900) * t) + 0.05 * rng.standard_normal(len(t))
    return np.stack([wave * (1 + 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def encoded(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


CLIPS = {  # name -> (bytes, mime)
    "wav 48 kHz": (encoded(tone(0.5, RATE), RATE, "WAV", "PCM_16"), "audio/wav"),
    "flac 16 kHz stereo": (encoded(tone(0.6, 16_000, 2, seed=1), 16_000, "FLAC"), "audio/flac"),
    "ogg 44.1 kHz": (encoded(tone(0.7, 44_100, seed=2), 44_100, "OGG", "VORBIS"), "audio/ogg"),
    "mp3 22.05 kHz": (encoded(tone(0.8, 22_050, seed=3), 22_050, "MP3", "MPEG_LAYER_III"), "audio/mpeg"),
}


@pytest.fixture(scope="module")
def clap_path(tmp_path_factory):
    return tiny_families.clap(tmp_path_factory.mktemp("clap") / "model")


@pytest.fixture(scope="module")
def served(clap_path, hub_cache):
    running = start_worker(MODEL_NAMES=f"{clap_path};{EMBEDDER_ID}", SERVED_MODEL_NAMES=f"clap;{EMBEDDER_ID}",
                           ALLOW_PRIVATE_URLS="true", MAX_IMAGE_BYTES="400000", MAX_IMAGES_PER_REQUEST="4",
                           MAX_AUDIO_SECONDS="3")
    yield running
    running.close()


@pytest.fixture(scope="module")
def reference(clap_path):
    import soundfile
    import soxr
    import torch
    from transformers import ClapModel, ClapProcessor

    model, processor = ClapModel.from_pretrained(clap_path).eval(), ClapProcessor.from_pretrained(clap_path)

    def normalised(features):
        return (features / features.norm(dim=-1, keepdim=True)).numpy()

    def audio_vectors(clips: list[bytes]):
        waves = []
        for clip in clips:
            samples, rate = soundfile.read(io.BytesIO(clip), dtype="float32", always_2d=True)
            mono = samples.mean(axis=1)
            waves.append(mono if rate == RATE else soxr.resample(mono, rate, RATE, quality="HQ"))
        with torch.no_grad():
            return normalised(model.get_audio_features(**processor(audio=waves, sampling_rate=RATE,
                                                                   return_tensors="pt")))

    def text_vectors(texts):
        with torch.no_grad():
            return normalised(model.get_text_features(**processor(text=texts, return_tensors="pt", padding=True)))

    return audio_vectors, text_vectors


def vectors(output) -> np.ndarray:
    body = output[0] if isinstance(output, list) else output
    assert "data" in body, body
    return np.array([item["embedding"] for item in body["data"]])


@pytest.mark.parametrize("clip", list(CLIPS))
def test_audio_of_every_common_format_and_rate_equals_clap_features(served, reference, clip):
    audio_vectors, _ = reference
    data, mime = CLIPS[clip]
    got = vectors(served.run({"model": "clap", "input": [{"audio": data_uri(data, mime)}]}))
    assert np.abs(got - audio_vectors([data])).max() <= 1e-4


@pytest.mark.parametrize("flavour", ["standard", "openai"])
def test_text_audio_mixed_in_input_order_and_usage_counts_text(served, reference, flavour):
    audio_vectors, text_vectors = reference
    wav = CLIPS["wav 48 kHz"][0]
    body = {"model": "clap", "input": [TEXTS[0], {"audio": data_uri(wav)}, {"text": TEXTS[1]}]}
    output = served.run(body if flavour == "standard" else {"openai_route": "/v1/embeddings", "openai_input": body})
    got = vectors(output)
    assert np.abs(got[[0, 2]] - text_vectors(TEXTS)).max() <= 1e-4
    assert np.abs(got[1] - audio_vectors([wav])[0]).max() <= 1e-4
    texts_only = served.run({"model": "clap", "input": TEXTS})
    body = output[0] if isinstance(output, list) else output
    assert body["usage"]["prompt_tokens"] == texts_only["usage"]["prompt_tokens"] > 0


def test_modality_audio_bare_base64_and_urls(served, reference):
    audio_vectors, _ = reference
    flac = CLIPS["flac 16 kHz stereo"][0]
    routes = {"/clip.flac": (200, {"Content-Type": "audio/flac"}, flac),
              "/moved": (302, {"Location": "/clip.flac"}, b"")}
    with serve_files(routes) as base:
        output = served.run({"model": "clap", "modality": "audio",
                             "input": [base64.b64encode(flac).decode(), base + "/clip.flac", base + "/moved"]})
    got = vectors(output)
    assert np.abs(got - audio_vectors([flac] * 3)).max() <= 1e-4


def wav_header_claiming(frames: int, rate: int = RATE) -> bytes:
    data = struct.pack("<h", 1000) * 4800
    size = frames * 2
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", size) + data)


@pytest.mark.parametrize("case, item, message", [
    ("not audio", {"audio": data_uri(b"just some text, not a clip")},
     "input: item 0: is not audio this worker can read (wav, flac, ogg, mp3)"),
    ("truncated", {"audio": data_uri(wav_header_claiming(48_000))}, "input: item 0: the audio clip is cut short: 9600 of its 96000 data bytes are there"),
    ("truncated mp3", {"audio": data_uri(CLIPS["mp3 22.05 kHz"][0][: len(CLIPS["mp3 22.05 kHz"][0]) // 2])},
     "input: item 0: the audio clip is cut short: "),
    ("empty", {"audio": data_uri(encoded(np.zeros((0, 1), np.float32), RATE, "WAV"))},
     "input: item 0: the audio clip is empty or shorter than 0.01 s"),
    ("too long", {"audio": data_uri(encoded(np.zeros((4 * 8000, 1), np.float32), 8000, "WAV", "PCM_16"))},
     "input: item 0: the audio clip lasts 4.0 s; the limit is 3 s (MAX_AUDIO_SECONDS)"),
    ("too large", {"audio": data_uri(b"\0" * 500_000)}, "input: item 0: the audio clip has more than 400000 bytes"),
    ("image data URI", {"audio": "data:image/png;base64,AAAA"},
     "input: item 0: a data URI must be data:audio/<type>;base64,<data>"),
    ("unreachable", {"audio": "http://127.0.0.1:9/clip.wav"}, "input: item 0: fetching http://127.0.0.1:9/clip.wav failed"),
    ("file URL", {"audio": "file:///etc/passwd"}, "input: item 0: the 'file' scheme is not allowed"),
    ("too many", None, "input: has 5 audio clips; the limit is 4 (MAX_MEDIA_PER_REQUEST)"),
])
def test_bad_audio_fails_in_one_line_and_the_worker_serves_on(served, case, item, message):
    wav = data_uri(CLIPS["wav 48 kHz"][0])
    items = [{"audio": wav}] * 5 if item is None else [item]
    output = served.run({"model": "clap", "input": items})
    assert list(output) == ["error"] and output["error"].startswith(message), output
    assert "\n" not in output["error"]
    assert "data" in served.run({"model": "clap", "input": [{"audio": wav}]})


def test_audio_limits_at_their_bounds(served):
    wav = data_uri(CLIPS["wav 48 kHz"][0])
    assert len(served.run({"model": "clap", "input": [{"audio": wav}] * 4})["data"]) == 4  # MAX_IMAGES_PER_REQUEST
    at_limit = data_uri(encoded(tone(3.0, 8000), 8000, "WAV", "PCM_16"))  # MAX_AUDIO_SECONDS=3
    assert len(served.run({"model": "clap", "input": [{"audio": at_limit}]})["data"]) == 1
    past = data_uri(encoded(tone(3.01, 8000), 8000, "WAV", "PCM_16"))
    assert served.run({"model": "clap", "input": [{"audio": past}]})["error"].startswith(
        "input: item 0: the audio clip lasts 3.0 s; the limit is 3 s")
    for item, message in (({"audio": 5}, "input: item 0: audio must be a non-empty string"),
                          ({"audio": ""}, "input: item 0: audio must be a non-empty string"),
                          ({"audio": "x", "text": "y"}, "input: item 0 must be a string")):
        assert served.run({"model": "clap", "input": [item]})["error"].startswith(message)


def test_audio_to_a_text_only_model_and_the_models_route(served):
    output = served.run({"model": EMBEDDER_ID, "input": ["text", {"audio": data_uri(CLIPS["wav 48 kHz"][0])}]})
    assert output == {"error": f"input: item 1 is audio; model '{EMBEDDER_ID}' takes text only (it supports: embed)"}
    cards = {card["id"]: card["stats"] for card in served.run({"openai_route": "/v1/models"})[0]["data"]}
    assert cards["clap"]["modalities"] == ["text", "audio"] and "audio_embed" in cards["clap"]["capabilities"]
    assert cards[EMBEDDER_ID]["modalities"] == ["text"]
