"""Audio for CLAP-style models: encoded clips in (fetched safely by `fetch`), mono clips at
the model's sampling rate out.

Any format libsndfile reads (wav, flac, ogg/vorbis, opus, mp3) at any sampling rate: the
clip is decoded with soundfile, its channels averaged, and it is resampled to the model's
rate with soxr (Infinity itself refuses every rate but the model's). A clip's cost comes from
its header: longer than MAX_AUDIO_SECONDS, more than MAX_AUDIO_SAMPLES samples (frames x
channels: what decoding produces) or a rate past MAX_AUDIO_SAMPLE_RATE is refused before
anything is decoded, and so is a request whose clips add up to more than
MAX_REQUEST_AUDIO_SAMPLES. Decoding reads BLOCK_FRAMES at a time and averages each block's
channels as it goes, so a clip never exists decoded in all its channels. Then it goes to
Infinity as WAV at the model's rate, which Infinity reads as it is.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from embedding_worker.media.fetch import MediaError, MediaLimits, Probe

MIN_SECONDS = 0.01
BLOCK_FRAMES = 65_536


@dataclass(frozen=True)
class Audio:
    """The audio `MediaKind` for a model that takes `sampling_rate` Hz."""

    sampling_rate: int
    name: str = "audio"
    budget: str = "samples (MAX_REQUEST_AUDIO_SAMPLES)"

    def request_limit(self, limits: MediaLimits) -> int:
        return limits.max_request_audio_samples

    def probe(self, data: bytes, limits: MediaLimits) -> Probe:
        with _opened(data, limits) as clip:  # mono at its rate, then at the model's, then as WAV
            return Probe(clip.frames * clip.channels, 4 * clip.frames * max(3, 3 * self.sampling_rate // clip.samplerate))

    def decode(self, data: bytes, limits: MediaLimits) -> bytes:
        return decode_to_wav(data, self.sampling_rate, limits)


class _opened:
    """`soundfile.SoundFile` over the bytes, its header checked against the limits."""

    def __init__(self, data: bytes, limits: MediaLimits) -> None:
        import soundfile

        try:
            self.clip = soundfile.SoundFile(io.BytesIO(data))
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise _unreadable(exc) from None
        rate, frames, channels = self.clip.samplerate, self.clip.frames, self.clip.channels
        problem = None
        if rate > limits.max_sample_rate:
            problem = f"is sampled at {rate} Hz; the limit is {limits.max_sample_rate} Hz (MAX_AUDIO_SAMPLE_RATE)"
        elif frames > limits.max_audio_seconds * rate:
            problem = (f"the audio clip lasts {frames / rate:.1f} s; the limit is {limits.max_audio_seconds:g} s "
                       "(MAX_AUDIO_SECONDS)")
        elif frames * channels > limits.max_audio_samples:
            problem = (f"the audio clip holds {frames * channels:,} samples ({frames:,} frames x {channels} channels); "
                       f"the limit is {limits.max_audio_samples:,} (MAX_AUDIO_SAMPLES)")
        if problem:
            self.clip.close()
            raise MediaError(problem)

    def __enter__(self):
        return self.clip

    def __exit__(self, *_: object) -> None:
        self.clip.close()


def _unreadable(exc: Exception) -> MediaError:
    reason = " ".join(str(exc).split())[:120]
    return MediaError(f"is not audio this worker can read (wav, flac, ogg, mp3): {reason}")


def decode(data: bytes, sampling_rate: int, limits: MediaLimits) -> np.ndarray:
    """Mono float32 samples at `sampling_rate` (blocking: run it in a thread)."""
    import soundfile
    import soxr

    with _opened(data, limits) as clip:
        rate, frames = clip.samplerate, clip.frames
        mono = np.empty(frames, dtype=np.float32)
        read = 0
        try:
            while read < frames:  # `read`, not `blocks`: blocks pads a clip that is cut short
                block = clip.read(min(BLOCK_FRAMES, frames - read), dtype="float32", always_2d=True)
                if not len(block):
                    break
                mono[read:read + len(block)] = block.mean(axis=1)
                read += len(block)
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise _unreadable(exc) from None
        declared = _declared_data_bytes(clip.extra_info)
    if read < frames or declared is not None:
        cut = f"{read} of its {frames} frames" if read < frames else f"{declared[1]} of its {declared[0]} data bytes"
        raise MediaError(f"the audio clip is cut short: {cut} are there")
    if read < MIN_SECONDS * rate:
        raise MediaError(f"the audio clip is empty or shorter than {MIN_SECONDS:g} s")
    if not np.isfinite(mono).all():
        raise MediaError("the audio clip holds NaN or infinite samples")
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ")
    return mono.astype(np.float32, copy=False)


def _declared_data_bytes(log: str) -> tuple[int, int] | None:
    """(declared, present) bytes of a WAV or AIFF data chunk that is cut short, from
    libsndfile's log ("data : 96000 (should be 47978)"); None when it is whole. libsndfile
    itself reads what is there and says nothing."""
    for line in log.splitlines():
        found = re.match(r"\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", line)
        if found and int(found[1]) > int(found[2]):
            return int(found[1]), int(found[2])
    return None


def decode_to_wav(data: bytes, sampling_rate: int, limits: MediaLimits) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, decode(data, sampling_rate, limits), sampling_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()
