"""Augmentation: lengths, dtypes and strengths as promised, and seeds that reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.augment import (
    RandomAugment,
    add_noise,
    augmented_copies,
    change_gain,
    change_speed,
    coloured_noise,
    shift_pitch,
)

SR = 16000


def _tone(frequency: float = 440.0, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _dominant_frequency(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / SR)[spectrum.argmax()])


def test_length_preserving_augmentations_keep_length_and_dtype() -> None:
    wave = _tone(seconds=0.73)
    rng = np.random.default_rng(0)
    for out in (add_noise(wave, 10.0, rng), shift_pitch(wave, 2), change_gain(wave, -6.0), shift_pitch(wave[:300], -1)):
        assert out.dtype == np.float32
        assert out.ndim == 1
        assert np.isfinite(out).all()
    assert len(add_noise(wave, 10.0, rng)) == len(wave)
    assert len(shift_pitch(wave, 2)) == len(wave)
    assert len(change_gain(wave, 3.0)) == len(wave)
    assert len(shift_pitch(wave[:300], -1)) == 300


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_scales_length_and_pitch_together(factor: float) -> None:
    wave = _tone(400.0)
    faster = change_speed(wave, factor)
    assert faster.dtype == np.float32
    assert len(faster) == pytest.approx(len(wave) / factor, abs=2)
    assert _dominant_frequency(faster) == pytest.approx(400.0 * factor, rel=0.01)


def test_pitch_shift_by_an_octave_doubles_the_frequency_and_keeps_duration() -> None:
    wave = _tone(300.0)
    up = shift_pitch(wave, 12)
    assert len(up) == len(wave)
    assert _dominant_frequency(up) == pytest.approx(600.0, rel=0.02)
    assert _dominant_frequency(shift_pitch(wave, -12)) == pytest.approx(150.0, rel=0.02)


@pytest.mark.parametrize("colour", ["white", "pink"])
def test_noise_is_added_at_the_requested_snr(colour: str) -> None:
    wave = _tone()
    noisy = add_noise(wave, 10.0, np.random.default_rng(1), colour=colour)
    noise = noisy - wave
    snr = 10 * np.log10(np.sum(wave.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.1)


def test_pink_noise_has_more_power_at_low_frequencies() -> None:
    noise = coloured_noise(SR * 2, np.random.default_rng(0), "pink")
    power = np.abs(np.fft.rfft(noise)) ** 2
    frequencies = np.fft.rfftfreq(len(noise), 1 / SR)
    assert power[(frequencies > 50) & (frequencies < 200)].mean() > 10 * power[frequencies > 4000].mean()


def test_gain_scales_amplitude_and_clips_to_the_valid_range() -> None:
    wave = _tone(amplitude=0.1)
    assert np.abs(change_gain(wave, 6.0)).max() == pytest.approx(0.1 * 10 ** (6 / 20), rel=1e-3)
    assert np.abs(change_gain(wave, 40.0)).max() == pytest.approx(1.0)


def test_random_augment_is_reproducible_with_a_seed_and_varies_between_calls() -> None:
    wave = _tone(seconds=0.5)
    first = [RandomAugment(seed=7)(wave) for _ in range(2)]
    assert np.array_equal(first[0], first[1])
    augment = RandomAugment(seed=7)
    outputs = [augment(wave) for _ in range(6)]
    assert any(not np.array_equal(outputs[0], other) for other in outputs[1:])
    for out in outputs:
        assert out.dtype == np.float32 and np.isfinite(out).all()


def test_random_augment_with_every_step_certain_changes_the_clip() -> None:
    wave = _tone(seconds=0.5)
    augment = RandomAugment(seed=0, noise_p=1.0, speed_p=0.0, pitch_p=1.0, gain_p=1.0)
    out = augment(wave)
    assert len(out) == len(wave)  # no speed change: the length is kept
    assert not np.allclose(out, wave, atol=1e-3)


def test_augmented_copies_are_seeded() -> None:
    wave = _tone(seconds=0.5)
    a = augmented_copies(wave, 3, seed=5)
    b = augmented_copies(wave, 3, seed=5)
    assert len(a) == 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_two_dimensional_input_is_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        change_gain(np.zeros((2, 100), dtype=np.float32), 3.0)
