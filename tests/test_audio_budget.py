"""Bounded decoding: rate x channels x duration is checked against a budget before decoding, for
libsndfile's formats and PyAV's alike, while ordinary speech at any common rate passes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from ser.audio import InvalidAudio, decode_budget, load_audio
from tests.test_app_security import flac_bomb


def encode_pcm(seconds: float, rate: int, container: str, codec: str) -> bytes:
    """Stereo noise through PyAV (AAC in ADTS, PCM in Matroska)."""
    import av

    n = int(seconds * rate)
    wave = (np.random.default_rng(0).standard_normal((2, n)) * 0.1).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        fmt = stream.codec_context.format.name
        for start in range(0, n, 1024):
            chunk = np.ascontiguousarray(wave[:, start:start + 1024])
            if fmt == "s16":
                chunk = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def test_the_budget_is_the_duration_limit_of_48_khz_stereo() -> None:
    assert decode_budget(600) == 600 * 48000 * 2 and decode_budget(20) == 1_920_000


def test_a_flac_bomb_is_refused_from_its_header(tmp_path) -> None:
    bomb = flac_bomb(tmp_path / "bomb.flac")
    with pytest.raises(InvalidAudio, match="too large to decode: 599.0 s at 384000 Hz with 8 channels"):
        load_audio(bomb)  # the default 600 s limit: the old duration check alone let it through


@pytest.mark.parametrize("container, codec, rate", [("adts", "aac", 96000), ("matroska", "pcm_s16le", 192000)])
def test_pyav_formats_are_held_to_the_same_budget(container: str, codec: str, rate: int) -> None:
    data = encode_pcm(15.0, rate, container, codec)  # shorter than the limit, but 2-4x the samples
    with pytest.raises(InvalidAudio, match=f"too large to decode: 15.* at {rate} Hz with 2 channels"):
        load_audio(data, max_duration_s=20)


@pytest.mark.parametrize("rate, channels", [(8000, 1), (44100, 2), (48000, 2), (96000, 1)])
def test_ordinary_recordings_pass(rate: int, channels: int) -> None:
    noise = (np.random.default_rng(rate).standard_normal((rate * 5, channels)) * 0.1).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, noise, rate, format="WAV")
    assert len(load_audio(buffer.getvalue(), max_duration_s=20)) == 5 * 16000
