"""Issue 9: hostile and odd inputs. Each kind gets a clear InvalidAudio or a correct waveform, fast.

Every case is a function that builds its input under tmp_path and returns (source, expectation):
an expectation is either a regex the InvalidAudio message must match, or a check on the result.
"""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from ser.audio import SAMPLE_RATE, InvalidAudio, load_audio
from tests.audio_files import encode_av

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[1]
NOT_DECODABLE = r"^This file could not be decoded as audio"


def tone(rate: int = SAMPLE_RATE, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def encoded(wave: np.ndarray, rate: int = SAMPLE_RATE, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav_header(
    rate: int = SAMPLE_RATE,
    channels: int = 1,
    bits: int = 16,
    data_size: int = 0,
    riff_size: int | None = None,
) -> bytes:
    """A canonical 44-byte PCM WAV header whose size fields we can make lie."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    riff = 36 + data_size if riff_size is None else riff_size
    return (
        b"RIFF"
        + struct.pack("<I", riff & 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_size & 0xFFFFFFFF)
    )


def pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def encoded_av(container: str, codec: str, rate: int = 48000) -> bytes:
    return encode_av(tone(rate), rate, container, codec)


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def sparse_file(tmp: Path, name: str, head: bytes, size: int) -> Path:
    """A file of `size` bytes that costs only its header on disk (the rest is a hole)."""
    path = write(tmp, name, head)
    with open(path, "r+b") as f:
        f.truncate(size)
    return path


def is_tone(seconds: float = 1.0, tol: float = 0.05) -> Callable[[np.ndarray], None]:
    def check(y: np.ndarray) -> None:
        assert y.dtype == np.float32 and y.ndim == 1
        assert abs(len(y) / SAMPLE_RATE - seconds) < 0.06
        middle = y[len(y) // 4 : 3 * len(y) // 4]
        assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=tol)

    return check


def is_audio(seconds: float) -> Callable[[np.ndarray], None]:
    def check(y: np.ndarray) -> None:
        assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()
        assert abs(len(y) / SAMPLE_RATE - seconds) < 0.01

    return check


def is_partial(max_seconds: float) -> Callable[[np.ndarray], None]:
    """A damaged tail is dropped: what decoded cleanly before it comes back."""

    def check(y: np.ndarray) -> None:
        assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()
        assert 0.1 <= len(y) / SAMPLE_RATE <= max_seconds + 0.06
        assert np.abs(y).max() > 0.3

    return check


def speech_example() -> np.ndarray:
    wave, rate = sf.read(REPO / "examples" / "neutral.flac", dtype="float32")
    assert rate == SAMPLE_RATE
    return wave


# --- the cases: name -> builder(tmp_path) -> (source, expectation) ----------------------------

CASES: dict[str, Callable[[Path], tuple[object, object]]] = {
    # emptiness and length
    "empty file": lambda tmp: (write(tmp, "empty.wav", b""), r"^The file is empty\.$"),
    "empty bytes": lambda tmp: (b"", r"^The file is empty\.$"),
    "header only, zero frames": lambda tmp: (
        wav_header(),
        r"^The recording is empty \(no audio samples\)\.$",
    ),
    "one sample": lambda tmp: (
        encoded(np.array([0.5], np.float32)),
        r"^The clip is 6\.25e-05 s long; it must be at least 0\.1 s\.$",
    ),
    "50 ms": lambda tmp: (
        encoded(tone(seconds=0.05)),
        r"^The clip is 0\.05 s long; it must be at least 0\.1 s\.$",
    ),
    "one hour, refused from the header": lambda tmp: (
        sparse_file(
            tmp, "hour.wav", wav_header(data_size=3600 * SAMPLE_RATE * 2), 44 + 3600 * SAMPLE_RATE * 2
        ),
        r"^The clip is 3600\.0 s long; the limit is 600 s\.$",
    ),
    "11 minutes of 8 kHz FLAC": lambda tmp: (
        encoded(np.zeros(660 * 8000, np.int16), 8000, "FLAC"),
        r"^The clip is 660\.0 s long; the limit is 600 s\.$",
    ),
    "200 MB upload (sparse file)": lambda tmp: (
        sparse_file(tmp, "big.wav", wav_header(data_size=201_000_000 - 44), 201_000_000),
        r"^The file is 201\.0 MB; the limit is 200 MB\.$",
    ),
    # silence and odd levels
    "all zeros": lambda tmp: (encoded(np.zeros(SAMPLE_RATE, np.float32)), r"^The recording is silent\.$"),
    "DC offset only": lambda tmp: (
        encoded(np.full(SAMPLE_RATE, 0.4, np.float32)),
        r"^The recording is silent\.$",
    ),
    "1-LSB dither of 16-bit silence": lambda tmp: (
        (SAMPLE_RATE, np.random.default_rng(0).integers(-1, 2, SAMPLE_RATE).astype(np.int16)),
        r"^The recording is silent\.$",
    ),
    "8-bit unsigned silence (all 128)": lambda tmp: (
        (8000, np.full(8000, 128, np.uint8)),
        r"^The recording is silent\.$",
    ),
    "DC offset under a tone": lambda tmp: (encoded(tone(amplitude=0.3) + 0.5), is_audio(1.0)),
    "clipped square wave": lambda tmp: (encoded(np.sign(tone() + 1e-9).astype(np.float32)), is_audio(1.0)),
    "quiet speech at -50 dBFS peak": lambda tmp: (
        speech_example() * (10 ** (-50 / 20) / np.abs(speech_example()).max()),
        is_audio(len(speech_example()) / SAMPLE_RATE),
    ),
    "NaN floats": lambda tmp: (
        encoded(
            np.where(np.arange(SAMPLE_RATE) % 100 == 0, np.nan, tone()).astype(np.float32), subtype="FLOAT"
        ),
        r"^The audio contains invalid sample values \(NaN or infinity\)\.$",
    ),
    "inf floats": lambda tmp: (
        encoded(np.where(np.arange(SAMPLE_RATE) == 5, np.inf, tone()).astype(np.float32), subtype="FLOAT"),
        r"NaN or infinity",
    ),
    "float64 beyond float32 range": lambda tmp: (
        (SAMPLE_RATE, tone().astype(np.float64) * 1e300),
        r"NaN or infinity",
    ),
    # sample rates, channels, sample formats
    "1 Hz sample rate": lambda tmp: (
        encoded(tone(rate=1, seconds=200), 1),
        r"^The sample rate is 1 Hz; it must be at least 4000 Hz\.$",
    ),
    "1 Hz sample rate in a Gradio tuple": lambda tmp: ((1, tone()), r"^The sample rate is 1 Hz"),
    "zero sample rate in a Gradio tuple": lambda tmp: ((0, tone()), r"^The sample rate is 0 Hz"),
    "negative sample rate": lambda tmp: ((-16000, tone()), r"^The sample rate is -16000 Hz"),
    "NaN sample rate": lambda tmp: ((float("nan"), tone()), r"is not a number"),
    "8 kHz telephone": lambda tmp: (encoded(tone(8000), 8000, "WAV", "PCM_16"), is_tone()),
    "384 kHz": lambda tmp: (encoded(tone(384000), 384000, "WAV", "PCM_24"), is_tone()),
    "8 channels": lambda tmp: (encoded(np.repeat(tone()[:, None], 8, axis=1)), is_tone()),
    "100 channels in a Gradio tuple": lambda tmp: (
        (SAMPLE_RATE, np.zeros((SAMPLE_RATE, 100), np.int16)),
        r"at most 64 channels",
    ),
    "8-bit unsigned": lambda tmp: (encoded(tone(), subtype="PCM_U8"), is_tone()),
    "24-bit": lambda tmp: (encoded(tone(), subtype="PCM_24"), is_tone()),
    "float64 WAV": lambda tmp: (encoded(tone(), subtype="DOUBLE"), is_tone()),
    # damaged WAV structure
    "truncated WAV header": lambda tmp: (encoded(tone())[:20], NOT_DECODABLE),
    "WAV cut in the middle of the data": lambda tmp: (
        encoded(tone(seconds=2.0))[: 44 + SAMPLE_RATE * 2],
        is_tone(),
    ),
    "WAV whose data size is larger than the file": lambda tmp: (
        wav_header(data_size=10**9) + pcm16(tone()),
        is_tone(),
    ),
    "streaming WAV with 0xFFFFFFFF sizes": lambda tmp: (
        wav_header(data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF) + pcm16(tone()),
        is_tone(),
    ),
    "WAV whose RIFF size is zero": lambda tmp: (
        wav_header(data_size=SAMPLE_RATE * 2, riff_size=0) + pcm16(tone()),
        is_tone(),
    ),
    "WAV with zero channels": lambda tmp: (wav_header(channels=0, data_size=100) + bytes(100), NOT_DECODABLE),
    "WAV with zero sample rate": lambda tmp: (wav_header(rate=0, data_size=100) + bytes(100), NOT_DECODABLE),
    # other containers
    "MP3": lambda tmp: (encoded(tone(44100), 44100, "MP3", "MPEG_LAYER_III"), is_tone()),
    "OGG/Vorbis": lambda tmp: (encoded(tone(44100), 44100, "OGG", "VORBIS"), is_tone()),
    "FLAC": lambda tmp: (encoded(tone(44100), 44100, "FLAC"), is_tone()),
    "M4A/AAC": lambda tmp: (encoded_av("ipod", "aac"), is_tone()),
    "WebM/Opus": lambda tmp: (encoded_av("webm", "libopus"), is_tone()),
    "FLAC cut inside its first frame": lambda tmp: (
        encoded(tone(seconds=2.0), fmt="FLAC")[:2000],
        NOT_DECODABLE,
    ),
    "FLAC cut in the middle": lambda tmp: (encoded(tone(seconds=2.0), fmt="FLAC")[:10000], is_partial(2.0)),
    "WebM cut in the middle": lambda tmp: (encoded_av("webm", "libopus")[:5000], is_partial(1.0)),
    "MP3 cut in the middle": lambda tmp: (
        encoded(tone(44100), 44100, "MP3", "MPEG_LAYER_III")[:5000],
        is_partial(1.0),
    ),
    "FLAC bomb: 10 minutes of silence in a few KB": lambda tmp: (
        encoded(np.zeros(600 * 8000, np.int16), 8000, "FLAC"),
        r"^The recording is silent\.$",
    ),
    "FLAC bomb at 384 kHz past the limit": lambda tmp: (
        encoded(np.zeros(384000 * 2, np.int16), 384000, "FLAC"),
        r"^The clip is 2\.0 s long; the limit is 1 s\.$",
    ),
    # things that are not audio
    "PNG renamed .wav": lambda tmp: (
        write(tmp, "photo.wav", b"\x89PNG\r\n\x1a\n" + bytes(500)),
        r"^This is not audio we can read \(looks like a PNG image\)\.$",
    ),
    "ZIP renamed .mp3": lambda tmp: (
        write(tmp, "a.mp3", b"PK\x03\x04" + bytes(500)),
        r"looks like a ZIP archive",
    ),
    "PDF": lambda tmp: (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(500), r"looks like a PDF document"),
    "text renamed .wav": lambda tmp: (
        write(tmp, "notes.wav", "Meeting notes:\n- buy milk\n".encode()),
        r"looks like text",
    ),
    "MIDI file": lambda tmp: (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x60" + bytes(200), NOT_DECODABLE),
    "random bytes": lambda tmp: (np.random.default_rng(1).bytes(4096), NOT_DECODABLE),
    # file names and paths
    "unicode file name": lambda tmp: (write(tmp, "grüße 😀 録音.wav", encoded(tone())), is_tone()),
    "relative ../ path": lambda tmp: (
        str(write(tmp, "a/b/clip.wav", encoded(tone())).parent / ".." / ".." / "a" / "b" / "clip.wav"),
        is_tone(),
    ),
    "absolute path": lambda tmp: (str(write(tmp, "abs.wav", encoded(tone())).resolve()), is_tone()),
    "file name with a NUL byte": lambda tmp: (str(tmp / "bad\x00name.wav"), r"cannot be opened"),
    "missing file": lambda tmp: (tmp / "nope.wav", r"does not exist"),
    "a directory": lambda tmp: (tmp, r"is not a regular file\.$"),
    "a named pipe (FIFO) does not block": lambda tmp: (fifo(tmp / "pipe.wav"), r"is not a regular file\.$"),
    "file name too long": lambda tmp: (str(tmp / ("x" * 5000 + ".wav")), r"cannot be opened|does not exist"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, monkeypatch):
    if name == "FLAC bomb at 384 kHz past the limit":
        monkeypatch.setenv("SER_MAX_DURATION_S", "1")
    source, expectation = CASES[name](tmp_path)
    if isinstance(expectation, str):
        with pytest.raises(InvalidAudio, match=expectation):
            load_audio(source)
    else:
        expectation(load_audio(source))


def peak_allocation(call: Callable[[], object]) -> int:
    """Peak bytes allocated (numpy arrays included) while ``call`` runs and is refused."""
    tracemalloc.start()
    try:
        with pytest.raises(InvalidAudio):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("size, data_size, message", [
    (44 + 3600 * SAMPLE_RATE * 2, 3600 * SAMPLE_RATE * 2, r"^The clip is 3600\.0 s long"),  # 115 MB: header says 1 h
    (201_000_000, 201_000_000 - 44, r"^The file is 201\.0 MB"),
], ids=["one hour", "200 MB"])
def test_long_or_large_files_are_refused_before_decoding(tmp_path: Path, size: int, data_size: int, message: str):
    """The product refuses from the header or the file size: decoding first would allocate the clip."""
    path = sparse_file(tmp_path, "big.wav", wav_header(data_size=data_size), size)
    assert os.stat(path).st_blocks * 512 < 10_000_000  # the case itself costs next to nothing on disk
    with pytest.raises(InvalidAudio, match=message):
        load_audio(path)
    assert peak_allocation(lambda: load_audio(path)) < 5_000_000


def test_file_object_larger_than_the_limit_is_not_read_whole(monkeypatch):
    monkeypatch.setenv("SER_MAX_BYTES", "1000")

    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            assert n == 1001  # the loader asks for one byte past the limit, never "everything"
            return b"\x00" * n

    with pytest.raises(InvalidAudio, match="the limit is 0.001 MB"):
        load_audio(Endless())
