"""``python -m finetune train``: fine-tune a transformer backbone or train a light model with ``Trainer``.

One path for every model the project knows: any ``AutoModelForAudioClassification`` checkpoint
(wav2vec2, HuBERT, WavLM, DistilHuBERT, Whisper's encoder, a model this project trained before)
or the seed article's light CNN/BiLSTM trained from scratch. The split is speaker-independent
(``finetune.data``), early stopping watches validation UAR (accuracy rewards predicting the big
classes), the loss is class-weighted, and the result is a checkpoint directory that
``ser.model.Predictor`` loads, with its metrics and a model card.

Multi-GPU needs no change: ``accelerate launch -m finetune train ...`` or ``torchrun -m finetune
train ...`` run this same code under ``Trainer``'s DDP (see docs/training.md).
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import get_worker_info
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    EarlyStoppingCallback,
    PreTrainedModel,
    PrinterCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import ser.light_models  # noqa: F401  (registers the light models with the Auto classes)
from finetune.augment import RandomAugment
from finetune.options import check_choices, config_dict, from_mapping, parse_command, save_config
from ser.audio import SAMPLE_RATE
from ser.backbones import family, resolve_backbone
from ser.denoise import METHODS as DENOISE_METHODS
from ser.light_models import FEATURE_TYPES, LIGHT_MODELS, create_light_model

logger = logging.getLogger(__name__)

HEAD_LR = {"light": 1e-3, "transformer": 5e-4}
SUMMARY_KEYS = ("uar", "accuracy", "macro_f1")


def _trainer_default(name: str, default: Any, why: str) -> Any:
    """A ``TrainingArguments`` field with this project's default; its help says why."""
    help_text = TrainingArguments.__dataclass_fields__[name].metadata.get("help", "")
    return field(default=default, metadata={"help": f"{help_text} Here: {why}."})


@dataclass
class TrainOptions(TrainingArguments):
    """A training run's options besides its data: ``TrainingArguments`` (every ``Trainer`` flag, under
    its own name) plus what this project adds. ``fit`` fixes per-epoch evaluation and checkpoints,
    the best epoch by validation UAR and the output folder (``OUT/checkpoints``)."""

    num_train_epochs: float = _trainer_default("num_train_epochs", 20.0, "20, early stopping decides")
    learning_rate: float | None = _trainer_default(
        "learning_rate", None, "the head's (all of a light model); default 1e-3 light models, 5e-4 transformer head")
    weight_decay: float = _trainer_default("weight_decay", 0.01, "0.01")
    warmup_steps: float = _trainer_default("warmup_steps", 0.1, "0.1 of the training steps")
    logging_steps: float = _trainer_default("logging_steps", 10, "10")
    seed: int = _trainer_default("seed", 0, "0; it also fixes the speaker split, crops and augmentation")
    save_total_limit: int | None = _trainer_default("save_total_limit", 2, "2")

    model: str = field(default="light-cnn", metadata={
        "help": "hub id, checkpoint dir, whisper-tiny.en-offline, light-cnn or light-bilstm"})
    features: str | None = field(default=None, metadata={
        "help": "light models' input features (default: CNN logmel, BiLSTM mfcc)", "choices": FEATURE_TYPES})
    frame_stride: int = field(default=1, metadata={
        "help": "light-bilstm: average this many 10 ms frames per LSTM step (faster on a CPU)"})
    freeze_feature_encoder: bool = field(default=True, metadata={
        "help": "freeze the CNN waveform encoder of wav2vec2-style models (--no-freeze-feature-encoder trains it)"})
    freeze_encoder: bool = field(default=False, metadata={"help": "train the classifier head only"})
    weighted_layer_sum: bool = field(default=False, metadata={"help": "learn a weighted sum of encoder layers"})
    encoder_lr: float = field(default=3e-5, metadata={"help": "the pretrained encoder's learning rate"})
    class_weights: bool = field(default=True, metadata={
        "help": "class-balanced cross-entropy (--no-class-weights: plain)"})
    patience: int = field(default=5, metadata={"help": "epochs without validation UAR gain before stopping"})
    max_duration: float = field(default=8.0, metadata={"help": "seconds; longer training clips are randomly cropped"})
    max_eval_duration: float = field(default=30.0, metadata={"help": "seconds of each clip that evaluation sees"})
    augment: bool = field(default=False, metadata={"help": "noise/speed/pitch/gain augmentation on the fly"})
    denoise: str | None = field(default=None, metadata={
        "help": "denoise every training and evaluation clip (after augmentation); the checkpoint records it and "
        "Predictor denoises every clip it serves the same way", "choices": DENOISE_METHODS})
    val: float = field(default=0.1, metadata={"help": "fraction of the (training) speakers for validation"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in OUT/checkpoints"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep OUT/checkpoints after training"})
    model_dir: str | None = field(default=None, metadata={
        "help": "cross-validation: also save each fold's model here (benchmarks size it)"})

    def __post_init__(self) -> None:
        check_choices(self)
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be at least 1, not {self.frame_stride}")
        if self.learning_rate is None:
            self.learning_rate = HEAD_LR["light" if self.model in LIGHT_MODELS else "transformer"]
        super().__post_init__()


OPTIONS = TrainOptions  # what run_fold takes; ``finetune cv`` parses the options after ``--`` into it


def options_from(options: TrainOptions | Mapping[str, Any]) -> TrainOptions:
    """TrainOptions as given, or from a mapping (``finetune.cv``, benchmarks); extra keys are ignored."""
    return options if isinstance(options, TrainOptions) else from_mapping(TrainOptions, options)


# --- data -------------------------------------------------------------------------------------------


class WaveformCache:
    """Decode each clip once per process: epochs (and cross-validation folds) re-read the same audio."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._waves: dict[int, np.ndarray] = {}

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._waves:
            from ser.corpora import waveform

            self._waves[index] = waveform(self.dataset[int(index)])
        return self._waves[index]


_CACHES: dict[str, WaveformCache] = {}


def waveform_cache(dataset: Any) -> WaveformCache:
    """The process-wide cache of one dataset (keyed by its fingerprint), so folds share decoded audio."""
    key = getattr(dataset, "_fingerprint", None) or str(id(dataset))
    if key not in _CACHES:
        _CACHES.clear()  # one corpus at a time: the memory goes back when another one arrives
        _CACHES[key] = WaveformCache(dataset)
    return _CACHES[key]


def prepare(dataset: Any, options: Any = None) -> None:
    """Decode every clip once, before timing (``benchmarks/accuracy.py`` calls this)."""
    cache = waveform_cache(dataset)
    for index in range(len(dataset)):
        cache[index]


class ClipDataset(TorchDataset):
    """Rows of a corpus dataset as ``{"waveform", "labels"}``, optionally cropped and augmented.

    Randomness (crop position, augmentation) is seeded; each DataLoader worker reseeds from its own
    torch-given seed so workers and epochs do not repeat each other's perturbations.
    """

    def __init__(
        self,
        waves: WaveformCache,
        labels: Sequence[int],
        indices: Sequence[int],
        *,
        max_duration_s: float,
        train: bool,
        augment: bool = False,
        seed: int = 0,
        denoise: str | None = None,
    ) -> None:
        self.waves = waves
        self.denoise = denoise
        self._denoised: dict[int, np.ndarray] = {}  # whole clips denoised once, when not augmented
        self.labels = [int(label) for label in labels]
        self.indices = [int(i) for i in indices]
        self.max_samples = int(max_duration_s * SAMPLE_RATE)
        self.train = train
        self.augment = RandomAugment(seed=seed) if augment else None
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._rng_key: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        wave = self.waves[index]
        if self.train:
            rng = self._worker_rng()
            if self.augment is not None:
                self.augment.rng = rng
                wave = self._denoise(self.augment(wave))  # served audio is denoised noisy audio: so are the copies
            else:
                wave = self._denoised_clip(index)
            wave = _crop(wave, self.max_samples, rng)
        else:
            wave = self._denoised_clip(index)[: self.max_samples]
        return {"waveform": wave, "labels": self.labels[index]}

    def _denoise(self, wave: np.ndarray) -> np.ndarray:
        if not self.denoise:
            return wave
        from ser.denoise import denoise

        return denoise(wave, self.denoise)

    def _denoised_clip(self, index: int) -> np.ndarray:
        """The whole clip as the model hears it (denoised before cropping, as ``Predictor`` does)."""
        if not self.denoise:
            return self.waves[index]
        if index not in self._denoised:
            self._denoised[index] = self._denoise(self.waves[index])
        return self._denoised[index]

    def _worker_rng(self) -> np.random.Generator:
        info = get_worker_info()
        key = None if info is None else int(info.seed)
        if key != self._rng_key:
            self._rng = np.random.default_rng(self.seed if key is None else key)
            self._rng_key = key
        return self._rng


def _crop(wave: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    if len(wave) <= max_samples:
        return wave
    start = int(rng.integers(0, len(wave) - max_samples + 1))
    return wave[start : start + max_samples]


@dataclass
class AudioCollator:
    """Run the feature extractor on a batch of waveforms, padding them, and keep what the model takes."""

    feature_extractor: Any
    input_names: frozenset[str]
    padding: str = "longest"  # the model family's rule (``ser.backbones.family``): Whisper's classifier needs 30 s

    @classmethod
    def for_model(cls, model: PreTrainedModel, feature_extractor: Any) -> AudioCollator:
        """The collator ``model`` needs: its forward's inputs, its family's padding rule."""
        return cls(
            feature_extractor,
            frozenset(inspect.signature(model.forward).parameters),
            family(model.config.model_type).classifier_padding,
        )

    @cached_property  # asked once per batch; the extractor never changes
    def features_on_gpu(self) -> bool:
        """Extractors that take ``device`` (Whisper's, the light models') compute spectrograms there."""
        return "device" in inspect.signature(self.feature_extractor.__call__).parameters

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        options: dict[str, Any] = {"padding": self.padding}
        if self.features_on_gpu and torch.cuda.is_available() and get_worker_info() is None:
            options["device"] = "cuda"  # spectrograms on the CPU would keep the GPU waiting
        batch = self.feature_extractor(
            [item["waveform"] for item in items], sampling_rate=SAMPLE_RATE, return_tensors="pt", **options
        )
        inputs = {key: value for key, value in batch.items() if key in self.input_names}
        inputs["labels"] = torch.tensor([item["labels"] for item in items], dtype=torch.long)
        return inputs


# --- model ------------------------------------------------------------------------------------------


def build_model(options: TrainOptions, labels: Sequence[str]) -> tuple[PreTrainedModel, Any]:
    """The model to train and its feature extractor, with a classifier for ``labels``."""
    if options.model in LIGHT_MODELS:
        extra = {"frame_stride": options.frame_stride} if options.model == "light-bilstm" else {}
        return create_light_model(options.model, labels, feature_type=options.features, **extra)
    source = resolve_backbone(options.model)
    feature_extractor = AutoFeatureExtractor.from_pretrained(source)
    extra = {"use_weighted_layer_sum": True} if options.weighted_layer_sum else {}
    model = AutoModelForAudioClassification.from_pretrained(
        source,
        id2label={i: str(label) for i, label in enumerate(labels)},
        label2id={str(label): i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,  # a new classifier when the label set differs
        **extra,
    )
    if options.freeze_encoder and encoder_module(model) is not None:
        encoder_module(model).requires_grad_(False)
    elif options.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()  # the CNN waveform encoder: pretrained features, little to gain
    return model, feature_extractor


def encoder_module(model: PreTrainedModel) -> torch.nn.Module | None:
    """The pretrained body of a classifier (``wav2vec2``, ``hubert``, Whisper's ``encoder``), or None."""
    base = model.base_model
    if base is not model:
        return base
    encoder = getattr(model, "encoder", None)
    return encoder if isinstance(encoder, torch.nn.Module) else None


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """n / (classes * count): each class weighs the same in the loss (absent classes get 1)."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


class SERTrainer(Trainer):
    """``Trainer`` with class-weighted cross-entropy and separate encoder/head learning rates."""

    def __init__(self, *args: Any, class_weights: torch.Tensor | None = None, encoder_lr: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.encoder_lr = encoder_lr
        self.loss_is_scaled_for_ga = False  # a per-batch mean: Trainer divides by accumulation steps

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs["logits"].float()
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        encoder = encoder_module(opt_model) if isinstance(opt_model, PreTrainedModel) else None
        encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups.setdefault((id(param) in encoder_ids, name in decay), []).append(param)
        head_lr = self.args.learning_rate
        param_groups = [
            {
                "params": params,
                "lr": (self.encoder_lr or head_lr) if in_encoder else head_lr,
                "weight_decay": self.args.weight_decay if decays else 0.0,
            }
            for (in_encoder, decays), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer


def _trainer_metrics(labels: Sequence[str]):
    from ser.metrics import compute_metrics

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        scores = compute_metrics(prediction.label_ids.tolist(), logits.argmax(-1).tolist(), labels)
        return {key: scores[key] for key in SUMMARY_KEYS}

    return compute


# --- training ---------------------------------------------------------------------------------------


@dataclass
class FitResult:
    trainer: SERTrainer
    model: PreTrainedModel
    feature_extractor: Any
    labels: list[str]
    waves: WaveformCache
    best_val: dict[str, float] | None


def fit(
    dataset: Any, train_idx: Sequence[int], val_idx: Sequence[int], options: TrainOptions, work_dir: str | Path
) -> FitResult:
    """Train on ``train_idx``, early-stopping on ``val_idx`` (if any); checkpoints go to ``work_dir``."""
    from ser.corpora import label_names

    labels = label_names(dataset)
    all_labels = list(dataset["label"])
    set_seed(options.seed)
    model, feature_extractor = build_model(options, labels)
    waves = waveform_cache(dataset)
    train_set = ClipDataset(waves, all_labels, train_idx, max_duration_s=options.max_duration, train=True,
                            augment=options.augment, seed=options.seed, denoise=options.denoise)
    val_set = ClipDataset(waves, all_labels, val_idx, max_duration_s=options.max_eval_duration, train=False,
                          denoise=options.denoise)
    has_val = len(val_set) > 0
    args = replace(  # what early stopping on validation UAR and our batches of dicts need
        options,
        output_dir=str(work_dir),
        eval_strategy="epoch" if has_val else "no",
        save_strategy="epoch",
        load_best_model_at_end=has_val,
        metric_for_best_model="uar" if has_val else None,
        greater_is_better=True,
        remove_unused_columns=False,
        dataloader_pin_memory=options.dataloader_pin_memory and torch.cuda.is_available(),
    )
    trainer = SERTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set if has_val else None,
        data_collator=AudioCollator.for_model(model, feature_extractor),
        processing_class=feature_extractor,
        compute_metrics=_trainer_metrics(labels),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience)] if has_val else [],
        class_weights=balanced_class_weights([all_labels[i] for i in train_idx], len(labels))
        if options.class_weights else None,
        encoder_lr=options.encoder_lr,
    )
    if options.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # without bars Trainer prints every log dict instead
    last = get_last_checkpoint(str(work_dir)) if options.resume and Path(work_dir).is_dir() else None
    if options.resume and last is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", work_dir)
    trainer.train(resume_from_checkpoint=last)
    trainer.model.config.ser_denoise = options.denoise  # Predictor serves it the same way (ser.model.trained_denoising)
    best_val = None
    if has_val:
        scores = trainer.evaluate()
        best_val = {key: float(scores[f"eval_{key}"]) for key in SUMMARY_KEYS}
    return FitResult(trainer, trainer.model, feature_extractor, labels, waves, best_val)


def predict_indices(result: FitResult, dataset: Any, indices: Sequence[int], options: TrainOptions) -> np.ndarray:
    """Predicted class indices for rows ``indices`` with the trained (best) model."""
    all_labels = list(dataset["label"])
    clips = ClipDataset(result.waves, all_labels, indices, max_duration_s=options.max_eval_duration, train=False,
                        denoise=options.denoise)
    logits = result.trainer.predict(clips).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return np.asarray(logits).argmax(-1)


def train_and_evaluate(
    dataset: Any, split: Any, options: TrainOptions, out: str | Path, *, corpus: str = "corpus"
) -> dict[str, Any]:
    """Train on ``split.train`` (early stopping on ``split.val``), test on ``split.test``, write ``out``.

    ``out`` receives the best model, its feature extractor, metrics.json, report + plots and README.md.
    Returns the test metrics plus ``val`` (best validation scores), ``history`` (Trainer's log) and
    ``predictions`` (class indices for ``split.test``).
    """
    from finetune.card import corpus_licence, version_id, write_run_outputs
    from finetune.data import speaker_groups
    from ser.metrics import compute_metrics

    out = Path(out)
    work_dir = out / "checkpoints"
    result = fit(dataset, split.train, split.val, options, work_dir)
    y_pred = predict_indices(result, dataset, split.test, options)
    y_true = np.asarray(dataset["label"])[np.asarray(split.test, dtype=int)]
    metrics = compute_metrics(y_true.tolist(), y_pred.tolist(), result.labels)
    version = version_id(out.name)
    result.model.config.ser_model_version = version
    result.trainer.save_model(str(out))  # every rank calls it (FSDP/DeepSpeed gather); the main one writes
    if result.trainer.is_world_process_zero():  # save_model also wrote the feature extractor
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the options go to metrics.json
        groups = speaker_groups(dataset)
        speakers = {part: sorted(set(groups[np.asarray(getattr(split, part), dtype=int)].tolist()))
                    for part in ("train", "val", "test")}
        write_run_outputs(
            out,
            metrics,
            model_name=options.model,
            data_desc=f"{corpus}: {len(dataset)} clips, {len(set(groups.tolist()))} speakers, "
            f"classes {', '.join(result.labels)}.",
            split_desc=(
                "Speaker-independent hold-out: "
                f"train speakers {', '.join(speakers['train'])} ({len(split.train)} clips); "
                + (f"validation speakers {', '.join(speakers['val'])} ({len(split.val)} clips, best epoch by UAR); "
                   if len(split.val) else "no validation split (all epochs trained); ")
                + f"test speakers {', '.join(speakers['test'])} ({len(split.test)} clips)."
            ),
            licence=corpus_licence(corpus),
            extra={"val": result.best_val, "speakers": speakers, "options": config_dict([options]),
                   "history": result.trainer.state.log_history},
            version=version,
        )
        if not options.keep_checkpoints:
            shutil.rmtree(work_dir, ignore_errors=True)
    return {**metrics, "val": result.best_val, "history": result.trainer.state.log_history,
            "predictions": y_pred.tolist()}


def run_fold(dataset: Any, train_idx: Sequence[int], test_idx: Sequence[int], options: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validation fold (``finetune.cv``): (y_true, y_pred) class indices for ``test_idx``.

    A validation part for early stopping is carved out of the training speakers (``options.val``
    of them), so the test speakers never steer training.
    """
    from finetune.data import train_val_test_split

    options = options_from(options)
    train_idx = np.asarray(train_idx, dtype=int)
    test_idx = np.asarray(test_idx, dtype=int)
    val_idx = np.array([], dtype=int)
    if options.val > 0:
        inner = train_val_test_split(dataset.select(train_idx), val=0.0, test=options.val, seed=options.seed)
        train_idx, val_idx = train_idx[inner.train], train_idx[inner.test]
    with tempfile.TemporaryDirectory(prefix="ser-fold-") as work_dir:
        result = fit(dataset, train_idx, val_idx, options, work_dir)
        y_pred = predict_indices(result, dataset, test_idx, options)
    if options.model_dir and result.trainer.is_world_process_zero():
        result.model.save_pretrained(options.model_dir)
        result.feature_extractor.save_pretrained(options.model_dir)
    y_true = np.asarray(dataset["label"])[test_idx]
    return y_true, y_pred


# --- command line ---------------------------------------------------------------------------------


@dataclass
class TrainCommand:
    """The data and output of ``python -m finetune train`` (cross-validation brings its own)."""

    corpus: str = field(metadata={"help": "corpus name known to ser.corpora (emodb, ravdess, folder, ...)"})
    root: str = field(metadata={"help": "folder (or hub id) holding the corpus"})
    out: str = field(metadata={"help": "model directory to write"})
    label_map: str | None = field(default=None, metadata={"help": 'merge/drop classes, e.g. "four-class"'})
    test: float = field(default=0.2, metadata={"help": "fraction of speakers for testing"})


def main(argv: Sequence[str], *, prog: str = "python -m finetune train", description: str | None = None) -> int:
    """Parse the options (or a saved run's ``--config``), record them in OUT, train."""
    args, options = parse_command((TrainCommand, TrainOptions), argv, prog=prog, description=description)
    save_config(args.out, (args, options))
    return run(args, options)


def run(args: TrainCommand, options: TrainOptions) -> int:
    """Load the corpus, split by speaker, train, test, write the model directory."""
    from finetune.data import train_val_test_split
    from ser.corpora import load_corpus

    dataset = load_corpus(args.corpus, args.root, label_map=args.label_map)
    split = train_val_test_split(dataset, val=options.val, test=args.test, seed=options.seed)
    metrics = train_and_evaluate(dataset, split, options, args.out, corpus=args.corpus)
    print(
        f"{args.corpus} {options.model}: test UAR {metrics['uar']:.3f}, accuracy {metrics['accuracy']:.3f}, "
        f"macro-F1 {metrics['macro_f1']:.3f} on {metrics['n']} clips of held-out speakers -> {args.out}"
    )
    return 0
