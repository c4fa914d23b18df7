"""Waveform augmentation for training: additive noise, speed, pitch and gain on 16 kHz float32 arrays.

Acted corpora are small (EmoDB: 535 clips) and clean; the app hears phone microphones in noisy
rooms. Perturbing the training audio on the fly is the cheapest way to close part of that gap.
Every function takes and returns a 1-D float32 NumPy array; only ``change_speed`` changes the
length (by 1/factor, which is what speed perturbation means). Randomness comes from an explicit
``numpy.random.Generator``, so a seed reproduces an augmented copy exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torchaudio.functional as AF

from ser.audio import SAMPLE_RATE

NOISE_COLOURS = ("white", "pink")


def _tensor(waveform: np.ndarray) -> torch.Tensor:
    array = np.asarray(waveform, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"augmentation expects a 1-D waveform, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _array(waveform: torch.Tensor) -> np.ndarray:
    return waveform.detach().numpy().astype(np.float32, copy=False)


def coloured_noise(num_samples: int, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """Gaussian noise, flat (white) or with power falling as 1/f (pink, closer to room noise)."""
    if colour not in NOISE_COLOURS:
        raise ValueError(f"noise colour must be one of {NOISE_COLOURS}, not {colour!r}")
    noise = rng.standard_normal(num_samples)
    if colour == "pink" and num_samples > 1:
        spectrum = np.fft.rfft(noise)
        frequencies = np.arange(len(spectrum), dtype=np.float64)
        frequencies[0] = 1.0
        noise = np.fft.irfft(spectrum / np.sqrt(frequencies), n=num_samples)
    return noise.astype(np.float32)


def add_noise(
    waveform: np.ndarray, snr_db: float, rng: np.random.Generator, *, colour: str = "white"
) -> np.ndarray:
    """Add noise scaled so that signal power / noise power is ``snr_db`` decibels."""
    signal = _tensor(waveform)
    noise = torch.from_numpy(coloured_noise(signal.numel(), rng, colour))
    mixed = AF.add_noise(signal[None], noise[None], torch.tensor([float(snr_db)]))[0]
    return _array(mixed)


def change_speed(waveform: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch both change, as in Kaldi's speed perturbation).

    The factor is rounded to 1/100 so the resampling ratio stays a small fraction (fast kernels).
    """
    factor = round(float(factor), 2)
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return np.asarray(waveform, dtype=np.float32).copy()
    faster, _ = AF.speed(_tensor(waveform)[None], sample_rate, factor)
    return _array(faster[0])


def shift_pitch(waveform: np.ndarray, semitones: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Raise (or lower) the pitch by ``semitones`` and keep the duration.

    Phase-vocoder time stretch, then resampling back to the original duration. torchaudio's own
    ``pitch_shift`` resamples by an exact irrational ratio and takes ~10 s per 3 s clip; rounding
    the intermediate rate to 100 Hz (pitch error under 10 cents) makes it ~20 ms.
    """
    signal = _tensor(waveform)
    if semitones == 0 or signal.numel() == 0:
        return _array(signal.clone())
    rate = 2.0 ** (-float(semitones) / 12.0)
    n_fft, hop = 512, 128
    window = torch.hann_window(n_fft)
    padded = signal if signal.numel() >= n_fft else torch.nn.functional.pad(signal, (0, n_fft - signal.numel()))
    spectrum = torch.stft(padded, n_fft, hop, window=window, return_complex=True)
    phase_advance = torch.linspace(0, math.pi * hop, spectrum.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spectrum, rate, phase_advance)
    longer = torch.istft(stretched, n_fft, hop, window=window, length=round(padded.numel() / rate))
    source_rate = max(100, round(sample_rate / rate / 100.0) * 100)
    shifted = AF.resample(longer, source_rate, sample_rate)
    return _array(_fit_length(shifted, signal.numel()))


def change_gain(waveform: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale loudness by ``gain_db`` decibels, clipped to [-1, 1] like a real recording would be."""
    louder = AF.gain(_tensor(waveform), float(gain_db))
    return _array(louder.clamp(-1.0, 1.0))


def _fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    if waveform.numel() >= length:
        return waveform[:length]
    return torch.nn.functional.pad(waveform, (0, length - waveform.numel()))


@dataclass
class RandomAugment:
    """Apply each perturbation with its probability and a random strength; seeded, so reproducible.

    Call it on a waveform to get an augmented copy. The order is speed, pitch, gain, noise: noise
    last, so its SNR is measured against the signal the model will hear.
    """

    seed: int | None = None
    noise_p: float = 0.5
    snr_db: tuple[float, float] = (10.0, 30.0)
    noise_colours: tuple[str, ...] = NOISE_COLOURS
    speed_p: float = 0.3
    speed_range: tuple[float, float] = (0.9, 1.1)
    pitch_p: float = 0.3
    semitone_range: tuple[int, int] = (-2, 2)
    gain_p: float = 0.5
    gain_db: tuple[float, float] = (-6.0, 6.0)
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        steps: list[tuple[float, Callable[[np.ndarray], np.ndarray]]] = [
            (self.speed_p, lambda w: change_speed(w, self.rng.uniform(*self.speed_range))),
            (self.pitch_p, lambda w: shift_pitch(w, self._semitones())),
            (self.gain_p, lambda w: change_gain(w, self.rng.uniform(*self.gain_db))),
            (
                self.noise_p,
                lambda w: add_noise(
                    w, self.rng.uniform(*self.snr_db), self.rng, colour=str(self.rng.choice(self.noise_colours))
                ),
            ),
        ]
        out = np.asarray(waveform, dtype=np.float32)
        for probability, step in steps:
            if self.rng.random() < probability:
                out = step(out)
        return out

    def _semitones(self) -> int:
        low, high = self.semitone_range
        choices = [s for s in range(int(low), int(high) + 1) if s != 0] or [0]
        return int(self.rng.choice(choices))


def augmented_copies(waveform: np.ndarray, copies: int, *, seed: int = 0) -> list[np.ndarray]:
    """``copies`` differently augmented versions of one clip, the same for the same seed.

    Meant for feature caches (the probe): each cached copy is one more training example.
    """
    augment = RandomAugment(seed=seed)
    return [augment(waveform) for _ in range(copies)]


__all__ = [
    "NOISE_COLOURS",
    "RandomAugment",
    "add_noise",
    "augmented_copies",
    "change_gain",
    "change_speed",
    "coloured_noise",
    "shift_pitch",
]
