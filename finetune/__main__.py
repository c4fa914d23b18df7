"""``python -m finetune COMMAND``: download and describe corpora, train, cross-validate, retrain, and
rebuild the embedded default model."""

import sys

from ser.cli import dispatch

COMMANDS = {
    "download": ("finetune.download", "fetch a corpus from its official source, verified (prints its licence)"),
    "describe": ("finetune.describe", "counts per class and speaker, durations, for a corpus"),
    "train": ("finetune.train", "fine-tune a transformer or train a light model (Trainer)"),
    "probe": ("finetune.probe", "frozen-encoder probe: cache hidden states, train a light head"),
    "classical": ("finetune.classical", "MFCC/eGeMAPS features with SVM, decision tree or MLP"),
    "cv": ("finetune.cv", "k-fold or leave-one-speaker-out cross-validation"),
    "retrain": ("finetune.retrain", "retrain from the annotation store's corrections"),
    "make-default": ("finetune.make_default", "rebuild the embedded default model (ser/default_model)"),
    "tune": ("finetune.tune", "Optuna search of a method's options on speaker folds (SQLite, resumable)"),
    "distill": ("finetune.distill", "knowledge distillation: a light student on a teacher's soft labels"),
    "prune": ("finetune.prune", "structured pruning of a Whisper probe's attention heads / FFN channels"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m finetune", "Train speech emotion models.", COMMANDS))
