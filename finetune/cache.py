"""Frozen-encoder hidden states, extracted once per clip and kept on disk as ``datasets``.

The encoder is the slow part of a probe and it never changes, so each clip goes through it once:
every later epoch, fold, pooling or head size reads the cache. A cache entry is keyed by the
backbone and the content hash of the clips' audio (not their paths), so moving a corpus keeps
its cache and editing a clip invalidates it. Augmented copies are cached the same way, one
dataset per copy number, so adding copies never re-extracts the originals. Denoised audio
(``ser.denoise``, a probe's ``--denoise``) is cached apart from raw audio, per method.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Array3D, Dataset, Features, Value, load_from_disk

from ser.audio import SAMPLE_RATE
from ser.cache import cache_root
from ser.corpora import waveform
from ser.probe import ProbeForAudioClassification

# Bump when extraction changes (real-length encoding, pooling of the cached means...).
FEATURE_VERSION = 1
Augment = Callable[[np.ndarray, int], np.ndarray]  # (waveform, seed) -> augmented waveform


def default_cache_dir() -> Path:
    """``$SER_CACHE_DIR/features`` or the user cache dir's: shared by every run on this machine."""
    return cache_root() / "features"


def clip_hash(row: dict) -> str:
    """SHA-256 of a clip's encoded audio bytes (the file's, when the row holds only a path)."""
    audio = row.get("audio") or {}
    data = audio.get("bytes") if isinstance(audio, dict) else None
    if not data:
        path = (audio.get("path") if isinstance(audio, dict) else None) or row["path"]
        data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest()


def backbone_key(probe: ProbeForAudioClassification) -> str:
    """A directory name for the encoder: its name plus a digest of its configuration."""
    config = probe.encoder.config.to_json_string(use_diff=False)
    digest = hashlib.sha256(f"{probe.config.backbone}\n{config}\nv{FEATURE_VERSION}".encode()).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-._" else "_" for c in probe.config.backbone.rstrip("/"))[-48:]
    return f"{name}-{digest}"


def copy_seed(seed: int, copy: int, clip: str) -> int:
    """The augmentation seed of the ``copy``-th copy of the clip of hash ``clip``: whoever needs the
    same augmented audio (a distillation student beside its cached teacher) derives it the same way."""
    return int(np.random.SeedSequence([seed, copy, int(clip[:12], 16)]).generate_state(1)[0])


def clips_key(hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:20]


@torch.no_grad()
def encode_clip(probe: ProbeForAudioClassification, samples: np.ndarray) -> np.ndarray:
    """Hidden states (frames, layers, width) of the real frames of one clip."""
    inputs = probe.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    keys = ("input_values", "input_features", "attention_mask")
    hidden, mask = probe.encode(**{key: inputs[key] for key in keys if key in inputs})
    return hidden[0][mask[0]].float().numpy()


def cached_hidden_states(
    dataset: Dataset,
    probe: ProbeForAudioClassification,
    *,
    cache_dir: str | Path | None = None,
    with_frames: bool = False,
    copy: int = 0,
    augment: Augment | None = None,
    seed: int = 0,
    denoise: str | None = None,
) -> Dataset:
    """Per-clip hidden states of ``dataset`` in row order, from the cache or extracted now.

    Columns: ``clip_hash``, ``layer_means`` (layers, width) float32 and, with ``with_frames``,
    ``frames`` (frames, layers, width) float16. ``copy`` > 0 with ``augment`` gives the
    ``copy``-th augmented version of every clip, reproducible from ``seed`` and the clip's hash.
    ``denoise`` (a ``ser.denoise`` method) encodes the clip denoised, after any augmentation: a model
    served with denoising hears noisy audio denoised, so its noisy training copies are denoised too.

    A clip is encoded once whatever dataset it comes in: a corpus, a mix of corpora, a subset
    after a label map. Clips cached under another clip list are reused; only the others are
    encoded, and stored as an entry of their own.
    """
    if copy and augment is None:
        raise ValueError("augmented copies need an augment function")
    hashes = [clip_hash(row) for row in dataset.select_columns(["audio", "path"])]
    kind = "frames" if with_frames else "means"
    suffix = (f"copy{copy}-seed{seed}" if copy else "copy0") + (f"-denoise_{denoise}" if denoise else "")
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / backbone_key(probe)
    target = root / clips_key(hashes) / f"{suffix}-{kind}"
    if (target / "dataset_info.json").is_file():
        return load_from_disk(str(target))
    if not with_frames:  # a frames cache holds the means too
        richer = target.with_name(f"{suffix}-frames")
        if (richer / "dataset_info.json").is_file():
            return load_from_disk(str(richer)).remove_columns("frames")

    known = _cached_rows(root, suffix, with_frames)
    missing = [i for i, h in enumerate(hashes) if h not in known]
    if missing:
        new = _extract(dataset.select(missing), [hashes[i] for i in missing], probe, with_frames, copy, augment, seed,
                       denoise)
        entry = root / clips_key([hashes[i] for i in missing]) / f"{suffix}-{kind}"
        _save(new, entry, [hashes[i] for i in missing], probe)
        if len(missing) == len(hashes):
            return load_from_disk(str(entry))
        known.update(_rows_of(load_from_disk(str(entry))))
    return _assemble([known[h] for h in hashes], with_frames)


def _cached_rows(root: Path, suffix: str, with_frames: bool) -> dict[str, tuple[Dataset, int]]:
    """clip hash -> (cached dataset, row) over every entry of this backbone and copy."""
    kinds = ("frames",) if with_frames else ("frames", "means")
    rows: dict[str, tuple[Dataset, int]] = {}
    for kind in kinds:
        for entry in sorted(root.glob(f"*/{suffix}-{kind}")):
            if (entry / "dataset_info.json").is_file():
                for clip, where in _rows_of(load_from_disk(str(entry))).items():
                    rows.setdefault(clip, where)
    return rows


def _rows_of(cached: Dataset) -> dict[str, tuple[Dataset, int]]:
    return {clip: (cached, row) for row, clip in enumerate(cached["clip_hash"])}


def _assemble(rows: list[tuple[Dataset, int]], with_frames: bool) -> Dataset:
    """One dataset of the given (dataset, row) pairs, in order, without copying the arrays twice."""
    from datasets import concatenate_datasets

    columns = ["clip_hash", "layer_means", *(["frames"] if with_frames else [])]
    sources: dict[int, tuple[Dataset, list[int]]] = {}
    for cached, row in rows:
        sources.setdefault(id(cached), (cached, []))[1].append(row)
    parts, offsets, start = [], {}, 0
    for key, (cached, wanted) in sources.items():
        parts.append(cached.select_columns(columns).select(wanted))
        offsets[key] = {row: start + i for i, row in enumerate(wanted)}
        start += len(wanted)
    combined = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return combined.select([offsets[id(cached)][row] for cached, row in rows])


def _extract(
    dataset: Dataset,
    hashes: list[str],
    probe: ProbeForAudioClassification,
    with_frames: bool,
    copy: int,
    augment: Augment | None,
    seed: int,
    denoise: str | None = None,
) -> Dataset:
    layers, width = probe.config.num_layers, probe.config.hidden_size
    features = {"clip_hash": Value("string"), "layer_means": Array2D((layers, width), "float32")}
    if with_frames:
        features["frames"] = Array3D((None, layers, width), "float16")

    def extract(row: dict, index: int) -> dict:
        samples = waveform(row)
        if copy:
            clip_seed = copy_seed(seed, copy, hashes[index])
            samples = np.asarray(augment(samples, clip_seed), dtype=np.float32)
        if denoise:
            from ser.denoise import denoise as suppress

            samples = suppress(samples, denoise)
        states = encode_clip(probe, samples)
        out = {"clip_hash": hashes[index], "layer_means": states.mean(axis=0)}
        if with_frames:
            out["frames"] = states.astype(np.float16)
        return out

    return dataset.select_columns(["audio", "path"]).map(
        extract,
        with_indices=True,
        remove_columns=["audio", "path"],
        features=Features(features),
        desc=f"encoding {probe.config.backbone} ({'copy' + str(copy) if copy else 'copy0'}"
             f"{', denoised ' + denoise if denoise else ''})",
        load_from_cache_file=False,
    )


def _save(extracted: Dataset, target: Path, hashes: list[str], probe: ProbeForAudioClassification) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    extracted.save_to_disk(str(partial))
    try:  # readers never see half a cache; of two racing writers, the first rename wins
        partial.rename(target)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    (target.parent / "clips.json").write_text(json.dumps({"backbone": probe.config.backbone, "clips": hashes}))
