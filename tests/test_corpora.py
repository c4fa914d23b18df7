"""Corpus adapters: every layout built as a tiny corpus in tmp_path, plus the real EmoDB when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, ClassLabel, Dataset, Features, Value

from ser.corpora import (
    FOUR_CLASS_MAP,
    CorpusError,
    CorpusWarning,
    concatenate_corpora,
    label_names,
    load_corpus,
    read_clip_table,
    read_corpus,
    waveform,
    with_label_names,
)
from ser.labels import EMOTIONS


def write_wav(path: Path, seconds: float = 0.25, rate: int = 16000) -> Path:
    """A short tone, loud enough that the audio validator does not call it silence."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return path


def rows(dataset: Dataset) -> list[tuple[str, str, str]]:
    """(file name, label name, speaker) per row, sorted, for compact assertions."""
    names = label_names(dataset)
    return sorted((Path(p).name, names[i], s) for p, i, s in zip(dataset["path"], dataset["label"], dataset["speaker"]))


def test_emodb_layout_reports_unparsed_names_and_unknown_letters(tmp_path):
    for name in ["03a01Fa.wav", "03a01Wa.wav", "08b02Tb.wav", "08b02Lc.wav", "03a01Xa.wav", "notes.wav"]:
        write_wav(tmp_path / "wav" / name)
    dataset, report = read_corpus("emodb", tmp_path)
    assert rows(dataset) == [
        ("03a01Fa.wav", "happy", "03"),
        ("03a01Wa.wav", "angry", "03"),
        ("08b02Lc.wav", "boredom", "08"),
        ("08b02Tb.wav", "sad", "08"),
    ]
    assert label_names(dataset) == ["happy", "sad", "angry", "boredom"]  # EMOTIONS order, present only
    assert set(dataset["corpus"]) == {"emodb"}
    assert report.loaded == 4
    assert [Path(p).name for p, label in report.unknown_labels] == ["03a01Xa.wav"]
    assert [label for _, label in report.unknown_labels] == ["X"]
    assert [Path(p).name for p in report.unparsed] == ["notes.wav"]


def test_schema_is_audio_at_16k_classlabel_and_strings(tmp_path):
    write_wav(tmp_path / "03a01Fa.wav")
    dataset = load_corpus("emodb", tmp_path)
    features = dataset.features
    assert isinstance(features["audio"], Audio) and features["audio"].sampling_rate == 16000
    assert isinstance(features["label"], ClassLabel)
    assert all(features[c] == Value("string") for c in ("speaker", "corpus", "path"))
    assert dataset[0]["audio"]["path"] == dataset[0]["path"]


def test_ravdess_actor_is_speaker_and_song_is_skipped_unless_asked(tmp_path):
    for name in ["03-01-05-01-01-01-01.wav", "03-01-02-02-01-02-02.wav", "03-02-03-01-01-01-01.wav",
                 "03-01-09-01-01-01-03.wav", "Actor_01.wav"]:
        write_wav(tmp_path / "Actor_xx" / name)
    dataset, report = read_corpus("ravdess", tmp_path)
    assert rows(dataset) == [("03-01-02-02-01-02-02.wav", "calm", "02"), ("03-01-05-01-01-01-01.wav", "angry", "01")]
    assert report.skipped["song (include_song=False)"] == 1
    assert [label for _, label in report.unknown_labels] == ["09"]
    assert [Path(p).name for p in report.unparsed] == ["Actor_01.wav"]
    with_song, _ = read_corpus("ravdess", tmp_path, include_song=True)
    assert ("03-02-03-01-01-01-01.wav", "happy", "01") in rows(with_song)


def test_crema_d_layout(tmp_path):
    for name in ["1001_DFA_ANG_XX.wav", "1002_IEO_HAP_HI.wav", "1003_DFA_XYZ_XX.wav"]:
        write_wav(tmp_path / "AudioWAV" / name)
    dataset, report = read_corpus("crema-d", tmp_path)
    assert rows(dataset) == [("1001_DFA_ANG_XX.wav", "angry", "1001"), ("1002_IEO_HAP_HI.wav", "happy", "1002")]
    assert dataset[0]["corpus"] == "crema-d"
    assert [label for _, label in report.unknown_labels] == ["XYZ"]


def test_tess_speaker_from_prefix_and_pleasant_surprise(tmp_path):
    write_wav(tmp_path / "OAF_angry" / "OAF_back_angry.wav")
    write_wav(tmp_path / "YAF_pleasant_surprised" / "YAF_bath_ps.wav")
    write_wav(tmp_path / "OAF_Fear" / "OAF_dog_Fear.wav")
    write_wav(tmp_path / "YAF_bored" / "YAF_dog_sleepy.wav")
    dataset, report = read_corpus("tess", tmp_path)
    assert rows(dataset) == [
        ("OAF_back_angry.wav", "angry", "OAF"),
        ("OAF_dog_Fear.wav", "fearful", "OAF"),
        ("YAF_bath_ps.wav", "surprised", "YAF"),
    ]
    assert report.unknown_labels == [(str(tmp_path / "YAF_bored" / "YAF_dog_sleepy.wav"), "sleepy")]


def test_folder_layout_classes_from_folders_speaker_from_stem(tmp_path):
    write_wav(tmp_path / "angry" / "spk1_take1.wav")
    write_wav(tmp_path / "Sad" / "spk2-take1.flac")
    write_wav(tmp_path / "joy" / "deep" / "spk1_take2.wav")  # synonym, nested
    write_wav(tmp_path / "neutral" / "take3.wav")  # no prefix -> unknown speaker
    write_wav(tmp_path / "confused" / "spk3_take1.wav")
    write_wav(tmp_path / "loose.wav")
    (tmp_path / "angry" / "readme.txt").write_text("not audio")
    dataset, report = read_corpus("folder", tmp_path)
    assert rows(dataset) == [
        ("spk1_take1.wav", "angry", "spk1"),
        ("spk1_take2.wav", "happy", "spk1"),
        ("spk2-take1.flac", "sad", "spk2"),
        ("take3.wav", "neutral", "unknown"),
    ]
    assert [label for _, label in report.unknown_labels] == ["confused"]
    assert [Path(p).name for p in report.unparsed] == ["loose.wav"]
    no_speakers, _ = read_corpus("folder", tmp_path, speaker_pattern=None)
    assert set(no_speakers["speaker"]) == {"unknown"}


def test_csv_relative_paths_missing_files_and_unknown_labels(tmp_path):
    write_wav(tmp_path / "clips" / "a.wav")
    write_wav(tmp_path / "clips" / "b.wav")
    absolute = write_wav(tmp_path / "elsewhere" / "c.wav")
    table = tmp_path / "meta" / "labels.csv"
    table.parent.mkdir()
    table.write_text(
        "path,label,speaker\n"
        "../clips/a.wav,Anger,alice\n"
        "../clips/b.wav,sadness,bob\n"
        f"{absolute},neutral,carol\n"
        "../clips/gone.wav,happy,alice\n"
        "../clips/a.wav,meh,alice\n"
    )
    with pytest.warns(CorpusWarning, match="1 missing files"):
        dataset = load_corpus("csv", table)
    assert rows(dataset) == [("a.wav", "angry", "alice"), ("b.wav", "sad", "bob"), ("c.wav", "neutral", "carol")]
    assert [Path(p).name for p in dataset.report.missing_files] == ["gone.wav"]
    assert [label for _, label in dataset.report.unknown_labels] == ["meh"]
    assert all(Path(p).is_absolute() for p in dataset["path"])


def test_tsv_without_speaker_column_uses_file_stem(tmp_path):
    write_wav(tmp_path / "s1_x.wav")
    write_wav(tmp_path / "s2_y.wav")
    table = tmp_path / "labels.tsv"
    table.write_text("path\tlabel\ns1_x.wav\tcalm\ns2_y.wav\tsurprise\n")
    assert rows(load_corpus("csv", table)) == [("s1_x.wav", "calm", "s1"), ("s2_y.wav", "surprised", "s2")]


def test_csv_without_label_column_is_an_error(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("file,emotion\nx.wav,angry\n")
    with pytest.raises(CorpusError, match="'path' column"):
        load_corpus("csv", table)
    write_wav(tmp_path / "x.wav")
    assert len(load_corpus("csv", table, path_column="file", label_column="emotion")) == 1


def test_clip_table_for_a_queue_needs_only_paths(tmp_path):
    """An annotation queue's table: labels optional, paths relative to the table, header trimmed."""
    table = tmp_path / "queue.tsv"
    table.write_text(" path \tspeaker\nclips/a.wav\t03\n/abs/b.wav\t\n", encoding="utf-8-sig")
    assert list(read_clip_table(table, label_required=False)) == [
        (tmp_path / "clips" / "a.wav", "", "03"),
        (Path("/abs/b.wav"), "", ""),
    ]
    with pytest.raises(CorpusError, match="'label' column"):
        list(read_clip_table(table))
    (tmp_path / "bad.csv").write_text("file\nx.wav\n")
    with pytest.raises(CorpusError, match="'path' column"):
        list(read_clip_table(tmp_path / "bad.csv", label_required=False))


def _hub_like(tmp_path: Path) -> Dataset:
    """A dataset shaped like a hub audio dataset: Audio column, ClassLabel with its own names."""
    paths = [str(write_wav(tmp_path / "raw" / f"{i}.wav")) for i in range(4)]
    features = Features(
        {
            "file": {"bytes": Value("binary"), "path": Value("string")},
            "emotion": ClassLabel(names=["ang", "neu", "hap", "fru"]),
            "speaker_id": Value("string"),
        }
    )
    data = {
        "file": [{"bytes": None, "path": p} for p in paths],
        "emotion": [0, 1, 2, 3],
        "speaker_id": ["Ses01F", "Ses01M", "Ses02F", "Ses02M"],
    }
    return Dataset.from_dict(data, features=features).cast_column("file", Audio(sampling_rate=16000))


HUB_COLUMNS = {"audio_column": "file", "label_column": "emotion", "speaker_column": "speaker_id"}


def test_hub_dataset_object_with_column_mapping(tmp_path):
    dataset, report = read_corpus("hub", _hub_like(tmp_path), **HUB_COLUMNS)
    assert [label_names(dataset)[i] for i in dataset["label"]] == ["angry", "neutral", "happy"]
    assert list(dataset["speaker"]) == ["Ses01F", "Ses01M", "Ses02F"]
    assert report.unknown_labels and report.unknown_labels[0][1] == "fru"


def test_hub_saved_to_disk_embeds_bytes_and_decodes(tmp_path):
    _hub_like(tmp_path).save_to_disk(str(tmp_path / "saved"))
    for wav in (tmp_path / "raw").iterdir():
        wav.unlink()  # the saved copy must not need the original files
    with pytest.warns(CorpusWarning, match="unknown labels 'fru'"):
        dataset = load_corpus("hub", tmp_path / "saved", label_map={"happy": None}, **HUB_COLUMNS)
    assert len(dataset) == 2 and dataset[0]["audio"]["bytes"]
    assert waveform(dataset[0]).shape == (4000,)


def test_hub_through_load_dataset_on_a_local_parquet_folder(tmp_path):
    """The same ``load_dataset`` call users make with a hub id, on a local folder (the hub is offline)."""
    _hub_like(tmp_path).to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    with pytest.warns(CorpusWarning):
        dataset = load_corpus(
            "hub", tmp_path / "repo", split="train", load_kwargs={"cache_dir": str(tmp_path / "cache")}, **HUB_COLUMNS
        )
    assert len(dataset) == 3 and dataset[0]["corpus"] == "repo"


def test_hub_missing_files_and_default_speaker(tmp_path):
    source = _hub_like(tmp_path).remove_columns("speaker_id")
    (tmp_path / "raw" / "0.wav").unlink()
    dataset, report = read_corpus("hub", source, audio_column="file", label_column="emotion")
    assert set(dataset["speaker"]) == {"unknown"}
    assert [Path(p).name for p in report.missing_files] == ["0.wav"]


def test_label_map_merges_and_drops(tmp_path):
    for name in ["03-01-01-01-01-01-01.wav", "03-01-02-01-01-01-02.wav", "03-01-05-01-01-01-03.wav",
                 "03-01-06-01-01-01-04.wav", "03-01-08-01-01-01-05.wav"]:
        write_wav(tmp_path / name)
    merged, report = read_corpus("ravdess", tmp_path, label_map={"calm": "neutral", "fear": None})
    assert label_names(merged) == ["neutral", "angry", "surprised"]
    assert sorted(label_names(merged)[i] for i in merged["label"]) == ["angry", "neutral", "neutral", "surprised"]
    assert report.skipped == {"label_map drops fearful": 1}
    four = load_corpus("ravdess", tmp_path, label_map="four-class")
    assert label_names(four) == ["neutral", "angry"] and len(four) == 3
    kept = load_corpus("ravdess", tmp_path, label_map=["angry", "surprise"])
    assert label_names(kept) == ["angry", "surprised"]
    with pytest.raises(ValueError, match="outside the taxonomy"):
        load_corpus("ravdess", tmp_path, label_map={"calm": "sleepy"})
    assert set(FOUR_CLASS_MAP) == set(EMOTIONS)


def test_nothing_usable_is_an_error_not_an_empty_dataset(tmp_path):
    write_wav(tmp_path / "wav" / "03a01Xa.wav")
    with pytest.raises(CorpusError, match="unknown labels"):
        load_corpus("emodb", tmp_path)
    with pytest.raises(CorpusError, match="not found"):
        load_corpus("emodb", tmp_path / "absent")
    with pytest.raises(CorpusError, match="unknown corpus"):
        load_corpus("iemocap", tmp_path)
    write_wav(tmp_path / "wav" / "03a01Wa.wav")
    with pytest.raises(CorpusError, match="no usable clip"):
        load_corpus("emodb", tmp_path, label_map={"angry": None})


def test_waveform_decodes_paths_and_resamples_to_16k(tmp_path):
    write_wav(tmp_path / "03a01Fa.wav", seconds=0.5, rate=8000)
    dataset = load_corpus("emodb", tmp_path)
    samples = waveform(dataset[0])
    assert samples.dtype == np.float32 and samples.ndim == 1 and len(samples) == 8000
    decoded = {"array": np.sin(np.arange(3200) / 5).astype(np.float32), "sampling_rate": 8000}
    assert len(waveform({"audio": decoded})) == 6400
    encoded = {"audio": {"bytes": (tmp_path / "03a01Fa.wav").read_bytes(), "path": None}}
    assert np.allclose(waveform(encoded), samples)


def test_concatenate_corpora_aligns_class_indices(tmp_path):
    write_wav(tmp_path / "e" / "03a01Fa.wav")
    write_wav(tmp_path / "e" / "03a01Na.wav")
    write_wav(tmp_path / "r" / "03-01-02-01-01-01-01.wav")
    write_wav(tmp_path / "r" / "03-01-03-01-01-01-01.wav")
    emodb, ravdess = load_corpus("emodb", tmp_path / "e"), load_corpus("ravdess", tmp_path / "r")
    both = concatenate_corpora([emodb, ravdess])
    names = label_names(both)
    assert names == ["neutral", "calm", "happy"]
    assert sorted(zip(both["corpus"], (names[i] for i in both["label"]))) == [
        ("emodb", "happy"), ("emodb", "neutral"), ("ravdess", "calm"), ("ravdess", "happy")
    ]
    full = with_label_names(emodb, list(EMOTIONS))
    assert sorted(full["label"]) == [0, 2]
    with pytest.raises(ValueError, match="not among"):
        with_label_names(emodb, ["happy"])


def test_real_emodb(emodb_root):
    dataset = load_corpus("emodb", emodb_root)
    assert len(dataset) == 535
    assert len(set(dataset["speaker"])) == 10
    assert label_names(dataset) == ["neutral", "happy", "sad", "angry", "fearful", "disgust", "boredom"]
    assert dataset.report.problems == 0
    row = dataset[int(np.flatnonzero(np.array(dataset["path"]) == str(emodb_root / "wav" / "03a01Fa.wav"))[0])]
    assert label_names(dataset)[row["label"]] == "happy" and row["speaker"] == "03"
    assert len(waveform(row)) == round(1.89825 * 16000)


def run_describe(*argv: str) -> int:
    from finetune.__main__ import COMMANDS
    from ser.cli import dispatch

    return dispatch("python -m finetune", "", COMMANDS, ["describe", *argv])


def test_describe_cli_on_a_csv_corpus(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", seconds=0.5)
    write_wav(tmp_path / "b.wav", seconds=1.5)
    write_wav(tmp_path / "c.wav", seconds=1.0)
    table = tmp_path / "labels.csv"
    table.write_text("path,label,speaker\na.wav,angry,x\nb.wav,sad,y\nc.wav,fear,y\nmissing.wav,sad,y\n")
    assert run_describe("--corpus", "csv", "--root", str(table)) == 0
    out = capsys.readouterr().out
    assert out.startswith("# csv: 3 clips, 2 speakers, 3 classes")
    assert "| angry | 1 | 33.3% |" in out
    assert "| speaker | clips | sad | angry | fearful |" in out and "| y | 2 | 1 | 0 | 1 |" in out
    assert "| 0.500 | 1.000 | 1.500 | 3.0 (0.1 min) |" in out
    assert "1 missing files" in out
    assert run_describe("--corpus", "csv", "--root", str(table), "--label-map", "four-class") == 0
    assert "# csv: 2 clips, 2 speakers, 2 classes" in capsys.readouterr().out
    assert run_describe("--corpus", "emodb", "--root", str(tmp_path / "absent")) == 2
    assert "not found" in capsys.readouterr().err


def test_describe_cli_on_real_emodb(emodb_root, capsys):
    assert run_describe("--corpus", "emodb", "--root", str(emodb_root)) == 0
    out = capsys.readouterr().out
    assert out.startswith("# emodb: 535 clips, 10 speakers, 7 classes")
    assert "| angry | 127 |" in out and "| disgust | 46 |" in out
    assert "| 08 | 58 | 10 | 11 | 9 | 12 | 6 | 0 | 10 |" in out  # speaker 08 has no disgust
    assert "| 1.226 | 2.780 | 8.978 |" in out
