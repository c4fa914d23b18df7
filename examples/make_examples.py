"""Regenerate the example clips: synthetic speech from espeak-ng with acted-style prosody.

The project ships no recordings of real people; these clips exist so the app, the tests and the
docs have audio to play with. The prosody settings imitate the cues acted corpora use (pitch level
and range, tempo, loudness), so a model may or may not read the intended emotion from them: the
labels say what the settings were meant to convey, not what a listener would agree on.

Needs the `espeak-ng` program (Debian/Ubuntu: apt-get install espeak-ng).
Run: python examples/make_examples.py
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ser.audio import SAMPLE_RATE, load_audio  # noqa: E402

HERE = Path(__file__).resolve().parent
SENTENCE = "The train leaves at seven o'clock tonight."
VOICE = "en-us"

# label -> espeak-ng settings: pitch 0-99, speed in words per minute, amplitude 0-200, and the SSML
# pitch range (how much the melody moves).
PROSODY = {
    "neutral": dict(pitch=45, speed=160, amplitude=90, range="medium"),
    "happy": dict(pitch=75, speed=185, amplitude=120, range="x-high"),
    "sad": dict(pitch=25, speed=115, amplitude=55, range="x-low"),
    "angry": dict(pitch=55, speed=200, amplitude=140, range="high"),
}

# The timeline demo: one longer clip whose mood changes, (label, sentence) in order.
TIMELINE = [
    ("neutral", "I am calling about the package that was due today."),
    ("angry", "Nobody has called me back, again!"),
    ("sad", "I needed it for my daughter's birthday."),
]
PAUSE_S = 0.4


def speak(text: str, pitch: int, speed: int, amplitude: int, range: str) -> np.ndarray:
    """espeak-ng -> WAV on stdout -> 16 kHz mono float32 through the project's own loader."""
    ssml = f'<speak><prosody range="{range}">{text}</prosody></speak>'
    cmd = [
        "espeak-ng",
        "-v",
        VOICE,
        "-m",
        "-p",
        str(pitch),
        "-s",
        str(speed),
        "-a",
        str(amplitude),
        "--stdout",
        ssml,
    ]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.clip(load_audio(wav), -1.0, 1.0)


def write(name: str, wave: np.ndarray) -> str:
    sf.write(HERE / name, wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return name


def main() -> None:
    rows = [
        (write(f"{label}.flac", speak(SENTENCE, **settings)), label) for label, settings in PROSODY.items()
    ]
    with open(HERE / "labels.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([("path", "label"), *rows])

    pause = np.zeros(round(PAUSE_S * SAMPLE_RATE), np.float32)
    parts = [piece for label, text in TIMELINE for piece in (speak(text, **PROSODY[label]), pause)]
    write("timeline.flac", np.concatenate(parts[:-1]))
    for path, label in rows:
        print(f"{path}: {label}, {sf.info(HERE / path).duration:.2f} s")
    print(
        f"examples/timeline.flac: {' -> '.join(label for label, _ in TIMELINE)}, "
        f"{sf.info(HERE / 'timeline.flac').duration:.2f} s"
    )


if __name__ == "__main__":
    main()
