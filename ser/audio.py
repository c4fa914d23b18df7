"""Turn whatever a user hands us into a clean 16 kHz mono float32 waveform, or say why we can't.

Inputs come from uploads, microphones and scripts, so every failure on bad input is one exception
type, `InvalidAudio`, whose message can be shown to a person as it is. The costly work (decoding,
resampling) only starts once cheap checks (size on disk, header duration, sample rate) have passed,
so a one-hour upload is refused before it is decoded, and decoding stops at the duration limit
whatever a (possibly lying) header says, so a tiny FLAC cannot expand to gigabytes.

Decoding is also bounded by a budget of samples (sample rate x channels x duration): at most the
duration limit's worth of 48 kHz stereo (57.6 M samples for 600 s). A header that asks for more,
e.g. 599 s at 384 kHz with 8 channels (1.8 G samples from a 2 MB FLAC), is refused before one
sample is decoded; when the header understates, decoding counts samples and stops at the budget.
The mono float32 copy the decoder keeps is then at most about 230 MB.

Decoding: libsndfile (via `soundfile`) reads WAV/FLAC/OGG (Vorbis, Opus)/AIFF; MP3, M4A/AAC, browser
WebM/Opus and MP4 go through PyAV, whose wheels bundle ffmpeg's libraries, so no system ffmpeg is
needed. Resampling uses `torchaudio.functional.resample`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple, Union

import numpy as np

SAMPLE_RATE = 16000
DEFAULT_MAX_DURATION_S = 600.0
DEFAULT_MAX_BYTES = 200_000_000
MIN_DURATION_S = 0.1  # the speech encoders need a few frames; shorter clips carry no emotion anyway
# The shortest clip a model's answer is given for: under half a second there is at most a syllable,
# and the models still answer with confidence (a 0.1 s click came back "neutral 100 %"). Decoding
# accepts shorter clips (corpora and training read them); ``check_judgeable`` refuses to judge them.
MIN_JUDGED_S = 0.5
# Below 4 kHz there is no intelligible speech band left (8 kHz telephone audio is fine).
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384000
MAX_CHANNELS = 64
# Peak of the signal minus its mean, about -70 dBFS: rejects digital silence and constant (DC)
# signals while quiet but real speech (peaks of -50 dBFS and up) passes.
SILENCE_PEAK = 10 ** (-70 / 20)
# An exact sinc resampler between rates whose reduced ratio is large (e.g. 47999 -> 16000 Hz) builds
# an enormous kernel and runs for minutes; such rates are first moved to a 1 kHz grid.
_MAX_RESAMPLE_FACTOR = 1000
_BLOCK_SAMPLES = 1 << 14  # small, so a damaged tail loses little
# The decode budget: the duration limit's worth of this many samples per second (48 kHz stereo).
BUDGET_SAMPLES_PER_S = 48000 * 2

AudioSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, tuple, np.ndarray]


class InvalidAudio(ValueError):
    """The input is not usable audio; the message is written for the person who supplied it."""


class TooShortToJudge(InvalidAudio):
    """The clip decodes but is too short for an emotion judgement (``MIN_JUDGED_S``)."""


def check_judgeable(waveform: np.ndarray) -> np.ndarray:
    """Refuse a decoded 16 kHz clip shorter than ``MIN_JUDGED_S``: the one rule for every path that
    gives a model's answer (``Predictor.predict``, bulk prediction, the app, the CLI, the HTTP API)."""
    seconds = len(waveform) / SAMPLE_RATE
    if seconds < MIN_JUDGED_S:
        raise TooShortToJudge(
            f"The clip is {seconds:.2f} s long: too short to judge. An emotion needs at least "
            f"{MIN_JUDGED_S:g} s of speech."
        )
    return waveform


class Segment(NamedTuple):
    start_s: float
    end_s: float
    samples: np.ndarray


def duration_limit_s() -> float:
    """The configured clip-length limit (env SER_MAX_DURATION_S, default 600 s)."""
    return float(os.environ.get("SER_MAX_DURATION_S", DEFAULT_MAX_DURATION_S))


def byte_limit() -> int:
    """The configured upload size limit (env SER_MAX_BYTES, default 200 MB)."""
    return int(float(os.environ.get("SER_MAX_BYTES", DEFAULT_MAX_BYTES)))


def decode_budget(limit_s: float) -> int:
    """Samples (all channels) a decode may produce for a duration limit of ``limit_s``."""
    return max(1, math.floor(limit_s * BUDGET_SAMPLES_PER_S))


def load_audio(source: AudioSource, *, max_duration_s: float | None = None) -> np.ndarray:
    """Decode, downmix, validate and resample `source` to a 1-D float32 array at 16 kHz.

    `source` is a file path, encoded file bytes, a binary file object, Gradio's
    `(sample_rate, ndarray)` tuple, or a bare ndarray that is already at 16 kHz.
    Raises InvalidAudio (a ValueError) with a human-readable message for anything unusable.
    """
    limit_s = duration_limit_s() if max_duration_s is None else float(max_duration_s)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is caught by _validate
        mono, rate = _decode(source, limit_s)
        _validate(mono, rate, limit_s)
        return _resample(mono, rate)


def segments(
    waveform: np.ndarray, window_s: float = 3.0, hop_s: float = 1.5, sample_rate: int = SAMPLE_RATE
) -> list[Segment]:
    """Cut a long waveform into overlapping windows for a timeline.

    A clip no longer than one window is one segment; otherwise the last window is aligned to the
    end so every window has full length and the end of the clip is always covered.
    """
    if window_s <= 0 or hop_s <= 0:
        raise ValueError(f"window_s and hop_s must be positive, got {window_s} and {hop_s}")
    waveform = np.asarray(waveform)
    n, window, hop = len(waveform), round(window_s * sample_rate), max(1, round(hop_s * sample_rate))
    if n <= window:
        return [Segment(0.0, n / sample_rate, waveform)]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] + window < n:
        starts.append(n - window)
    return [Segment(s / sample_rate, (s + window) / sample_rate, waveform[s : s + window]) for s in starts]


# --- dispatch on the kind of source -------------------------------------------------------------


def _decode(source: object, limit_s: float) -> tuple[np.ndarray, int]:
    """Return (mono float32 samples, sample rate) for any supported source."""
    if source is None:
        raise InvalidAudio("No audio was given.")
    if isinstance(source, tuple):
        return _from_tuple(source)
    if isinstance(source, np.ndarray):
        return _to_mono_float(source), SAMPLE_RATE
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), limit_s)
    if isinstance(source, (str, os.PathLike)):
        return _decode_path(source, limit_s)
    if hasattr(source, "read"):
        return _decode_bytes(_read_file_object(source), limit_s)
    raise InvalidAudio(f"Unsupported audio input of type {type(source).__name__}.")


def _from_tuple(source: tuple) -> tuple[np.ndarray, int]:
    """Gradio's numpy audio: (sample_rate, array of shape (n,) or (n, channels))."""
    if len(source) != 2 or source[1] is None:
        raise InvalidAudio("No audio was given.")
    rate, array = source
    if isinstance(rate, np.ndarray) and not isinstance(array, np.ndarray):
        rate, array = array, rate  # (array, rate) order, as librosa.load returns it
    rate = _as_rate(rate)
    if not isinstance(array, np.ndarray):
        raise InvalidAudio(f"Expected the audio samples as a numpy array, got {type(array).__name__}.")
    return _to_mono_float(array), rate


def _as_rate(value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidAudio(f"The sample rate {value!r:.40} is not a number.")
    try:
        hz = round(float(value))
    except (OverflowError, ValueError):  # NaN, infinity, or an integer beyond float range
        raise InvalidAudio(f"The sample rate {value!r:.40} is not a number.") from None
    return _check_rate(hz)


def _to_mono_float(array: np.ndarray) -> np.ndarray:
    """Scale integer PCM to [-1, 1] and average the channels."""
    array = _scale_to_float(array)
    if array.ndim == 0 or array.ndim > 2:
        raise InvalidAudio(f"Expected audio of shape (samples,) or (samples, channels), got {array.shape}.")
    if array.ndim == 2:
        channel_axis = 1 if array.shape[1] <= array.shape[0] else 0  # (channels, n) when clearly so
        if array.shape[channel_axis] > MAX_CHANNELS:
            raise InvalidAudio(
                f"Expected at most {MAX_CHANNELS} channels, got an array of shape {array.shape}."
            )
        if array.shape[channel_axis] == 0:
            raise InvalidAudio("The recording is empty (no audio samples).")
        array = array.mean(axis=channel_axis, dtype=np.float32)
    return array


def _scale_to_float(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind == "i":
        return (array / float(2 ** (8 * array.dtype.itemsize - 1))).astype(np.float32)
    if array.dtype.kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array - half) / half).astype(np.float32)
    raise InvalidAudio(f"Audio samples must be integers or floats, not {array.dtype}.")


# --- bytes, paths and file objects --------------------------------------------------------------


def _decode_path(path: str | os.PathLike, limit_s: float) -> tuple[np.ndarray, int]:
    name = os.fsdecode(path)
    try:
        info = os.stat(name)
    except FileNotFoundError:
        raise InvalidAudio(f"The file {name!r} does not exist.") from None
    except (OSError, ValueError) as exc:  # no permission, a NUL byte or a too-long name...
        raise InvalidAudio(f"The file {name!r} cannot be opened ({exc}).") from None
    if not stat.S_ISREG(info.st_mode):  # a directory, or a FIFO whose open() would block forever
        raise InvalidAudio(f"{name!r} is not a regular file.")
    _check_size(info.st_size)
    try:
        with open(name, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise InvalidAudio(f"The file {name!r} cannot be opened ({exc}).") from None
    _sniff(head)
    return _decode_container(name, head, limit_s)


def _read_file_object(fileobj: object) -> bytes:
    """Read at most one byte past the size limit, so a huge stream is never held in memory."""
    try:
        data = fileobj.read(byte_limit() + 1)
    except Exception as exc:
        raise InvalidAudio(f"The uploaded file could not be read ({exc}).") from None
    if isinstance(data, str):
        raise InvalidAudio("Expected a file opened in binary mode ('rb'), got a text file.")
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidAudio("The uploaded file could not be read.")
    return bytes(data)


def _decode_bytes(data: bytes, limit_s: float) -> tuple[np.ndarray, int]:
    _check_size(len(data))
    _sniff(data[:64])
    return _decode_container(data, data[:64], limit_s)


def _check_size(size: int) -> None:
    if size == 0:
        raise InvalidAudio("The file is empty.")
    limit = byte_limit()
    if size > limit:
        raise InvalidAudio(f"The file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB.")


# Leading bytes of common files that are not audio, for a friendlier message than "corrupt".
_NOT_AUDIO = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh9", "a bzip2 archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"),
    (b"SQLite format 3", "a SQLite database"),
    (b"\x00\x00\x01\x00", "an icon"),
]


def _sniff(head: bytes) -> None:
    """Refuse files whose first bytes say they are something other than audio."""
    for magic, kind in _NOT_AUDIO:
        if head.startswith(magic):
            raise InvalidAudio(f"This is not audio we can read (looks like {kind}).")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise InvalidAudio("This is not audio we can read (looks like a WebP image).")
    if _looks_like_text(head):
        kind = "an HTML page" if head.lstrip().lower().startswith((b"<!doctype html", b"<html")) else "text"
        raise InvalidAudio(f"This is not audio we can read (looks like {kind}).")


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # may also be a multi-byte character cut at the end; then not text
        return False
    return len(text) >= 4 and all(c.isprintable() or c in "\r\n\t" for c in text)


# --- decoders -----------------------------------------------------------------------------------


# Leading bytes of the containers libsndfile reads well. Everything else (MP3, M4A/AAC, WebM/Opus)
# goes straight to PyAV, which also keeps libsndfile's MP3 prober from printing to stderr.
_SOUNDFILE_MAGIC = (
    b"RIFF",
    b"RIFX",
    b"RF64",
    b"BW64",
    b"riff",
    b"FORM",
    b"fLaC",
    b"OggS",
    b".snd",
    b"caff",
    b"NIST_1A",
    b"Creative Voice File",
)


class _UseAV(Exception):
    """libsndfile opened the file but PyAV decodes this encoding better."""


def _decode_container(src: str | bytes, head: bytes, limit_s: float) -> tuple[np.ndarray, int]:
    decoders = [_decode_soundfile, _decode_av] if head.startswith(_SOUNDFILE_MAGIC) else [_decode_av]
    for decoder in decoders:
        try:
            return decoder(src, limit_s)
        except InvalidAudio:
            raise
        except Exception:  # each library raises its own types on bad data; the next one may cope
            continue
    raise InvalidAudio(
        "This file could not be decoded as audio (unsupported format, or damaged or truncated)."
    )


def _decode_soundfile(src: str | bytes, limit_s: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with _soundfile_source(src) as source, sf.SoundFile(source, closefd=False) as f:
        if f.subtype.startswith("MPEG_LAYER"):  # MP3 inside WAV: libsndfile 1.2 garbles block reads
            raise _UseAV
        rate = _check_rate(f.samplerate)
        _check_channels(f.channels)
        _check_duration(f.frames / rate, limit_s)
        _check_budget(f.frames, rate, f.channels, limit_s)  # from the header, before any decoding
        max_frames = min(math.floor(limit_s * rate), decode_budget(limit_s) // f.channels)
        buffer = np.empty((max(1, _BLOCK_SAMPLES // f.channels), f.channels), np.float32)
        chunks, total = [], 0
        while total <= max_frames:  # the header may understate the length: never read past the limits
            try:
                block = f.read(out=buffer)
            except sf.LibsndfileError:
                if not chunks:
                    raise
                break  # a truncated or damaged tail: keep what decoded cleanly before it
            if not len(block):
                break
            chunks.append(block.mean(axis=1, dtype=np.float32))
            total += len(block)
    _check_duration(total / rate, limit_s)
    _check_budget(total, rate, f.channels, limit_s)
    return _join(chunks), rate


@contextlib.contextmanager
def _soundfile_source(src: str | bytes) -> Iterator[str | int]:
    """A path, or the descriptor of a temporary file holding ``src``, never a Python file object.

    soundfile reads Python file objects through C callbacks; a damaged header (AIFF chunk sizes)
    makes libsndfile seek to -1 there, and the ValueError it raises can only surface as an
    unraisable exception. On a real descriptor the same seek just fails with an errno.
    """
    if isinstance(src, str):
        yield src
        return
    with tempfile.TemporaryFile() as tmp:
        tmp.write(src)
        tmp.seek(0)
        yield tmp.fileno()


def _decode_av(src: str | bytes, limit_s: float) -> tuple[np.ndarray, int]:
    """Containers libsndfile cannot read (M4A/AAC, WebM/Opus, MP4 video soundtracks), and MP3."""
    import av

    with av.open(src if isinstance(src, str) else io.BytesIO(src), mode="r") as container:
        if not container.streams.audio:
            raise InvalidAudio("This file has no audio track.")
        stream = container.streams.audio[0]
        if container.duration:  # microseconds; browser WebM often has none, so count while decoding
            _check_duration(container.duration / 1e6, limit_s)
            header_rate, header_channels = stream.codec_context.sample_rate, stream.codec_context.channels
            if header_rate and header_channels:
                _check_budget(container.duration / 1e6 * header_rate, header_rate, header_channels, limit_s)
        budget = decode_budget(limit_s)
        chunks, rate, total, decoded = [], 0, 0, 0
        try:
            for frame in container.decode(stream):
                if not rate:  # from the decoded frame: HE-AAC headers state half the real rate
                    rate = _check_rate(frame.sample_rate)
                    to_planar_float = av.AudioResampler(format="fltp", rate=rate)
                    max_frames = math.floor(limit_s * rate)
                channels = len(frame.layout.channels)
                _check_channels(channels)
                decoded += frame.samples * channels
                if decoded > budget:  # the header understated (or had no length): stop here
                    _check_budget(decoded / channels, rate, channels, limit_s)
                for planar in to_planar_float.resample(frame):
                    chunks.append(planar.to_ndarray().mean(axis=0, dtype=np.float32))
                    total += len(chunks[-1])
                if total > max_frames:
                    _check_duration(total / rate, limit_s)
        except av.error.FFmpegError:
            if not chunks:
                raise  # a truncated or damaged tail: keep what decoded cleanly before it
    return _join(chunks), rate


def _join(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


# --- checks -------------------------------------------------------------------------------------


def _check_rate(rate: int) -> int:
    if rate < MIN_SAMPLE_RATE:
        raise InvalidAudio(f"The sample rate is {rate} Hz; it must be at least {MIN_SAMPLE_RATE} Hz.")
    if rate > MAX_SAMPLE_RATE:
        raise InvalidAudio(f"The sample rate is {rate} Hz; it must be at most {MAX_SAMPLE_RATE} Hz.")
    return int(rate)


def _check_channels(channels: int) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudio(f"The file has {channels} channels; we read 1 to {MAX_CHANNELS}.")


def _check_budget(frames: float, rate: int, channels: int, limit_s: float) -> None:
    """Refuse audio whose rate x channels x duration exceeds the decode budget of ``limit_s``."""
    if frames * channels > decode_budget(limit_s):
        seconds = frames / rate
        raise InvalidAudio(
            f"The audio is too large to decode: {seconds:.1f} s at {rate} Hz with {channels} channel"
            f"{'' if channels == 1 else 's'} ({frames * channels / 1e6:.0f} M samples); the limit is "
            f"{decode_budget(limit_s) / 1e6:.1f} M samples ({limit_s:g} s of 48 kHz stereo). "
            "Convert it to mono or a lower sample rate first."
        )


def _check_duration(seconds: float, limit_s: float) -> None:
    if seconds > limit_s:
        raise InvalidAudio(f"The clip is {seconds:.1f} s long; the limit is {limit_s:g} s.")


def _validate(mono: np.ndarray, rate: int, limit_s: float) -> None:
    if mono.size == 0:
        raise InvalidAudio("The recording is empty (no audio samples).")
    seconds = mono.size / rate
    _check_duration(seconds, limit_s)
    if seconds < MIN_DURATION_S:
        raise InvalidAudio(f"The clip is {seconds:.3g} s long; it must be at least {MIN_DURATION_S:g} s.")
    if not np.isfinite(mono).all():
        raise InvalidAudio("The audio contains invalid sample values (NaN or infinity).")
    mean = mono.mean(dtype=np.float64)
    if max(mono.max() - mean, mean - mono.min()) < SILENCE_PEAK:  # no temporaries: inputs can be long
        raise InvalidAudio("The recording is silent.")


# --- resampling ---------------------------------------------------------------------------------


def _resample(mono: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(mono, dtype=np.float32)
    if _reduced_factor(rate) > _MAX_RESAMPLE_FACTOR:
        mono, rate = _to_khz_grid(mono, rate)
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), rate, SAMPLE_RATE).numpy()
    if not np.isfinite(out).all():
        raise InvalidAudio("The audio's sample values are out of range.")
    return out.astype(np.float32, copy=False)


def _reduced_factor(rate: int) -> int:
    return max(rate, SAMPLE_RATE) // math.gcd(rate, SAMPLE_RATE)


def _to_khz_grid(mono: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """Linearly interpolate up to the next whole kHz (an upsampling, so nothing aliases)."""
    grid = math.ceil(rate / 1000) * 1000
    n_out = max(1, round(len(mono) * grid / rate))
    times = np.arange(n_out, dtype=np.float64) * (rate / grid)
    return np.interp(times, np.arange(len(mono)), mono).astype(np.float32), grid
