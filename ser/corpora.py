"""Emotional speech corpora as ``datasets.Dataset``: one schema whatever the corpus's own layout.

Every adapter returns the columns ``audio`` (``Audio(sampling_rate=16000, decode=False)``),
``label`` (``ClassLabel`` on the canonical names present, in ``ser.labels.EMOTIONS`` order),
``speaker``, ``corpus`` and ``path``, so training, probing and cross-corpus evaluation never care
where a clip came from.

Why ``decode=False``: datasets 5 decodes audio with torchcodec, which needs FFmpeg's shared
libraries; neither is installed here, and neither is needed for WAV/FLAC. The ``audio`` column
therefore holds ``{"bytes", "path"}`` and :func:`waveform` decodes a row with
``ser.audio.load_audio`` (soundfile, mono, 16 kHz float32). Anyone who has torchcodec may still
``dataset.cast_column("audio", Audio(sampling_rate=16000))``.

Nothing is dropped silently: files whose names do not follow the layout, labels outside the
taxonomy and missing files are counted in a :class:`CorpusReport`, which ``load_corpus`` attaches
to the dataset as ``dataset.report`` and summarises in a :class:`CorpusWarning`.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Audio, ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Value

from ser import labels as taxonomy

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS: frozenset[str] = frozenset({".wav", ".flac", ".ogg", ".mp3"})
UNKNOWN_SPEAKER = "unknown"

# Cross-corpus 4-class set (IEMOCAP style). RAVDESS's and TurEV-DB's "calm" is read as neutral, as is
# usual when those corpora meet 4-class corpora; every other emotion is dropped.
FOUR_CLASS_MAP: dict[str, str | None] = {
    name: (name if name in taxonomy.FOUR_CLASS else None) for name in taxonomy.EMOTIONS
} | {"calm": "neutral"}
# The label set for training on several corpora at once: the emotions most corpora share. "calm"
# (RAVDESS, TurEV-DB: a relaxed neutral read) becomes neutral; EmoDB's "boredom" has no counterpart in
# any other corpus, so it is dropped rather than guessed onto a neighbour.
HARMONISED_MAP: dict[str, str | None] = {name: name for name in taxonomy.EMOTIONS} | {
    "calm": "neutral",
    "boredom": None,
}
LABEL_MAPS: dict[str, dict[str, str | None]] = {"four-class": FOUR_CLASS_MAP, "harmonised": HARMONISED_MAP}

LabelMap = Mapping[str, "str | None"] | Sequence[str] | str


class CorpusError(ValueError):
    """A corpus that cannot be loaded at all (wrong root, no usable clip, bad CSV header)."""


class CorpusWarning(UserWarning):
    """Some files of a corpus were left out; ``dataset.report`` lists which and why."""


@dataclass
class CorpusReport:
    """What loading a corpus kept, left out on purpose, and could not use."""

    corpus: str
    root: str
    loaded: int = 0
    unknown_labels: list[tuple[str, str]] = field(default_factory=list)  # (path, label as written)
    missing_files: list[str] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)  # names that do not follow the corpus layout
    skipped: Counter[str] = field(default_factory=Counter)  # deliberate: reason -> count

    @property
    def problems(self) -> int:
        """How many entries could not be used (deliberate skips are not problems)."""
        return len(self.unknown_labels) + len(self.missing_files) + len(self.unparsed)

    def summary(self) -> str:
        """One human-readable paragraph, with a few examples of each problem."""
        parts = [f"{self.corpus} at {self.root}: {self.loaded} clips loaded"]
        if self.unknown_labels:
            found = Counter(label for _, label in self.unknown_labels)
            parts.append(
                f"{len(self.unknown_labels)} with unknown labels "
                + ", ".join(f"{label!r} x{count}" for label, count in found.most_common(5))
            )
        if self.missing_files:
            parts.append(f"{len(self.missing_files)} missing files (e.g. {', '.join(self.missing_files[:3])})")
        if self.unparsed:
            parts.append(
                f"{len(self.unparsed)} files whose names do not follow the {self.corpus} layout "
                f"(e.g. {', '.join(self.unparsed[:3])})"
            )
        if self.skipped:
            parts.append("skipped on purpose: " + ", ".join(f"{why} x{n}" for why, n in self.skipped.items()))
        return "; ".join(parts)


@dataclass(frozen=True)
class _Entry:
    """One clip found by an adapter, before its label is resolved."""

    path: str
    label: str  # as the corpus writes it
    speaker: str
    audio_bytes: bytes | None = None


# ----------------------------------------------------------------------------------------- public


def load_corpus(name: str, root: Any, *, label_map: LabelMap | None = None, **options: Any) -> Dataset:
    """Load corpus ``name`` (one of :data:`CORPORA`, e.g. "emodb", "nemo", "csv", "hub") from ``root``.

    ``label_map`` merges or drops classes: a mapping ``{label: new label or None}`` (labels it does
    not name are kept), a sequence of labels to keep (the rest are dropped), or a name from
    :data:`LABEL_MAPS` such as ``"four-class"``. ``options`` go to the adapter (see ``read_corpus``).
    """
    dataset, report = read_corpus(name, root, label_map=label_map, **options)
    if report.problems:
        warnings.warn(report.summary(), CorpusWarning, stacklevel=2)
    dataset.report = report
    return dataset


def load_corpora(
    names: str | Sequence[str], roots: Any, *, label_map: LabelMap | None = None, **options: Any
) -> Dataset:
    """One dataset from one or several corpora: ``names`` "emodb,nemo" with one root per name.

    With several corpora the labels default to the ``"harmonised"`` map (calm -> neutral, boredom
    dropped), so every corpus names each emotion the same way; speakers are told apart by corpus
    (``finetune.data.speaker_groups``).
    """
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    roots = [r.strip() for r in roots.split(",")] if isinstance(roots, str) else list(roots)
    if len(names) != len(roots):
        raise CorpusError(f"{len(names)} corpora ({', '.join(names)}) need as many roots, got {len(roots)}")
    if len(names) == 1:
        return load_corpus(names[0], roots[0], label_map=label_map, **options)
    if len(set(names)) != len(names):
        raise CorpusError(f"a corpus is named twice in {', '.join(names)}")
    label_map = "harmonised" if label_map is None else label_map
    parts = [load_corpus(name, root, label_map=label_map, **options) for name, root in zip(names, roots)]
    return concatenate_corpora(parts)


def read_corpus(
    name: str, root: Any, *, label_map: LabelMap | None = None, **options: Any
) -> tuple[Dataset, CorpusReport]:
    """Like :func:`load_corpus` but returns the report beside the dataset and never warns.

    Adapter options: ravdess ``include_song=False``; folder ``speaker_pattern``; csv
    ``path_column``, ``label_column``, ``speaker_column``, ``speaker_pattern``; hub ``split``,
    ``audio_column``, ``label_column``, ``speaker_column``, ``corpus_name`` and ``load_kwargs``.
    """
    spec = corpus_spec(name)
    corpus_name = options.pop("corpus_name", None) or (_hub_name(root) if spec.name == "hub" else spec.name)
    report = CorpusReport(corpus=corpus_name, root=str(root))
    entries = list(spec.adapter(root, report, **options))
    mapper = _label_mapper(label_map)
    rows = _resolve(entries, spec.to_canonical, mapper, report)
    if not rows:
        raise CorpusError(f"no usable clip in {corpus_name} at {root}. {report.summary()}")
    report.loaded = len(rows)
    return _to_dataset(rows, corpus_name), report


def waveform(row: Mapping[str, Any]) -> np.ndarray:
    """The clip of a dataset row as 16 kHz mono float32, decoded by ``ser.audio.load_audio``.

    Accepts a row of a :func:`load_corpus` dataset, its ``audio`` cell, or a decoded
    ``{"array", "sampling_rate"}`` cell (resampled if needed).
    """
    from ser.audio import load_audio  # imported here so listing a corpus never needs the decoder

    audio = row.get("audio", row) if isinstance(row, Mapping) else row
    if isinstance(audio, Mapping) and audio.get("array") is not None:
        return load_audio((int(audio["sampling_rate"]), np.asarray(audio["array"])))
    if isinstance(audio, Mapping) and audio.get("bytes"):
        return load_audio(bytes(audio["bytes"]))
    path = (audio.get("path") if isinstance(audio, Mapping) else None) or row.get("path")
    if not path:
        raise ValueError("row has neither audio bytes nor a path to decode")
    return load_audio(path)


def label_names(dataset: Dataset) -> list[str]:
    """The class names of a corpus dataset, in index order."""
    return list(dataset.features["label"].names)


def with_label_names(dataset: Dataset, names: Sequence[str]) -> Dataset:
    """Re-index ``label`` onto ``names`` (e.g. a model's ``id2label``), so indices mean the same
    classes across corpora, the annotation store and a trained model."""
    used = {label_names(dataset)[i] for i in set(dataset["label"])}
    missing = sorted(used - set(names))
    if missing:
        raise ValueError(f"the dataset has labels {missing} that are not among {list(names)}")
    return dataset.align_labels_with_mapping({name: i for i, name in enumerate(names)}, "label")


def concatenate_corpora(parts: Sequence[Dataset]) -> Dataset:
    """One dataset from several (cross-corpus training, corpus + corrections): the union of their
    classes in ``EMOTIONS`` order, and the five shared columns."""
    from datasets import concatenate_datasets

    present = {name for part in parts for name in label_names(part)}
    names = [name for name in taxonomy.EMOTIONS if name in present]
    columns = ["audio", "label", "speaker", "corpus", "path"]
    return concatenate_datasets([with_label_names(part.select_columns(columns), names) for part in parts])


# --------------------------------------------------------------------------------------- adapters


def _emodb(root: Any, report: CorpusReport) -> Iterator[_Entry]:
    """``SSTTTEV.wav``: speaker, text, emotion letter, version (``03a01Fa.wav``)."""
    folder = Path(root) / "wav" if (Path(root) / "wav").is_dir() else Path(root)
    for path, match in _named_clips(folder, r"^(\d\d)([a-z]\d\d)([A-Za-z])([a-z]?)$", report, recursive=False):
        yield _Entry(str(path), match.group(3).upper(), match.group(1))


def _ravdess(root: Any, report: CorpusReport, *, include_song: bool = False) -> Iterator[_Entry]:
    """``MM-VV-EE-II-SS-RR-AA.wav``: modality, vocal channel (01 speech, 02 song), emotion, ..., actor."""
    for path, match in _named_clips(Path(root), r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$", report):
        if match.group(2) == "02" and not include_song:
            report.skipped["song (include_song=False)"] += 1
            continue
        yield _Entry(str(path), match.group(3), match.group(7))


def _named_clips(folder: Path, pattern: str, report: CorpusReport, *, recursive: bool = True,
                 flags: int = 0) -> Iterator[tuple[Path, re.Match[str]]]:
    """Each audio file whose stem follows the corpus's naming ``pattern``; the others are reported."""
    compiled = re.compile(pattern, flags)
    for path in _audio_files(folder, report, recursive=recursive):
        match = compiled.match(path.stem)
        if match is None:
            report.unparsed.append(str(path))
            continue
        yield path, match


def _crema_d(root: Any, report: CorpusReport) -> Iterator[_Entry]:
    """``1001_DFA_ANG_XX.wav``: actor, sentence, emotion, intensity."""
    for path, match in _named_clips(Path(root), r"^(\d+)_([A-Za-z]+)_([A-Za-z]+)_([A-Za-z0-9]+)$", report):
        yield _Entry(str(path), match.group(3).upper(), match.group(1))


def _tess(root: Any, report: CorpusReport) -> Iterator[_Entry]:
    """``OAF_back_angry.wav`` (in folders such as ``OAF_angry``): speaker OAF/YAF, word, emotion."""
    for path, match in _named_clips(Path(root), r"^(OAF|YAF)_([A-Za-z]+)_(.+)$", report, flags=re.IGNORECASE):
        yield _Entry(str(path), match.group(3).lower(), match.group(1).upper())


def _nemo(root: Any, report: CorpusReport) -> Iterator[_Entry]:
    """``{speaker}_{emotion}_{n}.wav`` (``EB0_anger_1.wav``), in ``samples/`` or the root itself."""
    folder = Path(root) / "samples" if (Path(root) / "samples").is_dir() else Path(root)
    for path, match in _named_clips(folder, r"^([A-Z]+\d+)_([a-z]+)_(\d+)$", report):
        yield _Entry(str(path), match.group(2), match.group(1))


def _emovo(root: Any, report: CorpusReport) -> Iterator[_Entry]:
    """``{emotion}-{speaker}-{sentence}.wav`` (``rab-f1-b2.wav``), in speaker folders f1..m3."""
    for path, match in _named_clips(Path(root), r"^([a-z]{3})-([fm]\d)-([a-z]+\d*)$", report, flags=re.IGNORECASE):
        yield _Entry(str(path), match.group(1).lower(), match.group(2).lower())


def _turev(root: Any, report: CorpusReport) -> Iterator[_Entry]:
    """``{speaker}_{emotion}_{word}.wav`` (``1358_sk_beste.wav``), in folders Angry, Calm, Happy, Sad.

    Only the corpus's original recordings (``Sound Source``) are read: its repository also holds
    filtered copies of the same clips, which would count every clip twice.
    """
    folder = Path(root) / "Sound Source" if (Path(root) / "Sound Source").is_dir() else Path(root)
    for path, match in _named_clips(folder, r"^(\d+)_([a-z]{2})_(.+)$", report, flags=re.IGNORECASE):
        yield _Entry(str(path), match.group(2).lower(), match.group(1))


DEFAULT_SPEAKER_PATTERN = r"^([A-Za-z0-9]+)[_-]"


def _folder(
    root: Any, report: CorpusReport, *, speaker_pattern: str | None = DEFAULT_SPEAKER_PATTERN
) -> Iterator[_Entry]:
    """``root/<label>/**/<clip>``: the class is the top folder's name.

    Such folders do not record speakers: the speaker is the first group of ``speaker_pattern``
    matched against the file stem (default: the prefix before the first ``_`` or ``-``, so
    ``spk03_take1.wav`` -> ``spk03``), or ``"unknown"`` when it does not match or is None.
    """
    folder = Path(root)
    for path in _audio_files(folder, report):
        relative = path.relative_to(folder)
        if len(relative.parts) < 2:
            report.unparsed.append(str(path))  # a clip beside the class folders has no class
            continue
        yield _Entry(str(path), relative.parts[0], _speaker_from_stem(path.stem, speaker_pattern))


def _csv(
    root: Any,
    report: CorpusReport,
    *,
    path_column: str = "path",
    label_column: str = "label",
    speaker_column: str = "speaker",
    speaker_pattern: str | None = DEFAULT_SPEAKER_PATTERN,
) -> Iterator[_Entry]:
    """A CSV/TSV with ``path,label[,speaker]``; relative paths are relative to the table's folder.

    Without a speaker column the speaker comes from the file stem as in the folder layout.
    """
    table = Path(root)
    if not table.is_file():
        raise CorpusError(f"CSV/TSV file not found: {table}")
    for path, label, speaker in read_clip_table(table, (path_column, label_column, speaker_column)):
        if not path.is_file():
            report.missing_files.append(str(path))
            continue
        yield _Entry(str(path.resolve()), label, speaker or _speaker_from_stem(path.stem, speaker_pattern))


def read_clip_table(
    table: Path, columns: Sequence[str] = ("path", "label", "speaker"), *, label_required: bool = True
) -> Iterator[tuple[Path, str, str]]:
    """``(path, label, speaker)`` per row of a CSV/TSV (tab-separated for .tsv/.tab), "" where empty.

    ``columns`` names the path, label and speaker columns. Relative paths are relative to the
    table's folder. Training needs the label column; an annotation queue (``label_required=False``)
    does not.
    """
    path_column, label_column, speaker_column = columns
    delimiter = "\t" if table.suffix.lower() in {".tsv", ".tab"} else ","
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        for needed in (path_column, label_column) if label_required else (path_column,):
            if needed not in header:
                raise CorpusError(f"{table.name} has no {needed!r} column (columns: {', '.join(header)})")
        for row in reader:
            written = (row.get(path_column) or "").strip()
            label = (row.get(label_column) or "").strip()
            yield table.parent / written, label, (row.get(speaker_column) or "").strip()


def _hub(
    root: Any,
    report: CorpusReport,
    *,
    split: str = "train",
    audio_column: str = "audio",
    label_column: str = "label",
    speaker_column: str | None = "speaker",
    load_kwargs: Mapping[str, Any] | None = None,
) -> Iterator[_Entry]:
    """Any ``datasets`` dataset: a hub id or local data folder (``load_dataset``), a folder written
    by ``save_to_disk``, or a ``Dataset``/``DatasetDict`` object; columns are mapped by name.

    A missing speaker column gives speaker ``"unknown"``, so speaker-independent splits will refuse it.
    """
    source = _open_hub_dataset(root, split, dict(load_kwargs or {}))
    for needed in (audio_column, label_column):
        if needed not in source.column_names:
            raise CorpusError(f"dataset has no {needed!r} column (columns: {', '.join(source.column_names)})")
    if isinstance(source.features[audio_column], Audio):
        source = source.cast_column(audio_column, Audio(decode=False))  # no torchcodec needed
    label_feature = source.features[label_column]
    names = label_feature.names if isinstance(label_feature, ClassLabel) else None
    speakers = (
        source[speaker_column] if speaker_column and speaker_column in source.column_names
        else [UNKNOWN_SPEAKER] * len(source)
    )
    for audio, label, speaker in zip(source[audio_column], source[label_column], speakers):
        written = names[label] if names is not None and label is not None else str(label)
        path, data = _audio_reference(audio)
        if data is None and (not path or not Path(path).is_file()):
            report.missing_files.append(path or "<no path, no bytes>")
            continue
        yield _Entry(path or "", written, str(speaker), data)


def _open_hub_dataset(root: Any, split: str, load_kwargs: dict[str, Any]) -> Dataset:
    """Whatever ``root`` is, the one split to read."""
    import datasets

    if isinstance(root, (Dataset, DatasetDict)):
        source = root
    elif Path(str(root)).is_dir() and (
        (Path(str(root)) / "state.json").is_file() or (Path(str(root)) / "dataset_dict.json").is_file()
    ):
        source = datasets.load_from_disk(str(root))
    else:
        return datasets.load_dataset(str(root), split=split, **load_kwargs)
    if isinstance(source, DatasetDict):
        if split not in source:
            raise CorpusError(f"dataset has no split {split!r} (splits: {', '.join(source)})")
        source = source[split]
    return source


def _audio_reference(audio: Any) -> tuple[str | None, bytes | None]:
    """(path, bytes) of an undecoded audio cell, or of a plain path string."""
    if isinstance(audio, Mapping):
        return audio.get("path"), audio.get("bytes") or None
    if isinstance(audio, (str, Path)):
        return str(audio), None
    raise CorpusError(
        f"cannot read audio cells of type {type(audio).__name__}; expected a path or an Audio column"
    )


def _hub_name(root: Any) -> str:
    """A local folder's name, or the hub id itself (``superb/er`` stays ``superb/er``)."""
    if isinstance(root, (Dataset, DatasetDict)):
        return "hub"
    return Path(str(root)).name if Path(str(root)).exists() else str(root)


@dataclass(frozen=True)
class CorpusSpec:
    """Everything the project knows about one corpus: adding a corpus is adding one of these.

    ``to_canonical`` maps the corpus's own label codes onto ``ser.labels.EMOTIONS``; ``licence``
    (the publisher's terms: the one copy of them, read by model cards and ``finetune download``),
    ``description`` and ``source`` go into model cards and ``python -m finetune describe``;
    ``layout`` says what ``--root`` must point at.
    """

    name: str
    adapter: Callable[..., Iterable[_Entry]]
    to_canonical: Callable[[str], str]
    language: str = ""
    licence: str = ""
    source: str = ""
    layout: str = ""
    aliases: tuple[str, ...] = ()
    # May a model trained on it ship in this repository (no-derivatives licences: evaluation only)?
    shippable: bool = True
    description: str = ""  # what it holds and where it was published, for model cards


CORPUS_SPECS: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in (
        CorpusSpec(
            "emodb", _emodb, taxonomy.EMODB.__getitem__, "German",
            "Distributed free of charge by its authors (TU Berlin) for research, with no formal licence file in "
            "the download: read the terms on http://emodb.bilderbar.info/ before commercial use and cite "
            "Burkhardt, Paeschke, Rolfes, Sendlmeier and Weiss, 'A database of German emotional speech', "
            "Interspeech 2005.",
            "http://emodb.bilderbar.info/download/", "the folder holding wav/ (or the wav files)",
            description="EmoDB, the Berlin Database of Emotional Speech (Burkhardt, Paeschke, Rolfes, Sendlmeier, "
            "Weiss, \"A database of German emotional speech\", Interspeech 2005): 535 acted German utterances, "
            "10 speakers (5 female, 5 male), 10 sentences, 7 emotions.",
        ),
        CorpusSpec(
            "ravdess", _ravdess, taxonomy.RAVDESS.__getitem__, "English (North American)",
            "Creative Commons Attribution-NonCommercial-ShareAlike 4.0 (CC BY-NC-SA 4.0): non-commercial use, "
            "share alike, cite Livingstone and Russo (2018).",
            "https://zenodo.org/records/1188976", "the folder holding Actor_01 .. Actor_24",
            description="RAVDESS (Livingstone and Russo, PLoS ONE 2018): 1,440 acted North American English "
            "speech clips, 24 speakers (12 female, 12 male), 8 emotions.",
        ),
        CorpusSpec(
            "crema-d", _crema_d, taxonomy.CREMA_D.__getitem__, "English (US)",
            "Open Database License (ODbL 1.0), its contents under the Database Contents License (DbCL 1.0).",
            "https://github.com/CheyneyComputerScience/CREMA-D", "the AudioWAV folder", aliases=("cremad",),
            description="CREMA-D (Cao et al., IEEE Transactions on Affective Computing 2014): 7,442 acted English "
            "clips, 91 speakers, 6 emotions.",
        ),
        CorpusSpec(
            "tess", _tess, taxonomy.canonical, "English (Canadian)",
            "Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 (CC BY-NC-ND 4.0): non-commercial, no "
            "derivatives (evaluate on it; do not ship a model trained on it).",
            "https://tspace.library.utoronto.ca/handle/1807/24487", "the folder of OAF_*/YAF_* folders",
            shippable=False,
            description="TESS, the Toronto Emotional Speech Set (Dupuis and Pichora-Fuller, 2010): 2,800 acted "
            "English clips, 2 speakers, 7 emotions.",
        ),
        CorpusSpec(
            "nemo", _nemo, taxonomy.canonical, "Polish",
            "Creative Commons Attribution-NonCommercial-ShareAlike 4.0 (CC BY-NC-SA 4.0): non-commercial use, "
            "share alike, cite Christop (2024).",
            "https://github.com/amu-cai/nEMO (hub id amu-cai/nEMO)",
            "the repository folder holding samples/ (or the samples folder)",
            description="nEMO (Christop, \"nEMO: Dataset of Emotional Speech in Polish\", LREC-COLING 2024): "
            "4,481 acted Polish utterances, 9 speakers, 6 emotions.",
        ),
        CorpusSpec(
            "emovo", _emovo, taxonomy.EMOVO.__getitem__, "Italian",
            "Distributed by its authors (Fondazione Ugo Bordoni) for research, with no licence file in the copy "
            "fetched here: use it for research only and cite Costantini et al. (2014).",
            "http://voice.fub.it/activities/corpora/emovo/", "the folder holding f1 f2 f3 m1 m2 m3",
            description="EMOVO (Costantini, Iaderola, Paoloni, Todisco, \"EMOVO Corpus: an Italian Emotional "
            "Speech Database\", LREC 2014): 588 acted Italian utterances, 6 speakers, 7 emotions.",
        ),
        CorpusSpec(
            "turev", _turev, taxonomy.TUREV.__getitem__, "Turkish",
            "Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 (CC BY-NC-ND 4.0): non-commercial, no "
            "derivatives (evaluate on it; do not ship a model trained on it).",
            "https://github.com/Xeonen/TurEV-DB", "the repository folder holding 'Sound Source' (or that folder)",
            aliases=("turev-db",), shippable=False,
            description="TurEV-DB (Canpolat, Ormanoglu, Zeyrek, \"Turkish Emotion Voice Database\", SLTU 2020): "
            "1,735 acted Turkish words, 6 speakers, 4 emotions.",
        ),
        CorpusSpec("folder", _folder, taxonomy.canonical, layout="root/<label>/**/<clip>"),
        CorpusSpec("csv", _csv, taxonomy.canonical, layout="a CSV/TSV with path,label[,speaker]", aliases=("tsv",)),
        CorpusSpec("hub", _hub, taxonomy.canonical, layout="a hub id, a datasets folder or a Dataset"),
    )
}
CORPORA: tuple[str, ...] = tuple(CORPUS_SPECS)
_ALIASES = {alias: spec.name for spec in CORPUS_SPECS.values() for alias in spec.aliases}


def corpus_spec(name: str) -> CorpusSpec:
    """The spec of corpus ``name`` (any case, ``_`` or ``-``, or an alias such as ``cremad``)."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in CORPUS_SPECS:
        raise CorpusError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    return CORPUS_SPECS[key]


# ---------------------------------------------------------------------------------------- helpers


def _audio_files(folder: Path, report: CorpusReport, *, recursive: bool = True) -> list[Path]:
    """Audio files under ``folder`` in a stable order; a missing folder is an error, not 0 clips."""
    if not folder.is_dir():
        raise CorpusError(f"corpus folder not found: {folder}")
    candidates = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _speaker_from_stem(stem: str, pattern: str | None) -> str:
    match = re.match(pattern, stem) if pattern else None
    return match.group(1) if match else UNKNOWN_SPEAKER


def _label_mapper(label_map: LabelMap | None) -> Callable[[str], str | None]:
    """A function canonical label -> new canonical label, or None to drop the clip."""
    if label_map is None:
        return lambda label: label
    if isinstance(label_map, str):
        if label_map not in LABEL_MAPS:
            raise ValueError(f"unknown label map {label_map!r}; known: {', '.join(LABEL_MAPS)}")
        label_map = LABEL_MAPS[label_map]
    try:
        if isinstance(label_map, Mapping):
            table = {
                taxonomy.canonical(k): (None if v is None else taxonomy.canonical(v)) for k, v in label_map.items()
            }
            return lambda label: table.get(label, label)
        keep = {taxonomy.canonical(name) for name in label_map}
    except KeyError as error:
        raise ValueError(f"label_map names a label outside the taxonomy: {error}") from error
    return lambda label: label if label in keep else None


def _resolve(
    entries: list[_Entry],
    to_canonical: Callable[[str], str],
    mapper: Callable[[str], str | None],
    report: CorpusReport,
) -> list[tuple[_Entry, str]]:
    """Canonical, mapped label of each entry; unknown labels reported, dropped classes counted."""
    rows = []
    for entry in entries:
        try:
            label = to_canonical(entry.label)
        except KeyError:
            report.unknown_labels.append((entry.path, entry.label))
            continue
        mapped = mapper(label)
        if mapped is None:
            report.skipped[f"label_map drops {label}"] += 1
            continue
        rows.append((entry, mapped))
    return rows


def _to_dataset(rows: list[tuple[_Entry, str]], corpus: str) -> Dataset:
    """Build the Arrow table directly: ``Dataset.from_dict`` would encode audio through torchcodec."""
    present = {label for _, label in rows}
    names = [name for name in taxonomy.EMOTIONS if name in present]
    features = Features(
        {
            "audio": Audio(sampling_rate=SAMPLE_RATE, decode=False),
            "label": ClassLabel(names=names),
            "speaker": Value("string"),
            "corpus": Value("string"),
            "path": Value("string"),
        }
    )
    table = pa.table(
        {
            "audio": [{"bytes": entry.audio_bytes, "path": entry.path} for entry, _ in rows],
            "label": [names.index(label) for _, label in rows],
            "speaker": [entry.speaker for entry, _ in rows],
            "corpus": [corpus] * len(rows),
            "path": [entry.path for entry, _ in rows],
        }
    ).cast(features.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=features, description=f"{corpus} via ser.corpora"))
