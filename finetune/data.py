"""Speaker-independent splits of a corpus dataset (``ser.corpora``): LOSO, k-fold and train/val/test.

A model tested on speakers it heard in training learns their voices, not their emotions, and
scores inflated numbers (EmoDB: ~86 % with shared speakers, ~73 % leave-one-speaker-out for the
same features). Every split here keeps speakers disjoint, and :func:`check_speaker_disjoint`
refuses splits built elsewhere that do not.

Speakers are grouped by ``corpus/speaker`` when a dataset mixes corpora, so RAVDESS actor ``03``
and EmoDB speaker ``03`` are different people.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from datasets import Dataset, DatasetDict
from sklearn.model_selection import GroupShuffleSplit, LeaveOneGroupOut, StratifiedGroupKFold

Fold = tuple[np.ndarray, np.ndarray]


class SpeakerOverlapError(ValueError):
    """The same speaker appears in two splits that must be speaker-independent."""


class SpeakerSplit(NamedTuple):
    """Row indices of each part of a speaker-disjoint split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def speaker_groups(dataset: Dataset | Mapping[str, Sequence[Any]]) -> np.ndarray:
    """One group key per row: the speaker, prefixed with the corpus when several corpora are mixed."""
    speakers = [str(s) for s in dataset["speaker"]]
    corpora = _column(dataset, "corpus")
    if corpora is not None and len(set(corpora)) > 1:
        return np.array([f"{c}/{s}" for c, s in zip(corpora, speakers)])
    return np.array(speakers)


def loso_folds(dataset: Dataset | Mapping[str, Sequence[Any]]) -> list[Fold]:
    """Leave-one-speaker-out: one (train_idx, test_idx) per speaker, in sorted speaker order."""
    groups = _groups_for_splitting(dataset, needed=2)
    indices = np.arange(len(groups))
    return [(train, test) for train, test in LeaveOneGroupOut().split(indices, groups=groups)]


def loco_folds(dataset: Dataset | Mapping[str, Sequence[Any]], evaluation_only: Collection[str] = ()) -> list[Fold]:
    """Leave-one-corpus-out: train on every other corpus, test on one, in sorted corpus order.

    The test that matters for a model meant for voices, languages and recording set-ups it has
    never heard: no speaker, sentence or microphone of the test corpus is seen in training.
    ``evaluation_only`` corpora (licences without derivatives) are tested on but never trained on.
    """
    corpora = _column(dataset, "corpus")
    if corpora is None or len(set(corpora)) < 2:
        raise ValueError("leave-one-corpus-out needs a dataset of at least two corpora (a 'corpus' column)")
    groups = np.asarray(corpora)
    indices = np.arange(len(groups))
    folds = LeaveOneGroupOut().split(indices, groups=groups)
    return [(train[~np.isin(groups[train], list(evaluation_only))], test) for train, test in folds]


def speaker_kfold(dataset: Dataset | Mapping[str, Sequence[Any]], k: int = 5, seed: int = 0) -> list[Fold]:
    """``k`` speaker-disjoint folds, class-balanced as far as whole speakers allow.

    Uses ``StratifiedGroupKFold`` (a ``GroupKFold`` that also tries to keep each fold's class mix
    close to the corpus's) when the dataset has labels.
    """
    groups = _groups_for_splitting(dataset, needed=k)
    labels = _column(dataset, "label")
    y = np.asarray(labels) if labels is not None else np.zeros(len(groups), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros(len(groups)), y, groups=groups))


def train_val_test_split(
    dataset: Dataset | Mapping[str, Sequence[Any]], *, val: float = 0.1, test: float = 0.2, seed: int = 0
) -> SpeakerSplit:
    """Speaker-disjoint train/val/test row indices; ``val`` and ``test`` are fractions of SPEAKERS.

    Each non-zero part gets at least one speaker (``GroupShuffleSplit`` rounds up), so on a
    10-speaker corpus the defaults give 7/1/2 speakers.
    """
    if not (0 <= val < 1 and 0 < test < 1 and val + test < 1):
        raise ValueError(f"need 0 <= val, 0 < test and val + test < 1; got val={val}, test={test}")
    groups = _groups_for_splitting(dataset, needed=3 if val > 0 else 2)
    everything = np.arange(len(groups))
    rest, test_idx = next(GroupShuffleSplit(1, test_size=test, random_state=seed).split(everything, groups=groups))
    val_idx = np.array([], dtype=int)
    if val > 0:
        share = val / (1 - test)
        inner_train, inner_val = next(
            GroupShuffleSplit(1, test_size=share, random_state=seed).split(rest, groups=groups[rest])
        )
        rest, val_idx = rest[inner_train], rest[inner_val]
    split = SpeakerSplit(np.sort(rest), np.sort(val_idx), np.sort(test_idx))
    check_speaker_disjoint(dataset, split._asdict())
    return split


def check_speaker_disjoint(
    dataset: Dataset | Mapping[str, Sequence[Any]],
    splits: Mapping[str, Sequence[int]] | Sequence[Sequence[int]],
    *,
    allow_speaker_overlap: bool = False,
) -> dict[tuple[str, str], set[str]]:
    """Raise :class:`SpeakerOverlapError` when two splits share a speaker.

    ``splits`` maps a split name to row indices (or is a sequence, named by position). With
    ``allow_speaker_overlap=True`` the overlap is only warned about (say so when reporting
    results). Returns the shared speakers per pair of splits.
    """
    groups = speaker_groups(dataset)
    named = dict(splits) if isinstance(splits, Mapping) else {str(i): part for i, part in enumerate(splits)}
    speakers = {name: set(groups[np.asarray(idx, dtype=int)]) for name, idx in named.items()}
    names = list(speakers)
    overlaps = {
        (a, b): speakers[a] & speakers[b]
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if speakers[a] & speakers[b]
    }
    if overlaps:
        message = "speakers shared between splits: " + "; ".join(
            f"{a}/{b}: {', '.join(sorted(shared)[:10])}" for (a, b), shared in overlaps.items()
        )
        if not allow_speaker_overlap:
            raise SpeakerOverlapError(message + " (pass allow_speaker_overlap=True to accept it)")
        warnings.warn(message + "; results are not speaker-independent", UserWarning, stacklevel=2)
    return overlaps


def select_split(dataset: Dataset, split: SpeakerSplit) -> DatasetDict:
    """The split as a ``DatasetDict`` (``train``, ``validation``, ``test``), empty parts left out."""
    parts = {"train": split.train, "validation": split.val, "test": split.test}
    return DatasetDict({name: dataset.select(idx) for name, idx in parts.items() if len(idx)})


def _groups_for_splitting(dataset: Dataset | Mapping[str, Sequence[Any]], *, needed: int) -> np.ndarray:
    """Group keys, refusing corpora with too few speakers to split."""
    groups = speaker_groups(dataset)
    distinct = set(groups.tolist())
    if len(distinct) < needed:
        raise ValueError(
            f"a speaker-independent split needs at least {needed} speakers; this dataset has "
            f"{len(distinct)} ({', '.join(sorted(distinct)[:5])}). "
            "Add a speaker column or use a corpus that has one."
        )
    if any(group == "unknown" or group.endswith("/unknown") for group in distinct):
        warnings.warn(
            "some rows have speaker 'unknown'; they are treated as one speaker", UserWarning, stacklevel=3
        )
    return groups


def _column(dataset: Dataset | Mapping[str, Sequence[Any]], name: str) -> list[Any] | None:
    names = dataset.column_names if isinstance(dataset, Dataset) else list(dataset)
    return list(dataset[name]) if name in names else None
