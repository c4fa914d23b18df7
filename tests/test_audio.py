"""ser.audio: every input kind and format decodes to the same clean 16 kHz mono waveform."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.audio import SAMPLE_RATE, InvalidAudio, Segment, load_audio, segments
from tests.audio_files import encode_av

pytestmark = pytest.mark.timeout(60)

TONE_HZ = 440.0


def tone(rate: int, seconds: float = 1.0, amplitude: float = 0.5, channels: int = 1) -> np.ndarray:
    """A sine (per channel a different amplitude, so a wrong downmix shows), shape (n,) or (n, ch)."""
    t = np.arange(round(rate * seconds)) / rate
    wave = amplitude * np.sin(2 * np.pi * TONE_HZ * t)
    if channels == 1:
        return wave.astype(np.float32)
    gains = np.linspace(0.5, 1.5, channels)  # mean gain is 1.0
    return (wave[:, None] * gains[None, :]).astype(np.float32)


def encode(wave: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def assert_tone(y: np.ndarray, seconds: float = 1.0, amplitude: float = 0.5, tol: float = 0.05) -> None:
    """Right type, shape, length, level and pitch: the resampler and downmix did their jobs."""
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - seconds * SAMPLE_RATE) <= 0.06 * SAMPLE_RATE  # lossy codecs pad a little
    middle = y[len(y) // 4 : 3 * len(y) // 4]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(amplitude / np.sqrt(2), rel=tol)
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(middle)
    assert abs(peak_hz - TONE_HZ) < 5


# --- formats and encodings --------------------------------------------------------------------

WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]


@pytest.mark.parametrize("subtype", WAV_SUBTYPES)
def test_wav_sample_formats(subtype):
    tol = 0.05 if subtype == "PCM_U8" else 0.01
    assert_tone(load_audio(encode(tone(22050), 22050, "WAV", subtype)), tol=tol)


@pytest.mark.parametrize(
    "fmt,subtype",
    [
        ("FLAC", "PCM_16"),
        ("FLAC", "PCM_24"),
        ("OGG", "VORBIS"),
        ("MP3", "MPEG_LAYER_III"),
        ("AIFF", "PCM_16"),
    ],
)
def test_compressed_and_other_containers(fmt, subtype):
    assert_tone(load_audio(encode(tone(44100), 44100, fmt, subtype)))


def test_ogg_opus():
    assert_tone(load_audio(encode(tone(48000), 48000, "OGG", "OPUS")))


@pytest.mark.parametrize("container,codec", [("ipod", "aac"), ("mp4", "aac"), ("webm", "libopus")])
def test_browser_and_phone_containers(container, codec):
    assert_tone(load_audio(encode_av(tone(48000), 48000, container, codec)))


@pytest.mark.parametrize("channels", [2, 8])
def test_multichannel_files_are_downmixed(channels):
    assert_tone(load_audio(encode(tone(16000, channels=channels), 16000, "WAV", "PCM_16")), tol=0.01)


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 384000])
def test_sample_rates(rate):
    assert_tone(load_audio(encode(tone(rate), rate, "WAV", "FLOAT")), tol=0.01)


@pytest.mark.parametrize("rate", [7999, 44101, 47999])
def test_odd_sample_rates_resample_quickly(rate):
    # Exact sinc resampling at 47999 -> 16000 Hz takes minutes; the module moves to a kHz grid first.
    assert_tone(load_audio(encode(tone(rate), rate, "WAV", "FLOAT")), tol=0.02)


def test_silence_check_uses_the_whole_file_not_the_header():
    # A quiet clip: -50 dBFS peak speech-like tone must pass.
    y = load_audio(encode(tone(16000, amplitude=10 ** (-50 / 20)), 16000, "WAV", "PCM_16"))
    assert np.max(np.abs(y)) == pytest.approx(10 ** (-50 / 20), rel=0.05)


# --- sources: path, bytes, file object, Gradio tuple, array ------------------------------------


def test_sources_agree(tmp_path: Path):
    data = encode(tone(48000), 48000, "WAV", "PCM_16")
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    results = [
        load_audio(str(path)),
        load_audio(path),
        load_audio(data),
        load_audio(bytearray(data)),
        load_audio(io.BytesIO(data)),
        load_audio((48000, (tone(48000) * 32767).astype(np.int16))),
    ]
    for y in results:
        assert_tone(y, tol=0.01)
        np.testing.assert_allclose(y, results[0], atol=2e-4)


def test_open_binary_file_object(tmp_path: Path):
    path = tmp_path / "clip.flac"
    path.write_bytes(encode(tone(16000), 16000, "FLAC"))
    with open(path, "rb") as f:
        assert_tone(load_audio(f), tol=0.01)


@pytest.mark.parametrize(
    "dtype,scale",
    [(np.int16, 2**15 - 1), (np.int32, 2**31 - 1), (np.float32, 1.0), (np.float64, 1.0), (np.int8, 127)],
)
def test_gradio_tuple_dtypes(dtype, scale):
    wave = tone(48000).astype(np.float64) * scale
    wave = (np.round(wave) if np.dtype(dtype).kind == "i" else wave).astype(dtype)
    assert_tone(load_audio((48000, wave)), tol=0.02 if dtype == np.int8 else 0.01)


def test_gradio_tuple_uint8_is_offset_binary():
    wave = np.round(tone(16000) * 127 + 128).astype(np.uint8)
    assert_tone(load_audio((16000, wave)), tol=0.02)


@pytest.mark.parametrize("channels", [2, 6])
def test_gradio_tuple_channels_last_and_first(channels):
    wave = (tone(44100, channels=channels) * 32767).astype(np.int16)  # (n, channels), Gradio's layout
    assert_tone(load_audio((44100, wave)), tol=0.01)
    assert_tone(load_audio((44100, wave.T.copy())), tol=0.01)  # (channels, n)


def test_gradio_tuple_numpy_rate_types():
    wave = (tone(16000) * 32767).astype(np.int16)
    assert_tone(load_audio((np.int64(16000), wave)), tol=0.01)
    assert_tone(load_audio((16000.0, wave)), tol=0.01)


def test_librosa_order_array_then_rate():
    assert_tone(load_audio((tone(22050), 22050)), tol=0.01)


def test_bare_array_is_taken_as_16k():
    wave = tone(16000)
    y = load_audio(wave)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, wave, atol=1e-7)
    assert_tone(load_audio(wave.astype(np.float64)), tol=0.01)


# --- limits and messages -----------------------------------------------------------------------


def test_max_duration_argument_and_env(monkeypatch):
    data = encode(tone(16000, seconds=3.0), 16000, "FLAC")
    with pytest.raises(InvalidAudio, match=r"^The clip is 3\.0 s long; the limit is 2 s\.$"):
        load_audio(data, max_duration_s=2)
    assert len(load_audio(data, max_duration_s=3)) == 3 * SAMPLE_RATE
    monkeypatch.setenv("SER_MAX_DURATION_S", "2.5")
    with pytest.raises(InvalidAudio, match=r"the limit is 2\.5 s"):
        load_audio(data)
    with pytest.raises(InvalidAudio, match=r"the limit is 2\.5 s"):
        load_audio(tone(16000, seconds=3.0))  # arrays are checked too


def test_max_duration_applies_to_av_decoded_streams():
    data = encode_av(tone(48000, seconds=3.0), 48000, "webm", "libopus")
    with pytest.raises(InvalidAudio, match="the limit is 1 s"):
        load_audio(data, max_duration_s=1)


def test_max_bytes_env(monkeypatch, tmp_path: Path):
    data = encode(tone(16000), 16000, "WAV", "PCM_16")
    monkeypatch.setenv("SER_MAX_BYTES", "1000")
    message = r"^The file is 0\.0 MB; the limit is 0\.001 MB\.$"
    with pytest.raises(InvalidAudio, match=message):
        load_audio(data)
    with pytest.raises(InvalidAudio, match=message):
        load_audio(io.BytesIO(data))
    (tmp_path / "a.wav").write_bytes(data)
    with pytest.raises(InvalidAudio, match=message):
        load_audio(tmp_path / "a.wav")


@pytest.mark.parametrize(
    "source,message",
    [
        (b"", r"^The file is empty\.$"),
        (None, r"^No audio was given\.$"),
        ((16000, None), r"^No audio was given\.$"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), r"^This is not audio we can read \(looks like a PNG image\)\.$"),
        (b"%PDF-1.7\n" + bytes(200), r"looks like a PDF document"),
        (b"PK\x03\x04" + bytes(200), r"looks like a ZIP archive"),
        (b"\xff\xd8\xff\xe0" + bytes(200), r"looks like a JPEG image"),
        (b"GIF89a" + bytes(200), r"looks like a GIF image"),
        (b"\x1f\x8b\x08\x00" + bytes(200), r"looks like a gzip archive"),
        (b"just some notes, not a recording\n", r"looks like text\)"),
        (b"<!DOCTYPE html><html><body>404</body></html>", r"looks like an HTML page"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(200), r"looks like a WebP image"),
        (bytes(range(256)) * 4, r"^This file could not be decoded as audio"),
        (np.zeros(16000, np.float32), r"^The recording is silent\.$"),
        (np.full(16000, 0.3, np.float32), r"^The recording is silent\.$"),
        (np.zeros(0, np.float32), r"^The recording is empty \(no audio samples\)\.$"),
        (np.ones(100, np.float32), r"^The clip is 0\.00625 s long; it must be at least 0\.1 s\.$"),
        (
            np.full(16000, np.nan, np.float32),
            r"^The audio contains invalid sample values \(NaN or infinity\)\.$",
        ),
        (np.zeros((4, 4, 4), np.float32), r"shape \(samples,\) or \(samples, channels\)"),
        (np.zeros(16000, bool), r"must be integers or floats, not bool"),
        ((1, tone(16000)), r"^The sample rate is 1 Hz; it must be at least 4000 Hz\.$"),
        ((768000, tone(16000)), r"^The sample rate is 768000 Hz; it must be at most 384000 Hz\.$"),
        (("16000", tone(16000)), r"is not a number"),
        ((10**400, tone(16000)), r"^The sample rate 1{1}0{39} is not a number\.$"),
        ((float("inf"), tone(16000)), r"^The sample rate inf is not a number\.$"),
        ((16000, [0.1, 0.2]), r"numpy array, got list"),
        (12345, r"^Unsupported audio input of type int\.$"),
        ("/no/such/file.wav", r"^The file '/no/such/file\.wav' does not exist\.$"),
        (io.StringIO("text"), r"binary mode"),
    ],
    ids=lambda v: repr(v)[:40] if not isinstance(v, str) else None,
)
def test_invalid_audio_messages(source, message):
    with pytest.raises(InvalidAudio, match=message):
        load_audio(source)


def test_invalid_audio_is_a_value_error():
    assert issubclass(InvalidAudio, ValueError)


def test_a_directory_is_not_a_file(tmp_path: Path):
    with pytest.raises(InvalidAudio, match="cannot be opened|not a regular file"):
        load_audio(tmp_path)


def test_audio_file_without_audio_track():
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:  # a file with a subtitle track only
        stream = out.add_stream("ass")
        del stream
    with pytest.raises(InvalidAudio):
        load_audio(buf.getvalue())


# --- segments ----------------------------------------------------------------------------------


def test_short_clip_is_one_segment():
    wave = np.arange(16000, dtype=np.float32)
    (only,) = segments(wave, window_s=3.0, hop_s=1.5)
    assert isinstance(only, Segment)
    assert (only.start_s, only.end_s) == (0.0, 1.0)
    np.testing.assert_array_equal(only.samples, wave)


def test_windows_hop_and_last_window_covers_the_end():
    wave = np.arange(int(10.2 * SAMPLE_RATE), dtype=np.float32)
    segs = segments(wave, window_s=3.0, hop_s=1.5)
    assert [s.start_s for s in segs] == [0.0, 1.5, 3.0, 4.5, 6.0, 7.2]
    assert segs[-1].end_s == pytest.approx(10.2)
    for s in segs:
        assert len(s.samples) == 3 * SAMPLE_RATE
        assert s.samples[0] == round(s.start_s * SAMPLE_RATE)
        assert s.end_s - s.start_s == pytest.approx(3.0)


def test_exact_fit_adds_no_extra_window():
    segs = segments(np.zeros(6 * SAMPLE_RATE, np.float32), window_s=3.0, hop_s=1.5)
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 3.0), (1.5, 4.5), (3.0, 6.0)]


def test_segments_custom_rate_and_bad_arguments():
    segs = segments(np.zeros(800, np.float32), window_s=0.05, hop_s=0.05, sample_rate=8000)
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 0.05), (0.05, 0.1)]
    with pytest.raises(ValueError):
        segments(np.zeros(10), window_s=0, hop_s=1)
    with pytest.raises(ValueError):
        segments(np.zeros(10), window_s=1, hop_s=-1)


# --- regressions: bugs found while building the loader -----------------------------------------


def test_mp3_longer_than_one_block_is_not_garbled():
    # libsndfile 1.2's MP3 reader returned shifted samples after the first block read, so MP3 goes
    # through PyAV; a 3 s tone must come back without a single discontinuity.
    y = load_audio(encode(tone(44100, seconds=3.0), 44100, "MP3", "MPEG_LAYER_III"))
    assert_tone(y, seconds=3.0)
    steady = y[SAMPLE_RATE // 10 : -SAMPLE_RATE // 10]
    assert np.abs(np.diff(steady)).max() < 2 * 0.5 * 2 * np.pi * TONE_HZ / SAMPLE_RATE


def test_truncated_flac_keeps_the_audio_before_the_cut():
    data = encode(tone(16000, seconds=2.0), 16000, "FLAC")
    y = load_audio(data[: len(data) // 2])
    assert 0.3 * SAMPLE_RATE < len(y) < 1.5 * SAMPLE_RATE
    assert np.abs(y).max() == pytest.approx(0.5, rel=0.02)


def test_multichannel_int_tuple_is_scaled_before_downmix():
    # Averaging int16 channels first (into float) skipped the int -> [-1, 1] scaling.
    wave = (tone(16000, channels=2) * 20000).astype(np.int16)
    assert np.abs(load_audio((16000, wave))).max() < 1.0
