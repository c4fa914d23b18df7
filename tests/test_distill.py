"""Knowledge distillation (finetune/distill.py): the loss, a short training run, the saved student."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.distill import UNLABELLED, DistillOptions, distillation_loss, train_light_student
from tests.tiny_models import LABELS, save_tiny_wav2vec2

RATE = 16000


def test_loss_is_hintons_mix_of_soft_kl_and_hard_ce() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 4), torch.randn(4, 4)
    labels = torch.tensor([0, 1, UNLABELLED, 3])
    t = 3.0
    kl = torch.nn.functional.kl_div(torch.log_softmax(student / t, -1), torch.softmax(teacher / t, -1), reduction="batchmean")
    ce = torch.nn.functional.cross_entropy(student[[0, 1, 3]], labels[[0, 1, 3]])  # the unlabelled row has no CE
    mixed = distillation_loss(student, teacher, labels, temperature=t, alpha=0.25)
    assert math.isclose(float(mixed), float(0.25 * t * t * kl + 0.75 * ce), rel_tol=1e-5)
    assert math.isclose(float(distillation_loss(student, teacher, labels, temperature=t, alpha=0.0)), float(ce), rel_tol=1e-5)
    assert float(distillation_loss(teacher, teacher, labels, temperature=t, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_falls_on_a_tiny_teacher_and_student() -> None:
    """A light CNN learns a fixed tiny teacher's soft labels (unlabelled rows included) in a few epochs."""
    generator = torch.Generator().manual_seed(0)
    frames = [torch.randn(40, 64, generator=generator) + (i % 4) for i in range(24)]  # class shifts the level
    teacher = torch.nn.functional.one_hot(torch.arange(24) % 4, 4).float() * 3 + 0.1 * torch.randn(24, 4, generator=generator)
    labels = np.where(np.arange(24) < 12, np.arange(24) % 4, UNLABELLED)
    losses: list[float] = []
    options = DistillOptions(channels=(4, 8), epochs=8, batch_size=8, lr=1e-2, temperature=2.0, alpha=0.8)
    train_light_student(frames, labels, teacher, LABELS, options, log=losses)
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0]


def _tiny_corpus(root, clips_per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for c, label in enumerate(LABELS):
        (root / label).mkdir(parents=True)
        for i in range(clips_per_class):
            t = np.arange(int(0.6 * RATE)) / RATE
            wave = 0.3 * np.sin(2 * np.pi * (150 + 80 * c) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / label / f"spk{i}_{label}.wav", wave.astype(np.float32), RATE)


def test_distill_command_saves_a_student_that_predictor_loads(tmp_path) -> None:
    from finetune.__main__ import COMMANDS
    from ser.cli import dispatch
    from ser.model import Predictor

    teacher = save_tiny_wav2vec2(tmp_path / "teacher")
    _tiny_corpus(tmp_path / "corpus")
    (tmp_path / "extra").mkdir()
    tone = 0.2 * np.sin(2 * np.pi * 220 * np.arange(RATE // 2) / RATE)
    sf.write(tmp_path / "extra" / "unlabelled.wav", tone.astype(np.float32), RATE)
    out = tmp_path / "student"
    rc = dispatch("python -m finetune", "", COMMANDS, [
        "distill", "--teacher", str(teacher), "--corpus", "folder", "--root", str(tmp_path / "corpus"),
        "--unlabelled", str(tmp_path / "extra"), "--out", str(out), "--epochs", "2", "--augment", "1",
        "--channels", "4,8", "--batch-size", "8",
    ])
    assert rc == 0
    student = Predictor.from_pretrained(out, runtime="eager")
    assert student.model.config.model_type == "ser-light-cnn" and student.model.config.channels == [4, 8]
    probs = student.predict((0.2 * np.sin(np.arange(RATE) / 10)).astype(np.float32))
    assert set(probs) == set(LABELS) and math.isclose(sum(probs.values()), 1.0, rel_tol=1e-5)
    metrics = (out / "metrics.json").read_text()
    assert '"unlabelled": 1' in metrics and '"augmented": 12' in metrics


def test_unlabelled_clips_come_from_several_folders_spread_over_their_files(tmp_path):
    from finetune.distill import unlabelled_clips

    for folder, count in (("a", 6), ("b", 4)):
        (tmp_path / folder).mkdir()
        for i in range(count):  # each file's length names it
            n = RATE // 10 * (i + 1)
            sf.write(tmp_path / folder / f"{i}.wav", (0.2 * np.sin(np.arange(n) / 5)).astype(np.float32), RATE)
    both = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    assert len(unlabelled_clips(both)) == 10
    spread = unlabelled_clips(both, limit=3)  # the first, a middle and the last of the 10 sorted files
    assert [len(w) // (RATE // 10) for w in spread] == [1, 5, 4]
