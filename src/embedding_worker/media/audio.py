"""Audio for CLAP-style models: references in (fetched safely by `fetch`), mono clips at the
model's sampling rate out.

Any format libsndfile reads (wav, flac, ogg/vorbis, opus, mp3) at any sampling rate: the
clip is decoded with soundfile, its channels averaged, and it is resampled to the model's
rate with soxr (Infinity itself refuses every rate but the model's). Decoding runs in a
worker thread; a clip longer than MAX_AUDIO_SECONDS is refused from its header, before its
samples are decoded. Then it goes to Infinity as WAV at the model's rate, which Infinity
reads as it is.
"""

from __future__ import annotations

import io
import re
from functools import partial

import numpy as np

from embedding_worker.media.fetch import MediaError, MediaLimits, load_all

MIN_SECONDS = 0.01


async def load_audio(references: dict[int, str], limits: MediaLimits, sampling_rate: int) -> dict[int, bytes]:
    """Each clip as 32-bit float mono WAV bytes at `sampling_rate`, by input index; raise
    `InvalidRequest` for the first that fails."""
    return await load_all(references, limits, "audio",
                          partial(decode_to_wav, sampling_rate=sampling_rate, max_seconds=limits.max_audio_seconds))


def decode(data: bytes, sampling_rate: int, max_seconds: float) -> np.ndarray:
    """Mono float32 samples at `sampling_rate` (blocking: run it in a thread)."""
    import soundfile
    import soxr

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as clip:
            rate, frames = clip.samplerate, clip.frames
            if frames > max_seconds * rate:
                raise MediaError(f"the audio clip lasts {frames / rate:.1f} s; the limit is {max_seconds:g} s "
                                 "(MAX_AUDIO_SECONDS)")
            samples = clip.read(dtype="float32", always_2d=True)
            declared = _declared_data_bytes(clip.extra_info)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise MediaError(f"is not audio this worker can read (wav, flac, ogg, mp3): {reason}") from None
    if len(samples) < frames or declared is not None:
        cut = f"{len(samples)} of its {frames} frames" if len(samples) < frames else \
            f"{declared[1]} of its {declared[0]} data bytes"
        raise MediaError(f"the audio clip is cut short: {cut} are there")
    if len(samples) < MIN_SECONDS * rate:
        raise MediaError(f"the audio clip is empty or shorter than {MIN_SECONDS:g} s")
    if not np.isfinite(samples).all():
        raise MediaError("the audio clip holds NaN or infinite samples")
    mono = samples.mean(axis=1)
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ")
    return mono.astype(np.float32)


def _declared_data_bytes(log: str) -> tuple[int, int] | None:
    """(declared, present) bytes of a WAV or AIFF data chunk that is cut short, from
    libsndfile's log ("data : 96000 (should be 47978)"); None when it is whole. libsndfile
    itself reads what is there and says nothing."""
    for line in log.splitlines():
        found = re.match(r"\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", line)
        if found and int(found[1]) > int(found[2]):
            return int(found[1]), int(found[2])
    return None


def decode_to_wav(data: bytes, sampling_rate: int, max_seconds: float) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, decode(data, sampling_rate, max_seconds), sampling_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()
