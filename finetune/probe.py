"""``python -m finetune probe``: train a small head on a frozen encoder's cached hidden states.

The encoder runs once per clip (``finetune.cache``); the head then trains in seconds on a CPU,
so leave-one-speaker-out over a whole corpus costs about as much as one pass of the encoder.
Training is class-balanced (acted corpora are not) and stops early on the unweighted average
recall of validation *speakers* held out of the training speakers; the head is then refit on
all training speakers for the epoch count that validation chose.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from sklearn.model_selection import GroupShuffleSplit
from tqdm.auto import tqdm

from finetune.cache import cached_hidden_states
from finetune.data import check_speaker_disjoint, loso_folds, speaker_groups, train_val_test_split
from finetune.options import check_choices, from_mapping, parse_command, save_config
from ser.adaptation import standardise_groups, within_speaker_std
from ser.backbones import DEFAULT_BACKBONE
from ser.corpora import label_names
from ser.denoise import METHODS as DENOISE_METHODS
from ser.metrics import compute_metrics
from ser.probe import LAYER_MIXES, POOLINGS, ProbeConfig, ProbeForAudioClassification, ProbeHead, SpeakerAdaptedHead

BALANCES = ("class", "corpus")
OPTIMIZERS = ("lbfgs", "adamw")


@dataclass
class ProbeOptions:
    """The recipe of a probe. Defaults: the best recipe measured on EmoDB LOSO
    (benchmarks/results/probe_emodb.md)."""

    backbone: str = field(default=DEFAULT_BACKBONE, metadata={"aliases": ["--model"], "help": (
        "the frozen encoder: hub id, local dir or an offline name (whisper-base-offline, whisper-tiny.en-offline)")})
    pooling: str = field(default="mean", metadata={"help": "how frames become one vector per layer",
                                                   "choices": POOLINGS})
    layer_mix: str = field(default="concat", metadata={"help": "how the layers are combined", "choices": LAYER_MIXES})
    first_layer: int = field(default=0, metadata={"help": (
        "the lowest hidden-state layer the head reads (0: the input embeddings); the lowest layers carry "
        "more of the voice and recording than of the emotion")})
    head_hidden_size: int = field(default=0, metadata={"help": "0: a linear head"})
    dropout: float = field(default=0.2, metadata={"help": "dropout before the head (AdamW training)"})
    epochs: int = field(default=500, metadata={
        "help": "upper bound (AdamW: epochs, early stopping decides; L-BFGS: iterations)"})
    patience: int = field(default=40, metadata={"help": "AdamW: epochs without validation UAR gain before stopping"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=32, metadata={"help": "AdamW minibatch size"})
    seed: int = field(default=0, metadata={"help": "fixes the split, initialisation, shuffling and augmentation"})
    augment: int = field(default=0, metadata={"help": "augmented copies per training clip (cached)"})
    val_fraction: float = field(default=0.2, metadata={
        "help": "AdamW: share of the training speakers held out for early stopping"})
    refit: bool = field(default=True, metadata={
        "help": "AdamW: retrain on every training speaker for the epoch count validation chose"})
    optimizer: str = field(default="lbfgs", metadata={
        "help": "lbfgs: full batch to convergence with L2 --l2, no early stopping (for linear heads); "
        "adamw: minibatches and early stopping", "choices": OPTIMIZERS})
    l2: float = field(default=1e-3, metadata={"help": "L2 penalty on head weights (--optimizer lbfgs)"})
    # "corpus": the largest corpus does not decide what each emotion sounds like.
    balance: str = field(default="class", metadata={
        "help": "class: classes weigh the same; corpus: each (corpus, class) pair weighs the same",
        "choices": BALANCES})
    adapt: bool = field(default=False, metadata={
        "help": "also train the speaker-adapted head (used when several clips of a voice are known)"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "hidden-state cache (default $SER_CACHE_DIR/features)"})
    denoise: str | None = field(default=None, metadata={
        "help": "denoise the training audio (augmented copies included) before the encoder; the checkpoint "
        "records it and Predictor denoises every clip it serves the same way", "choices": DENOISE_METHODS})

    def __post_init__(self) -> None:
        check_choices(self)


OPTIONS = ProbeOptions  # what run_fold takes; ``finetune cv`` parses the options after ``--`` into it


def options_from(options: ProbeOptions | Mapping[str, Any] | None = None) -> ProbeOptions:
    """ProbeOptions as given, or from a mapping (cross-validation, benchmarks); extra keys are ignored."""
    return options if isinstance(options, ProbeOptions) else from_mapping(ProbeOptions, options or {})


# --- features --------------------------------------------------------------------------------------


@dataclass
class CachedFeatures:
    """Hidden states of every cached row: the original clips, then each augmented copy."""

    means: torch.Tensor  # (rows, layers, width)
    frames: list[torch.Tensor] | None  # per row (frames, layers, width), float16; attentive pooling only
    clip: np.ndarray  # row -> row of the corpus dataset
    copy: np.ndarray  # row -> 0 for the original audio, k for the k-th augmented copy

    def rows(self, clips: Sequence[int], *, with_copies: bool) -> np.ndarray:
        """Feature rows of the given dataset rows, in their order (copies after the originals)."""
        clips = np.asarray(clips, dtype=int)
        n_clips = int((self.copy == 0).sum())
        copies = range(int(self.copy.max()) + 1) if with_copies else range(1)
        return np.concatenate([clips + k * n_clips for k in copies])


@lru_cache(maxsize=2)
def encoder_probe(backbone: str) -> ProbeForAudioClassification:
    """The frozen encoder (inside a probe, for its ``encode``), loaded once per process."""
    return ProbeForAudioClassification.from_backbone(backbone, ["unused"]).eval()


def _augment(samples: np.ndarray, seed: int) -> np.ndarray:
    from finetune.augment import RandomAugment  # needs torchaudio: imported only when augmenting

    return RandomAugment(seed=seed)(samples)


_LAST_FEATURES: dict[tuple, CachedFeatures] = {}


def load_features(dataset: Dataset, options: Any = None) -> CachedFeatures:
    """Hidden states of every clip (and augmented copy), from the cache or extracted once now.

    The last result stays in memory too, so the folds of a cross-validation share it.
    """
    options = options_from(options)
    key = (dataset._fingerprint, options.backbone, options.pooling, options.augment, options.seed, options.cache_dir,
           options.denoise)
    if key not in _LAST_FEATURES:
        _LAST_FEATURES.clear()
        _LAST_FEATURES[key] = _read_features(dataset, options)
    return _LAST_FEATURES[key]


def _read_features(dataset: Dataset, options: ProbeOptions) -> CachedFeatures:
    probe = encoder_probe(options.backbone)
    with_frames = options.pooling == "attentive"
    parts = [
        cached_hidden_states(
            dataset,
            probe,
            cache_dir=options.cache_dir,
            with_frames=with_frames,
            copy=k,
            augment=_augment if k else None,
            seed=options.seed,
            denoise=options.denoise,
        ).with_format("numpy")
        for k in range(options.augment + 1)
    ]
    n = len(dataset)
    frames = None
    if with_frames:
        frames = [torch.from_numpy(np.asarray(f)) for part in parts for f in part["frames"]]
    return CachedFeatures(
        means=torch.from_numpy(np.concatenate([np.asarray(part["layer_means"]) for part in parts])).float(),
        frames=frames,
        clip=np.tile(np.arange(n), len(parts)),
        copy=np.repeat(np.arange(len(parts)), n),
    )


prepare = load_features  # what finetune/cv.py calls before timing its folds


# --- the head --------------------------------------------------------------------------------------


def probe_config(base: ProbeConfig, labels: Sequence[str], options: ProbeOptions) -> ProbeConfig:
    """The config of a new probe: the encoder's shape from ``base``, the head from ``options``."""
    if options.adapt and options.pooling != "mean":
        raise ValueError("speaker adaptation standardises per-layer means: it needs --pooling mean")
    return ProbeConfig(
        speaker_adaptation=options.adapt,
        backbone=base.backbone,
        backbone_type=base.backbone_type,
        backbone_embedded=base.backbone_embedded,
        num_layers=base.num_layers,
        hidden_size=base.hidden_size,
        pooling=options.pooling,
        layer_mix=options.layer_mix,
        first_layer=options.first_layer,
        head_hidden_size=options.head_hidden_size,
        dropout=options.dropout,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ser_denoise=options.denoise,
    )


def _standardise(head: ProbeHead, features: CachedFeatures, rows: np.ndarray) -> None:
    """Per-layer, per-dimension mean and spread of the training rows, stored in the head."""
    if features.frames is None:
        values = features.means[rows]
        mean, std = values.mean(0), values.std(0)
    else:
        total = torch.zeros_like(features.means[0], dtype=torch.float64)
        squares, count = torch.zeros_like(total), 0
        for row in rows:
            frames = features.frames[row].double()
            total += frames.sum(0)
            squares += (frames**2).sum(0)
            count += frames.shape[0]
        mean = total / count
        std = (squares / count - mean**2).clamp(min=0).sqrt()
    head.feature_mean.copy_(mean.float())
    head.feature_std.copy_(std.float().clamp(min=1e-5))


def _logits(head: ProbeHead, features: CachedFeatures, rows: np.ndarray) -> torch.Tensor:
    if features.frames is None:
        return head.forward_pooled(features.means[rows])
    clips = [features.frames[row] for row in rows]
    longest = max(clip.shape[0] for clip in clips)
    batch = torch.zeros(len(clips), longest, *clips[0].shape[1:])
    mask = torch.zeros(len(clips), longest, dtype=torch.bool)
    for i, clip in enumerate(clips):
        batch[i, : clip.shape[0]] = clip.float()
        mask[i, : clip.shape[0]] = True
    return head(batch, mask)


@torch.no_grad()
def predict_rows(head: ProbeHead, features: CachedFeatures, rows: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Predicted class index per feature row."""
    head.eval()
    chunks = [_logits(head, features, rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    return torch.cat(chunks).argmax(-1).numpy()


def _class_weights(y: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Inverse class frequency (classes absent from training weigh nothing): a balanced loss."""
    counts = torch.bincount(y, minlength=num_labels).float()
    return torch.where(counts > 0, len(y) / (num_labels * counts.clamp(min=1)), torch.zeros_like(counts))


def _uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """``ser.metrics``' UAR (mean recall over the classes present), inline: the evaluate module
    costs ~40 ms a call, which, once per epoch, was most of the training time."""
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def train_head(
    config: ProbeConfig,
    features: CachedFeatures,
    labels: np.ndarray,
    train_rows: np.ndarray,
    options: ProbeOptions,
    *,
    val_rows: np.ndarray | None = None,
    epochs: int | None = None,
) -> tuple[ProbeHead, dict[str, Any]]:
    """Train a head; with ``val_rows``, keep the epoch of best validation UAR (ties: lower loss).

    Returns the head and a log: ``best_epoch``, ``val_uar``, ``epochs_run``, ``losses``.
    """
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    head = ProbeHead(config)
    _standardise(head, features, train_rows)
    y = torch.as_tensor(labels[features.clip[train_rows]], dtype=torch.long)
    loss_fn = torch.nn.CrossEntropyLoss(weight=_class_weights(y, config.num_labels))
    optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    max_epochs = epochs or options.epochs
    log: dict[str, Any] = {"best_epoch": max_epochs, "val_uar": None, "losses": []}
    best_score, best_state = None, None
    for epoch in tqdm(range(1, max_epochs + 1), desc="training the head (epochs, early stopping)", leave=False):
        head.train()
        total = 0.0
        for batch in torch.randperm(len(train_rows), generator=generator).split(options.batch_size):
            loss = loss_fn(_logits(head, features, train_rows[batch.numpy()]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        log["losses"].append(total / len(train_rows))
        log["epochs_run"] = epoch
        if val_rows is None:
            continue
        y_val = labels[features.clip[val_rows]]
        with torch.no_grad():
            head.eval()
            val_logits = torch.cat(
                [_logits(head, features, val_rows[i : i + 64]) for i in range(0, len(val_rows), 64)]
            )
            val_loss = float(torch.nn.functional.cross_entropy(val_logits, torch.as_tensor(y_val)))
        score = (_uar(y_val, val_logits.argmax(-1).numpy()), -val_loss)
        if best_score is None or score > best_score:
            best_score, best_state = score, copy.deepcopy(head.state_dict())
            log.update(best_epoch=epoch, val_uar=score[0])
        elif epoch - log["best_epoch"] >= options.patience:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    return head.eval(), log


def row_weights(dataset: Dataset, features: CachedFeatures, rows: np.ndarray, balance: str) -> torch.Tensor:
    """Per-row loss weights (mean 1) that give every class, or every (corpus, class) pair, equal weight."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, not {balance!r}")
    clips = features.clip[rows]
    cells = np.asarray(dataset["label"])[clips].astype(str)
    if balance == "corpus":
        cells = np.char.add(np.asarray(dataset["corpus"])[clips].astype(str), np.char.add("/", cells))
    _, cell, counts = np.unique(cells, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[cell]
    return torch.as_tensor(weights * len(weights) / weights.sum(), dtype=torch.float32)


def train_head_lbfgs(
    config: ProbeConfig,
    features: CachedFeatures,
    labels: np.ndarray,
    train_rows: np.ndarray,
    options: ProbeOptions,
    weights: torch.Tensor | None = None,
) -> tuple[ProbeHead, dict[str, Any]]:
    """Fit the head to convergence by full-batch L-BFGS with an L2 penalty on its weights.

    For a linear head on mean-pooled layers this is class-balanced logistic regression (L2 of
    ``1 / (2 C N)`` matches scikit-learn's ``C``): convex, so no validation speakers and no epoch
    count are needed, and every training speaker is used. ``weights`` (one per row) replace the
    class weights, e.g. to balance corpora too (``row_weights``).
    """
    torch.manual_seed(options.seed)
    head = ProbeHead(config)
    _standardise(head, features, train_rows)
    head.eval()  # no dropout: L-BFGS needs a deterministic objective
    y = torch.as_tensor(labels[features.clip[train_rows]], dtype=torch.long)
    if weights is None:
        loss_fn = torch.nn.CrossEntropyLoss(weight=_class_weights(y, config.num_labels))
    else:
        def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return (torch.nn.functional.cross_entropy(logits, target, reduction="none") * weights).mean()
    penalised = [p for name, p in head.named_parameters() if name.endswith("weight")]
    optimizer = torch.optim.LBFGS(
        list(head.parameters()), lr=1, max_iter=options.epochs, history_size=20, line_search_fn="strong_wolfe"
    )
    losses: list[float] = []

    # Mean pooling: the training rows are gathered and standardised once (the statistics are fixed),
    # not on each of the hundreds of evaluations L-BFGS makes.
    with torch.no_grad():
        pooled = head.standardise(features.means[train_rows]) if features.frames is None else None

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        if pooled is not None:
            logits = head.forward_pooled(pooled, standardised=True)
        else:
            logits = _logits(head, features, train_rows)
        loss = loss_fn(logits, y) + options.l2 * sum((w**2).sum() for w in penalised)
        loss.backward()
        losses.append(loss.item())
        return loss

    optimizer.step(closure)
    return head.eval(), {"best_epoch": None, "val_uar": None, "losses": losses, "epochs_run": len(losses)}


def _validation_split(dataset: Dataset, train_idx: np.ndarray, options: ProbeOptions) -> tuple[np.ndarray, np.ndarray]:
    """Hold validation speakers out of the training speakers, for early stopping."""
    groups = speaker_groups(dataset)[train_idx]
    if len(set(groups)) < 2 or options.val_fraction <= 0:
        raise ValueError("early stopping needs at least two training speakers and val_fraction > 0")
    splitter = GroupShuffleSplit(n_splits=1, test_size=options.val_fraction, random_state=options.seed)
    fit, val = next(splitter.split(train_idx, groups=groups))
    check_speaker_disjoint(dataset, {"fit": train_idx[fit], "validation": train_idx[val]})
    return train_idx[fit], train_idx[val]


def fit_head(
    dataset: Dataset, train_idx: Sequence[int], features: CachedFeatures, options: ProbeOptions
) -> tuple[ProbeHead, ProbeConfig, dict[str, Any]]:
    """Early-stop on validation speakers, then (``refit``) retrain on every training speaker."""
    train_idx = np.asarray(train_idx, dtype=int)
    labels = np.asarray(dataset["label"])
    config = probe_config(encoder_probe(options.backbone).config, label_names(dataset), options)
    if options.optimizer == "lbfgs":
        rows = features.rows(train_idx, with_copies=True)
        weights = None if options.balance == "class" else row_weights(dataset, features, rows, options.balance)
        head, log = train_head_lbfgs(config, features, labels, rows, options, weights)
        return head, config, log
    fit_idx, val_idx = _validation_split(dataset, train_idx, options)
    head, log = train_head(
        config,
        features,
        labels,
        features.rows(fit_idx, with_copies=True),
        options,
        val_rows=features.rows(val_idx, with_copies=False),
    )
    log["validation_speakers"] = sorted(set(speaker_groups(dataset)[val_idx].tolist()))
    if options.refit:
        head, refit_log = train_head(
            config, features, labels, features.rows(train_idx, with_copies=True), options, epochs=log["best_epoch"]
        )
        log["refit_losses"] = refit_log["losses"]
    return head, config, log


def speaker_standardised(dataset: Dataset, features: CachedFeatures, train_rows: np.ndarray) -> tuple[CachedFeatures, np.ndarray]:
    """Every row standardised by its own speaker's statistics (``ser.adaptation``), and the prior
    spread taken from the training speakers. No labels are used, so test speakers may be included."""
    if features.frames is not None:
        raise ValueError("speaker adaptation works on per-layer means (mean pooling)")
    groups = speaker_groups(dataset)[features.clip]
    means = features.means.numpy()
    prior = within_speaker_std(means[train_rows], groups[train_rows])
    adapted = torch.from_numpy(standardise_groups(means, groups, prior))
    return CachedFeatures(means=adapted, frames=None, clip=features.clip, copy=features.copy), prior


def fit_speaker_head(
    dataset: Dataset, train_idx: Sequence[int], features: CachedFeatures, options: ProbeOptions
) -> tuple[SpeakerAdaptedHead, CachedFeatures]:
    """The speaker-adapted head, trained like the plain one on speaker-standardised features."""
    rows = features.rows(np.asarray(train_idx, dtype=int), with_copies=True)
    adapted, prior = speaker_standardised(dataset, features, rows)
    head, config, _ = fit_head(dataset, train_idx, adapted, options)
    module = SpeakerAdaptedHead(config)
    module.head.load_state_dict(head.state_dict())
    module.prior_std.copy_(torch.from_numpy(prior))
    return module.eval(), adapted


def run_fold(
    dataset: Dataset, train_idx: Sequence[int], test_idx: Sequence[int], options: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Train on ``train_idx``, predict ``test_idx``: (y_true, y_pred) as class indices; reuses the cache.

    With ``adapt``, the test clips are predicted by the speaker-adapted head, each test speaker
    standardised by the statistics of all their clips (no labels).
    """
    options = options_from(options)
    features = load_features(dataset, options)
    test_idx = np.asarray(test_idx, dtype=int)
    y_true = np.asarray(dataset["label"])[test_idx]
    if options.adapt:
        module, adapted = fit_speaker_head(dataset, train_idx, features, options)
        return y_true, predict_rows(module.head, adapted, adapted.rows(test_idx, with_copies=False))
    head, _, _ = fit_head(dataset, train_idx, features, options)
    return y_true, predict_rows(head, features, features.rows(test_idx, with_copies=False))


def build_probe(
    head: ProbeHead, config: ProbeConfig, backbone: str, speaker_head: SpeakerAdaptedHead | None = None
) -> ProbeForAudioClassification:
    """A complete, saveable probe: the trained head(s) on the shared frozen encoder."""
    encoder = encoder_probe(backbone)
    model = ProbeForAudioClassification(config, encoder=encoder.encoder, feature_extractor=encoder.feature_extractor)
    model.head.load_state_dict(head.state_dict())
    if speaker_head is not None:
        model.speaker_head.load_state_dict(speaker_head.state_dict())
    return model.eval()


def train_probe(dataset: Dataset, train_idx: Sequence[int] | None = None, options: Any = None) -> tuple[ProbeForAudioClassification, dict[str, Any]]:
    """A probe trained on ``train_idx`` (default: every clip), and its training log."""
    options = options_from(options)
    features = load_features(dataset, options)
    indices = np.arange(len(dataset)) if train_idx is None else np.asarray(train_idx, dtype=int)
    head, config, log = fit_head(dataset, indices, features, options)
    speaker_head = fit_speaker_head(dataset, indices, features, options)[0] if options.adapt else None
    return build_probe(head, config, options.backbone, speaker_head), log


# --- command line ---------------------------------------------------------------------------------


@dataclass
class ProbeCommand:
    """The data, evaluation and output of ``python -m finetune probe`` (cross-validation brings its own)."""

    corpus: str = field(metadata={
        "help": "corpus name known to ser.corpora (e.g. emodb), or several: emodb,nemo,emovo"})
    root: str = field(metadata={"help": "folder holding the corpus (several: one per corpus, comma-separated)"})
    out: str = field(metadata={"help": "checkpoint directory to write"})
    label_map: str | None = field(default=None, metadata={
        "help": 'merge/drop classes, e.g. "four-class" (several corpora: "harmonised" by default)'})
    eval: str = field(default="split", metadata={
        "help": "split: train on 80%% of speakers, test on the rest; loso: leave-one-speaker-out, then train on all",
        "choices": ("split", "loso")})
    test_size: float = field(default=0.2, metadata={"help": "share of speakers held out (--eval split)"})


def main(argv: Sequence[str], *, prog: str = "python -m finetune probe", description: str | None = None) -> int:
    """Parse the options (or a saved run's ``--config``), record them in OUT, train the probe."""
    args, options = parse_command((ProbeCommand, ProbeOptions), argv, prog=prog, description=description)
    save_config(args.out, (args, options))
    return run(args, options)


def run(args: ProbeCommand, options: ProbeOptions) -> int:
    """Evaluate speaker-independently, train the final probe, write checkpoint + metrics + card."""
    from finetune.card import version_id
    from finetune.cv import cross_validate
    from finetune.probe_card import write_probe_run
    from ser.corpora import load_corpora

    out = Path(args.out)
    dataset = load_corpora(args.corpus, args.root, label_map=args.label_map)
    names = label_names(dataset)
    started = time.perf_counter()
    load_features(dataset, options)
    extract_seconds = time.perf_counter() - started
    if args.eval == "loso":
        cv = cross_validate(dataset, "probe", loso_folds(dataset), options)
        metrics, train_idx = cv.pooled, np.arange(len(dataset))
        evaluation = {"protocol": "leave-one-speaker-out",
                      **{k: v for k, v in cv.to_dict(predictions=False).items() if k != "pooled"}}
    else:
        split = train_val_test_split(dataset, val=0.0, test=args.test_size, seed=options.seed)
        train_idx = split.train
        y_true, y_pred = run_fold(dataset, split.train, split.test, options)
        metrics = compute_metrics(y_true.tolist(), y_pred.tolist(), names)
        groups = speaker_groups(dataset)
        evaluation = {"protocol": "speaker-independent hold-out", "test_speakers": sorted(set(groups[split.test].tolist()))}
    started = time.perf_counter()
    model, log = train_probe(dataset, train_idx, options)
    train_seconds = time.perf_counter() - started
    model.config.ser_model_version = version_id(f"probe-{args.corpus.replace(',', '+')}")
    model.save_pretrained(out)
    summary = {
        "model_version": model.config.ser_model_version,
        "corpus": args.corpus,
        "labels": names,
        "n_clips": len(dataset),
        "n_train": len(train_idx),
        "speakers": sorted(set(speaker_groups(dataset).tolist())),
        "evaluation": evaluation,
        "options": asdict(options),
        "training": {k: v for k, v in log.items() if "losses" not in k} | {"final_loss": log.get("refit_losses", log["losses"])[-1]},
        "layer_weights": model.head.layer_weights().tolist(),
        "extract_seconds": round(extract_seconds, 2),
        "train_seconds": round(train_seconds, 2),
    }
    write_probe_run(out, metrics, summary, title=f"Probe on {args.corpus}: {evaluation['protocol']}")
    print(
        f"{args.corpus} probe ({options.backbone}, {options.pooling} pooling): UAR {metrics['uar']:.3f}, "
        f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} ({evaluation['protocol']}) -> {out}"
    )
    return 0
