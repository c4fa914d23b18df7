"""``python -m finetune distill``: train a small student on a large teacher's soft labels.

A Whisper base probe is accurate but runs a 6-layer transformer per clip; the seed's light CNN runs
in a few milliseconds. Distillation trains the CNN on the teacher's whole probability vector (how
angry a "neutral" clip sounds, not just that it is neutral), softened by a temperature ``T``:

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, label)

Soft labels need no annotation, so the student also learns from unlabelled audio: augmented copies
of the corpus (``finetune.augment``) and any folder of clips (``--unlabelled``), whose labels are
ignored. The teacher is any checkpoint ``Predictor.from_pretrained`` loads; its probabilities are
used as log-probabilities (softmax(log p / T) is the teacher's tempered distribution up to its
own temperature). The student is saved as a normal light-model checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from finetune.card import version_id
from ser.light_models import LIGHT_MODELS, LightFeatureExtractor, create_light_model

UNLABELLED = -1  # the label of a row that only the teacher labels


@dataclass
class DistillOptions:
    """The student's recipe and the distillation mix."""

    student: str = "light-cnn"
    channels: tuple[int, ...] = (16, 32, 64)  # light-cnn: a narrow CNN (the seed's is 32, 64, 128)
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the soft-label term; 0: hard labels only
    epochs: int = 25
    lr: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    crop_seconds: float = 3.0  # random training crop (whole clips at test time): CPU time
    augment: int = 1  # augmented copies of each labelled clip, labelled by the teacher only
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinton's loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``.

    ``T^2`` keeps the soft term's gradients on the scale of the hard one's whatever ``T``. Rows
    labelled ``UNLABELLED`` contribute the soft term only; the CE is averaged over labelled rows
    (``class_weights``: a class-balanced CE, as the project's trainers use).
    """
    t = float(temperature)
    soft = nn.functional.kl_div(
        nn.functional.log_softmax(student_logits / t, dim=-1),
        nn.functional.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    labelled = labels != UNLABELLED
    hard = student_logits.new_zeros(())
    if alpha < 1 and bool(labelled.any()):
        hard = nn.functional.cross_entropy(student_logits[labelled], labels[labelled], weight=class_weights)
    return alpha * t * t * soft + (1 - alpha) * hard


def teacher_log_probs(predictor: Any, waveforms: Sequence[np.ndarray], labels: Sequence[str]) -> torch.Tensor:
    """(clips, classes) log-probabilities of the teacher, in ``labels``' order.

    Classes the corpus has and the teacher lacks cannot be distilled: that is an error. Teacher
    classes the corpus lacks are dropped and the rest renormalised.
    """
    missing = [label for label in labels if label not in predictor.labels]
    if missing:
        raise ValueError(f"the teacher has no class {missing} (its classes: {predictor.labels}); "
                         "pass --label-map so the corpus uses the teacher's classes")
    rows = []
    for wave in waveforms:
        probs = predictor.predict(wave, any_length=True)  # the teacher labels every training clip, however short
        rows.append([probs[label] for label in labels])
    probs = torch.tensor(rows, dtype=torch.float64)
    probs = probs / probs.sum(-1, keepdim=True).clamp(min=1e-12)
    return probs.clamp(min=1e-8).log().float()


# --- the light student ------------------------------------------------------------------------------


def student_extractor(options: DistillOptions) -> LightFeatureExtractor:
    return LightFeatureExtractor(feature_type="logmel" if options.student == "light-cnn" else "mfcc")


def light_features(extractor: LightFeatureExtractor, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """(frames, features) of each clip, computed once: every epoch then only crops them."""
    return [torch.from_numpy(extractor.features(wave)) for wave in waveforms]


def _batch(frames: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(f.shape[0] for f in frames)
    batch = torch.zeros(len(frames), longest, frames[0].shape[1])
    mask = torch.zeros(len(frames), longest, dtype=torch.long)
    for i, f in enumerate(frames):
        batch[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = 1
    return batch, mask


def _crop(frames: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    if frames.shape[0] <= length:
        return frames
    start = int(torch.randint(0, frames.shape[0] - length + 1, (1,), generator=generator))
    return frames[start : start + length]


def balanced_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """n / (classes * count) over labelled rows: each class weighs the same in the hard loss."""
    from finetune.train import balanced_class_weights

    return balanced_class_weights(labels[labels != UNLABELLED], num_classes)


def train_light_student(
    features: Sequence[torch.Tensor],
    labels: np.ndarray,
    teacher_logits: torch.Tensor | None,
    names: Sequence[str],
    options: DistillOptions,
    *,
    log: list[float] | None = None,
) -> nn.Module:
    """Train a light model on precomputed frames; ``teacher_logits`` None (or alpha 0): hard labels only.

    Rows labelled ``UNLABELLED`` need the teacher; without one they are skipped.
    """
    if options.student not in LIGHT_MODELS:
        raise ValueError(f"unknown student {options.student!r}; choose one of {LIGHT_MODELS}")
    labels = np.asarray(labels, dtype=int)
    alpha = options.alpha if teacher_logits is not None else 0.0
    rows = np.arange(len(features)) if alpha > 0 else np.flatnonzero(labels != UNLABELLED)
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    extra = {"channels": list(options.channels)} if options.student == "light-cnn" else {}
    model, _ = create_light_model(options.student, list(names), **extra, **options.extra)
    weights = balanced_weights(labels[rows], len(names))
    teacher = teacher_logits if teacher_logits is not None else torch.zeros(len(features), len(names))
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    steps = options.epochs * -(-len(rows) // options.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.lr, total_steps=max(steps, 1))
    crop = max(1, int(options.crop_seconds * 100))
    y = torch.as_tensor(labels, dtype=torch.long)
    model.train()
    for _ in range(options.epochs):
        total = 0.0
        for batch in torch.randperm(len(rows), generator=generator).split(options.batch_size):
            index = rows[batch.numpy()]
            inputs, mask = _batch([_crop(features[i], crop, generator) for i in index])
            logits = model(input_features=inputs, attention_mask=mask).logits
            loss = distillation_loss(logits, teacher[index], y[index], temperature=options.temperature,
                                     alpha=alpha, class_weights=weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        if log is not None:
            log.append(total / len(rows))
    return model.eval()


@torch.no_grad()
def predict_light(model: nn.Module, features: Sequence[torch.Tensor], batch_size: int = 32) -> np.ndarray:
    """Class index per clip (whole clips; the CNN's masks make padding harmless)."""
    model.eval()
    out = []
    for start in range(0, len(features), batch_size):
        inputs, mask = _batch(features[start : start + batch_size])
        out.append(model(input_features=inputs, attention_mask=mask).logits.argmax(-1))
    return torch.cat(out).numpy()


def save_student(model: nn.Module, extractor: LightFeatureExtractor, out: Path, summary: dict[str, Any]) -> None:
    """A normal light checkpoint (``Predictor.from_pretrained`` loads it) plus its metrics.json."""
    out.mkdir(parents=True, exist_ok=True)
    model.config.ser_model_version = summary.get("model_version")
    model.save_pretrained(out)
    extractor.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")


# --- training data --------------------------------------------------------------------------------


def augmented_copies(waveforms: Sequence[np.ndarray], hashes: Sequence[str], copies: int, seed: int) -> list[np.ndarray]:
    """``copies`` augmented versions of every clip (copy 1 of all clips, then copy 2...).

    Seeded per clip hash exactly as ``finetune.cache`` seeds the probe's cached copies, so a
    student sees the very audio a cached probe teacher was run on.
    """
    from finetune.augment import RandomAugment
    from finetune.cache import copy_seed

    return [
        np.asarray(RandomAugment(seed=copy_seed(seed, k, clip))(wave), dtype=np.float32)
        for k in range(1, copies + 1)
        for wave, clip in zip(waveforms, hashes)
    ]


def unlabelled_clips(folder: str | Path | None, limit: int | None = None) -> list[np.ndarray]:
    """The audio files under ``folder`` (several: comma-separated; labels, if any, are ignored), decoded
    at 16 kHz. ``limit``: at most that many, spread evenly over the sorted list (so a corpus's folders
    and speakers are all sampled, not only the first ones)."""
    if not folder:
        return []
    from ser.audio import load_audio

    suffixes = {".wav", ".flac", ".mp3", ".ogg", ".m4a"}
    files = sorted(p for part in str(folder).split(",") if part
                   for p in Path(part).rglob("*") if p.suffix.lower() in suffixes)
    if limit is not None and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return [load_audio(path) for path in files]


def distill(
    teacher: Any,
    waveforms: Sequence[np.ndarray],
    labels: np.ndarray,
    names: Sequence[str],
    options: DistillOptions,
    unlabelled: Sequence[np.ndarray] = (),
    hashes: Sequence[str] | None = None,
) -> tuple[nn.Module, LightFeatureExtractor, dict[str, Any]]:
    """Label clips, their augmented copies and ``unlabelled`` with ``teacher``; train the student.

    ``hashes`` (``finetune.cache.clip_hash`` of each clip) seed the augmented copies; default: the index.
    """
    extractor = student_extractor(options)
    keys = list(hashes) if hashes is not None else [f"{i:012x}" for i in range(len(waveforms))]
    extra = augmented_copies(waveforms, keys, options.augment, options.seed) + list(unlabelled)
    every = list(waveforms) + extra
    all_labels = np.concatenate([np.asarray(labels, dtype=int), np.full(len(extra), UNLABELLED)])
    started = time.perf_counter()
    teacher_logits = teacher_log_probs(teacher, every, names)
    teacher_seconds = time.perf_counter() - started
    losses: list[float] = []
    started = time.perf_counter()
    model = train_light_student(light_features(extractor, every), all_labels, teacher_logits, names, options, log=losses)
    log = {"rows": len(every), "labelled": len(waveforms), "augmented": options.augment * len(waveforms),
           "unlabelled": len(unlabelled), "teacher_seconds": round(teacher_seconds, 1),
           "train_seconds": round(time.perf_counter() - started, 1), "losses": losses}
    return model, extractor, log


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DistillOptions()
    parser.add_argument("--teacher", required=True, help="teacher checkpoint (anything Predictor.from_pretrained loads)")
    parser.add_argument("--student", choices=LIGHT_MODELS, default=defaults.student, help="student architecture")
    parser.add_argument("--channels", default=",".join(map(str, defaults.channels)),
                        help="light-cnn channels per block, comma-separated")
    parser.add_argument("--corpus", required=True, help="labelled corpus known to ser.corpora (e.g. emodb)")
    parser.add_argument("--root", required=True, help="folder holding the corpus")
    parser.add_argument("--label-map", default=None, help='merge/drop classes to match the teacher, e.g. "four-class"')
    parser.add_argument("--unlabelled", default=None,
                        help="folder(s) of extra audio the teacher labels, comma-separated (labels ignored): "
                             "other corpora, field recordings")
    parser.add_argument("--unlabelled-limit", type=int, default=None,
                        help="use at most this many unlabelled clips, spread over the folders' files")
    parser.add_argument("--out", required=True, help="student checkpoint directory to write")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="soft-label weight (0: hard labels only)")
    parser.add_argument("--augment", type=int, default=defaults.augment, help="augmented copies per clip (teacher-labelled)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--crop-seconds", type=float, default=defaults.crop_seconds)
    parser.add_argument("--seed", type=int, default=defaults.seed)


def options_from(args: argparse.Namespace) -> DistillOptions:
    return DistillOptions(
        student=args.student, channels=tuple(int(c) for c in str(args.channels).split(",") if c),
        temperature=args.temperature, alpha=args.alpha, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, crop_seconds=args.crop_seconds, augment=args.augment, seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """Distil ``--teacher`` into a light student on the whole corpus (plus unlabelled audio); save it."""
    from finetune.cache import clip_hash
    from ser.corpora import label_names, load_corpus, waveform
    from ser.model import Predictor

    options = options_from(args)
    dataset = load_corpus(args.corpus, args.root, label_map=args.label_map)
    names = label_names(dataset)
    waves = [waveform(row) for row in dataset]
    teacher = Predictor.from_pretrained(args.teacher)
    model, extractor, log = distill(teacher, waves, np.asarray(dataset["label"]), names, options,
                                    unlabelled_clips(args.unlabelled, args.unlabelled_limit),
                                    [clip_hash(row) for row in dataset])
    version = version_id(f"distilled-{args.corpus}")
    summary = {"model_version": version, "teacher": str(args.teacher), "teacher_version": teacher.version,
               "corpus": args.corpus, "labels": names, "options": asdict(options),
               "training": {k: v for k, v in log.items() if k != "losses"} | {"final_loss": log["losses"][-1]}}
    save_student(model, extractor, Path(args.out), summary)
    print(f"distilled {args.teacher} into {options.student} on {log['rows']} clips "
          f"({log['labelled']} labelled) -> {args.out}")
    return 0
