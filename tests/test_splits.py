"""Speaker-independent splits: no speaker ever sits on both sides, and overlap is refused."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.data import (
    SpeakerOverlapError,
    check_speaker_disjoint,
    loso_folds,
    select_split,
    speaker_groups,
    speaker_kfold,
    train_val_test_split,
)
from ser.corpora import load_corpus


def toy(n_speakers: int = 6, per_speaker: int = 8, corpus: str = "toy") -> dict[str, list]:
    speakers = [f"s{i:02d}" for i in range(n_speakers) for _ in range(per_speaker)]
    return {
        "speaker": speakers,
        "label": [j % 3 for j in range(len(speakers))],
        "corpus": [corpus] * len(speakers),
    }


def speakers_of(data: dict[str, list], idx: np.ndarray) -> set[str]:
    return set(np.asarray(data["speaker"])[idx].tolist())


def assert_partition(folds: list[tuple[np.ndarray, np.ndarray]], n: int) -> None:
    """Every row is tested exactly once, and train/test of a fold split all rows between them."""
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(n))
    for train, test in folds:
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(n))


def test_loso_one_fold_per_speaker_without_overlap():
    data = toy()
    folds = loso_folds(data)
    assert len(folds) == 6
    assert [speakers_of(data, test) for _, test in folds] == [{f"s{i:02d}"} for i in range(6)]
    for train, test in folds:
        assert not speakers_of(data, train) & speakers_of(data, test)
    assert_partition(folds, 48)


def test_loso_works_on_a_datasets_dataset():
    folds = loso_folds(Dataset.from_dict(toy(3)))
    assert len(folds) == 3


@settings(max_examples=30, deadline=None)
@given(
    speakers=st.lists(st.integers(0, 7), min_size=8, max_size=60),
    k=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_kfold_and_holdout_never_share_speakers(speakers, k, seed):
    data = {"speaker": [f"p{s}" for s in speakers], "label": [i % 2 for i in range(len(speakers))]}
    distinct = len(set(speakers))
    if distinct >= k:
        folds = speaker_kfold(data, k=k, seed=seed)
        assert len(folds) == k
        assert_partition(folds, len(speakers))
        for train, test in folds:
            assert not speakers_of(data, train) & speakers_of(data, test)
    if distinct >= 3:
        split = train_val_test_split(data, val=0.2, test=0.2, seed=seed)
        parts = [speakers_of(data, part) for part in split]
        assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert sorted(np.concatenate(split).tolist()) == list(range(len(speakers)))


def test_holdout_is_reproducible_and_counts_speakers():
    data = toy(10)
    first = train_val_test_split(data, val=0.1, test=0.2, seed=3)
    again = train_val_test_split(data, val=0.1, test=0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert [len(speakers_of(data, part)) for part in first] == [7, 1, 2]
    no_val = train_val_test_split(data, val=0.0, test=0.3)
    assert len(no_val.val) == 0 and len(speakers_of(data, no_val.test)) == 3


def test_kfold_is_reproducible_per_seed():
    data = toy(10)
    tests = lambda seed: [sorted(speakers_of(data, t)) for _, t in speaker_kfold(data, k=5, seed=seed)]  # noqa: E731
    assert tests(1) == tests(1)


def test_overlap_check_raises_unless_allowed():
    data = toy(4)
    leaky = {"train": [0, 1, 8, 9], "test": [2, 16]}  # row 2 is speaker s00, as are 0 and 1
    with pytest.raises(SpeakerOverlapError, match="s00"):
        check_speaker_disjoint(data, leaky)
    with pytest.warns(UserWarning, match="not speaker-independent"):
        overlaps = check_speaker_disjoint(data, leaky, allow_speaker_overlap=True)
    assert overlaps == {("train", "test"): {"s00"}}
    assert check_speaker_disjoint(data, [[0, 1], [8, 9], [16]]) == {}


def test_mixed_corpora_keep_same_ids_apart():
    data = {key: a + b for (key, a), b in zip(toy(2, 2, "emodb").items(), toy(2, 2, "ravdess").values())}
    assert sorted(set(speaker_groups(data))) == ["emodb/s00", "emodb/s01", "ravdess/s00", "ravdess/s01"]
    assert len(loso_folds(data)) == 4


def test_too_few_speakers_is_refused():
    with pytest.raises(ValueError, match="at least 2 speakers"):
        loso_folds(toy(1))
    with pytest.raises(ValueError, match="at least 5 speakers"):
        speaker_kfold(toy(4), k=5)
    with pytest.raises(ValueError, match="val"):
        train_val_test_split(toy(), val=0.5, test=0.5)


def test_unknown_speaker_is_warned_about():
    data = {"speaker": ["unknown", "unknown", "a", "b"], "label": [0, 1, 0, 1]}
    with pytest.warns(UserWarning, match="unknown"):
        loso_folds(data)


def test_select_split_gives_a_dataset_dict():
    dataset = Dataset.from_dict(toy(10))
    parts = select_split(dataset, train_val_test_split(dataset))
    assert list(parts) == ["train", "validation", "test"]
    assert sum(len(p) for p in parts.values()) == len(dataset)


def test_real_emodb_loso(emodb_root):
    dataset = load_corpus("emodb", emodb_root)
    folds = loso_folds(dataset)
    assert len(folds) == 10
    speakers = np.asarray(dataset["speaker"])
    for train, test in folds:
        assert len(set(speakers[test])) == 1 and speakers[test][0] not in set(speakers[train])
    assert_partition(folds, 535)


class _Oracle:
    """A TrainingMethod that predicts every test clip right except the first, to give folds different scores."""

    prepared = 0
    OPTIONS = dict

    def prepare(self, dataset, options=None) -> None:  # noqa: ANN001
        self.prepared += 1

    def run_fold(self, dataset, train_idx, test_idx, options):  # noqa: ANN001
        y_true = np.asarray(dataset["label"])[np.asarray(test_idx)]
        y_pred = y_true.copy()
        y_pred[0] = (y_pred[0] + 1) % 3
        return y_true, y_pred


def test_cross_validate_states_the_sample_std_and_pools_every_fold():
    from datasets import ClassLabel

    from finetune.cv import CVResult, TrainingMethod, cross_validate, mean_std

    data = Dataset.from_dict(toy(4, 6)).cast_column("label", ClassLabel(names=["a", "b", "c"]))
    method = _Oracle()
    assert isinstance(method, TrainingMethod)
    folds = loso_folds(data)
    result = cross_validate(data, method, folds, None, progress=False)
    assert isinstance(result, CVResult) and method.prepared == 1 and result.folds == 4
    uars = [fold["uar"] for fold in result.per_fold]
    assert result.summary["uar"] == {"mean": pytest.approx(np.mean(uars)), "std": pytest.approx(np.std(uars, ddof=1))}
    assert result.pooled["n"] == len(data) and sum(map(len, result.predictions)) == len(data)
    as_json = result.to_dict()
    assert as_json["summary"] == result.summary and as_json["folds"] == 4 and "predictions" in as_json
    assert "predictions" not in result.to_dict(predictions=False)
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0}  # one fold: no spread, not NaN


def test_every_method_module_is_a_training_method():
    from finetune.cv import METHODS, TrainingMethod, method_module

    for name in METHODS:
        assert isinstance(method_module(name), TrainingMethod), name
