"""Speaker adaptation without labels: standardise a voice's features by that voice's own statistics.

A model trained on a few dozen actors hears a new voice through that voice's pitch, timbre, language
and microphone as much as through its emotion. Subtracting the speaker's average (and dividing by
their spread) of the encoder's pooled features removes most of that, which is the largest gain
measured across corpora (``benchmarks/generalization.py``). It needs no labels, only several clips
of the same voice: a session's recent recordings in the app, a folder or speaker group in the CLI.

With few clips the spread is unreliable, so it is shrunk towards the typical within-speaker spread
of the training speakers (``prior_std``) as if ``PRIOR_CLIPS`` clips had that spread. Training uses
the same function on each training speaker, so training and prediction see the same transform.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

PRIOR_CLIPS = 5
MIN_CONTEXT_CLIPS = 3
"""Fewer clips of a voice than this and the speaker-adapted head is not used (the plain head is)."""


@dataclass(frozen=True)
class SpeakerStats:
    """Mean and spread of one voice's pooled features, each (layers, width)."""

    mean: np.ndarray
    std: np.ndarray
    clips: int


def speaker_stats(features: np.ndarray, prior_std: np.ndarray | None = None) -> SpeakerStats:
    """Statistics of ``features`` (clips, layers, width) of one voice, the spread shrunk to ``prior_std``."""
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    if n == 0:
        raise ValueError("speaker statistics need at least one clip")
    mean = features.mean(axis=0)
    variance = features.var(axis=0)
    if prior_std is not None:
        variance = (n * variance + PRIOR_CLIPS * np.asarray(prior_std, dtype=np.float64) ** 2) / (n + PRIOR_CLIPS)
    return SpeakerStats(mean=mean, std=np.sqrt(variance).clip(min=1e-5), clips=n)


def standardise(features: np.ndarray, stats: SpeakerStats) -> np.ndarray:
    """``features`` (..., layers, width) of that voice, centred and scaled by its statistics."""
    return ((np.asarray(features, dtype=np.float64) - stats.mean) / stats.std).astype(np.float32)


def standardise_groups(
    features: np.ndarray, groups: np.ndarray, prior_std: np.ndarray | None = None
) -> np.ndarray:
    """Each group's rows (one speaker each) standardised by that group's own statistics."""
    out = np.empty(np.shape(features), dtype=np.float32)
    groups = np.asarray(groups)
    for group in np.unique(groups):
        rows = groups == group
        out[rows] = standardise(features[rows], speaker_stats(features[rows], prior_std))
    return out


def within_speaker_std(features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The typical spread of one voice: the root mean within-speaker variance over speakers."""
    groups = np.asarray(groups)
    variances = [np.asarray(features[groups == g], dtype=np.float64).var(axis=0) for g in np.unique(groups)]
    return np.sqrt(np.mean(variances, axis=0)).astype(np.float32)


class SpeakerContext:
    """The pooled features of one voice's recent clips (a session in the app, a folder in the CLI).

    Keeps the last ``max_clips``, so a long session follows a voice that changes microphone or room.
    """

    def __init__(self, max_clips: int = 50) -> None:
        self._features: deque[np.ndarray] = deque(maxlen=max_clips)

    def __len__(self) -> int:
        return len(self._features)

    def add(self, layer_means: np.ndarray) -> None:
        self._features.append(np.asarray(layer_means, dtype=np.float32))

    def stats(self, prior_std: np.ndarray | None = None) -> SpeakerStats:
        return speaker_stats(np.stack(list(self._features)), prior_std)
