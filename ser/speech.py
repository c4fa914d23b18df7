"""Where the speech is in a 16 kHz mono waveform (Silero VAD), to trim silence and refuse clips without a voice.

The emotion encoders read every frame they are given: seconds of room tone before and after a
sentence dilute the mean over frames and cost encoder time. Silero VAD (MIT, its ONNX weights ship
inside the ``silero-vad`` wheel, so it works offline) runs through onnxruntime, which the project
already uses, at about 1 ms per 32 ms frame on one core.

A recording that holds sound but no voice (a hum, white noise, a door) is refused with
``NoSpeech``, an ``InvalidAudio``, so the CLI and the app show its message as they show any
unusable input; digital silence is refused earlier by ``ser.audio`` ("The recording is silent.").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ser.audio import SAMPLE_RATE, InvalidAudio

THRESHOLD = 0.5  # Silero's own default speech probability
# Keep this much audio around speech: word onsets and the tail of the last syllable carry prosody.
PAD_S = 0.1
# Pauses shorter than this stay inside one region (breaths between words).
MIN_SILENCE_S = 0.3
# Pauses at least this long separate utterances (``--segments``).
UTTERANCE_GAP_S = 0.8
MIN_SPEECH_S = 0.25

_LOCK = threading.Lock()  # the ONNX wrapper keeps recurrent state between frames


class NoSpeech(InvalidAudio):
    """The recording holds sound but no speech."""

    def __init__(self, message: str = "No speech found in the recording (only noise or silence).") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class Region:
    """One stretch of speech, in seconds from the start of the waveform."""

    start_s: float
    end_s: float


@lru_cache(maxsize=1)
def _model() -> Any:
    from silero_vad import load_silero_vad

    return load_silero_vad(onnx=True)


def speech_regions(
    waveform: np.ndarray, *, min_silence_s: float = MIN_SILENCE_S, pad_s: float = PAD_S, threshold: float = THRESHOLD
) -> list[Region]:
    """Speech regions of a 16 kHz mono waveform, in order; [] when there is none."""
    import torch
    from silero_vad import get_speech_timestamps

    audio = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    with _LOCK, torch.inference_mode():
        stamps = get_speech_timestamps(
            audio, _model(), threshold=threshold, sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=int(MIN_SPEECH_S * 1000), min_silence_duration_ms=int(min_silence_s * 1000),
            speech_pad_ms=int(pad_s * 1000),
        )
    return [Region(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def utterances(waveform: np.ndarray) -> list[Region]:
    """Utterances: speech regions split only at pauses of ``UTTERANCE_GAP_S`` or more."""
    return speech_regions(waveform, min_silence_s=UTTERANCE_GAP_S)


def require_speech(waveform: np.ndarray) -> list[Region]:
    """The speech regions, or ``NoSpeech`` when there are none."""
    regions = speech_regions(waveform)
    if not regions:
        raise NoSpeech()
    return regions


def trim_to_speech(waveform: np.ndarray, regions: list[Region] | None = None) -> np.ndarray:
    """The waveform from the first speech onset to the last offset (padded); ``NoSpeech`` if none.

    Pauses inside are kept: they are part of how a sentence is spoken.
    """
    regions = require_speech(waveform) if regions is None else regions
    if not regions:
        raise NoSpeech()
    start, end = round(regions[0].start_s * SAMPLE_RATE), round(regions[-1].end_s * SAMPLE_RATE)
    return np.asarray(waveform[start:end])


def prepare(waveform: np.ndarray, *, trim: bool = True, denoise: str | None = None) -> np.ndarray:
    """The waveform the model should hear: denoised (a ``ser.denoise`` method) if asked, then checked
    for speech (``NoSpeech`` if none) and, with ``trim``, cut to it. Speech is looked for after
    denoising, where noise no longer looks like a voice."""
    if denoise:
        from ser.denoise import denoise as suppress

        waveform = suppress(waveform, denoise)
    regions = require_speech(waveform)
    return trim_to_speech(waveform, regions) if trim else waveform
